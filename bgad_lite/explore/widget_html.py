"""Small pieces of the margin explorer (:mod:`bgad_lite.explore.explorer`): view sizes, inline-styled
HTML (tables, text) and the message shown when the kernel behind the widget is gone."""

from __future__ import annotations

import numpy as np


def percent(x: float) -> str:
    return "–" if not np.isfinite(x) else f"{100 * x:.1f}%"


def html_table(header: list[str], rows: list[list[str]], colors: list[str | None] | None = None) -> str:
    """A compact HTML table with inline styles only (no ``<style>``: every frontend keeps them)."""
    cell = "padding:1px 7px; text-align:right; white-space:nowrap"
    head = "".join(f"<th style='{cell}; border-bottom:1px solid #999'>{h}</th>" for h in header)
    body = ""
    for k, row in enumerate(rows):
        color = (colors or [None] * len(rows))[k]
        first = f"<td style='{cell}; text-align:left{'; color:' + color if color else ''}'>{row[0]}</td>"
        body += "<tr>" + first + "".join(f"<td style='{cell}'>{v}</td>" for v in row[1:]) + "</tr>"
    return f"<table style='border-collapse:collapse; font-size:12px; line-height:1.3'><tr>{head}</tr>{body}</table>"


def text_block(inner: str) -> str:
    # Jupyter's widget CSS gives HTML widgets the line height of a control (28 px): reset it.
    return f"<div style='font-size:12px; line-height:1.35'>{inner}</div>"


#: Pixel sizes of the views (PNG drawn at exactly this size and shown 1:1, never stretched).
#: Two columns of COLUMN px: with the prompt, the explorer fits JupyterLab's notebook at 1366 px
#: with the file browser open (output area ~930 px): 914 x 726 px measured (tests/test_browser.py).
COLUMN = 450
VIEW_PX = {"hist": (COLUMN, 240), "epoch": (COLUMN, 240), "scores": (COLUMN, 210), "overlay": (COLUMN, 210)}
#: Shown only while the widget frontend marks the explorer as disconnected from its kernel (the
#: class ``jupyter-widgets-disconnected``, set by ipywidgets 7 and 8 in JupyterLab when the kernel
#: restarts or dies): the controls still move, but nothing can redraw. The frontend's own marks,
#: one icon per control, would push the controls out of line: the explorer hides them.
STALE_KERNEL_CSS = (
    "<style>.bgad-explorer .bgad-stale-msg {display: none}"
    ".bgad-explorer.jupyter-widgets-disconnected .bgad-stale-msg {display: block; color: #b00; font-weight: bold;"
    " border: 1px solid #b00; padding: 2px 6px; margin: 2px 0}"
    ".bgad-explorer.jupyter-widgets-disconnected::before, .bgad-explorer .jupyter-widgets-disconnected::before"
    " {content: none; display: none}</style>")
STALE_KERNEL_MSG = ("The kernel behind this explorer is gone (restarted or shut down): moving a control redraws "
                    "nothing. Run the notebook again: Run → Run All Cells.")
STALE_KERNEL_HINT = ("Nothing redraws when you move a control? Then the kernel behind this explorer is gone "
                     "(restarted): Run → Run All Cells.")
