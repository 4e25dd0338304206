"""Markdown tables: the one table writer of the library, the notebooks and the benchmarks."""

from __future__ import annotations


def markdown_table(rows: list[list], header: list[str], floatfmt: str = ".3f") -> str:
    """A markdown table of ``rows`` under ``header``; floats formatted with ``floatfmt``, anything
    else with ``str`` (show it in a notebook with ``IPython.display.Markdown``)."""
    def cell(v):
        return format(v, floatfmt) if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(str(h) for h in header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        if len(row) != len(header):
            raise ValueError(f"a row has {len(row)} cells, the header {len(header)}: {row}")
        lines.append("| " + " | ".join(cell(v) for v in row) + " |")
    return "\n".join(lines)
