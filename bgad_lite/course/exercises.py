"""Exercises of the notebook course: checks that never raise, and concept questions.

Every exercise of ``notebooks/`` is a function that the student completes (its
body sits between ``### BEGIN SOLUTION`` and ``### END SOLUTION``; the student
copies replace it by ``raise NotImplementedError()``), followed by a cell that
calls :func:`check`. A check compares the student's result with a reference —
the library, or a hand-computed case — and prints one line:

    [exercise 02.1] pass — log_likelihood: max |difference| 0.00e+00
    [exercise 02.1] FAIL — log_likelihood: shape (5,) expected, got (5, 1)
    [exercise 02.1] not attempted — the reference is used from here on

It never raises: papermill stops a notebook at the first error, and both the
solution and the student copies must run to the end (tests, CI). The cells after
a check always go on with the library's version, whatever the student wrote.

:func:`show_solution` prints an exercise's solution once its check has run (a student who failed sees it).

:func:`quiz` shows a multiple-choice concept question with immediate feedback,
with the part of ipywidgets that 7.7 (Colab) and 8 share: ``HTML``, ``Button``,
``HBox``, ``VBox``, ``Layout`` and ``Button.on_click``; its answer is kept in
:mod:`bgad_lite.course.answers`, not in the notebook.
"""

from __future__ import annotations

import copy
from typing import Any, Callable

import ipywidgets as W
import numpy as np
import torch
from IPython.display import display

from ..config import BGADError
from ..train import train_flows
from .solutions import SOLUTIONS

#: The three outcomes of a check, as printed.
PASS, FAIL, NOT_ATTEMPTED = "pass", "FAIL", "not attempted"

#: Every check of this kernel, in order: (exercise id, outcome). The tests read the printed lines instead.
RESULTS: list[tuple[str, str]] = []


def _report(exercise: str, outcome: str, detail: str) -> str:
    line = f"[exercise {exercise}] {outcome}"
    if outcome == NOT_ATTEMPTED:
        line += " — the reference is used from here on"
    if detail:
        line += f" — {detail}" if outcome != NOT_ATTEMPTED else f" ({detail})"
    print(line)
    RESULTS.append((exercise, outcome))
    return outcome


def _is_bool(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return value.dtype == torch.bool
    return np.asarray(value).dtype == bool


def _as_array(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().double().numpy()
    return np.asarray(value, dtype=np.float64)


def compare(got: Any, expected: Any, atol: float = 1e-5, rtol: float = 1e-5) -> str | None:
    """None when ``got`` matches ``expected`` (numbers, arrays, tensors, or tuples/dicts
    of them, within ``atol + rtol·|expected|``), else what differs, in words."""
    if isinstance(expected, dict):
        if not isinstance(got, dict):
            return f"a dict with keys {sorted(expected)} expected, got {type(got).__name__}"
        for k in expected:
            if k not in got:
                return f"key {k!r} is missing"
            why = compare(got[k], expected[k], atol, rtol)
            if why:
                return f"[{k!r}]: {why}"
        return None
    if isinstance(expected, (tuple, list)) and not isinstance(expected, np.ndarray):
        if not isinstance(got, (tuple, list)) or len(got) != len(expected):
            n = len(got) if isinstance(got, (tuple, list)) else type(got).__name__
            return f"{len(expected)} values expected, got {n}"
        for i, (g, e) in enumerate(zip(got, expected)):
            why = compare(g, e, atol, rtol)
            if why:
                return f"value {i}: {why}"
        return None
    if got is None:
        return "got None (did the function return its result?)"
    try:
        g, e = _as_array(got), _as_array(expected)
    except (TypeError, ValueError) as err:
        return f"not a number or an array: {type(got).__name__} ({err})"
    if g.shape != e.shape:
        return f"shape {e.shape} expected, got {g.shape}"
    if _is_bool(expected):
        wrong = int((g != e).sum())
        return f"{wrong} of {e.size} entries differ" if wrong else None
    if not np.isfinite(g).all() and np.isfinite(e).all():
        return f"{int((~np.isfinite(g)).sum())} entries are NaN or infinite"
    bad = ~np.isclose(g, e, atol=atol, rtol=rtol, equal_nan=True)
    if bad.any():
        i = np.unravel_index(int(np.argmax(np.abs(g - e) * bad)), e.shape) if e.ndim else ()
        where = f" at index {tuple(int(v) for v in i)}" if e.ndim else ""
        return (f"{int(bad.sum())} of {e.size} values differ; largest{where}: expected {float(e[i]):.6g}, "
                f"got {float(g[i]):.6g}")
    return None


def check(exercise: str, attempt: Callable[[], Any], expected: Any, what: str = "", atol: float = 1e-5,
          rtol: float = 1e-5) -> str:
    """Run ``attempt()`` (the student's code) and compare its result with ``expected``.

    Prints one line and returns ``"pass"``, ``"FAIL"`` or ``"not attempted"`` (the
    attempt raised ``NotImplementedError``). Any other exception in the attempt is a
    failure, reported with its type and message — never raised.
    """
    try:
        got = attempt()
    except NotImplementedError:
        return _report(exercise, NOT_ATTEMPTED, what)
    except Exception as err:  # the student's code crashed: say so, keep the notebook running
        return _report(exercise, FAIL, f"{what}: your code raised {type(err).__name__}: {err}".lstrip(": "))
    why = compare(got, expected, atol, rtol)
    if why:
        return _report(exercise, FAIL, f"{what}: {why}".lstrip(": "))
    detail = what
    try:
        g, e = _as_array(got), _as_array(expected)
        if g.size and g.dtype != bool:
            detail = f"{detail}: max |difference| {float(np.max(np.abs(g - e))):.1e}".lstrip(": ")
    except (TypeError, ValueError):
        pass
    return _report(exercise, PASS, detail)


def check_cases(exercise: str, attempt: Callable[..., Any], cases: list[tuple[tuple, Any]], what: str = "",
                atol: float = 1e-5, rtol: float = 1e-5) -> str:
    """:func:`check` over several argument tuples: ``cases = [(args, expected), ...]``;
    the first case that differs is reported with its arguments."""
    results = []
    for args, expected in cases:
        try:
            got = attempt(*args)
        except NotImplementedError:
            return _report(exercise, NOT_ATTEMPTED, what)
        except Exception as err:
            return _report(exercise, FAIL, f"{what}: your code raised {type(err).__name__}: {err} "
                                           f"for the arguments {_short(args)}".lstrip(": "))
        why = compare(got, expected, atol, rtol)
        if why:
            return _report(exercise, FAIL, f"{what}: for the arguments {_short(args)}: {why}".lstrip(": "))
        results.append(got)
    return _report(exercise, PASS, f"{what}: {len(cases)} cases agree".lstrip(": "))


def _short(args: tuple) -> str:
    parts = []
    for a in args:
        if isinstance(a, torch.Tensor) and a.numel() > 8:
            parts.append(f"tensor{tuple(a.shape)}")
        elif isinstance(a, np.ndarray) and a.size > 8:
            parts.append(f"array{a.shape}")
        else:
            parts.append(repr(a) if not isinstance(a, torch.Tensor) else f"tensor({a.tolist()})")
    return "(" + ", ".join(parts) + ")"


def label_rule_mask(cell: int) -> torch.Tensor:
    """An (8·cell, 8·cell) bool pixel mask on a grid of 8 x 8 cells of ``cell`` pixels that tells the
    two rules of :func:`bgad_lite.flow.fiber_labels` apart (exercise 01.2):

    - a region covering one cell fully and the next one exactly half (≥ 0.5 marks both, > 0.5 one);
    - a 3 x 3 pit across four cells (1, 2, 2 and 4 pixels: rule 2 marks the 4-pixel cell);
    - a 2-pixel pit split over two cells (a tie: the first cell in row-major order).
    """
    if cell < 4 or cell % 2:
        raise BGADError(f"cell must be even and at least 4 pixels, got {cell}.")
    m = torch.zeros(8 * cell, 8 * cell, dtype=torch.bool)
    m[cell:2 * cell, cell:2 * cell + cell // 2] = True  # a full cell and half of the next
    m[3 * cell - 1:3 * cell + 2, 4 * cell - 1:4 * cell + 2] = True  # a pit over four cells
    m[6 * cell, 2 * cell - 1:2 * cell + 1] = True  # two pixels, one in each of two cells
    return m


# ---------------------------------------------------------------------------
# A training step by hand, against train_flows
# ---------------------------------------------------------------------------


def one_step_of_train_flows(flow, level, objective: str, lr: float, beta: float = 0.01, tau: float = 0.1,
                            normalizer: float = 10.0, lam: float = 1.0):
    """A copy of ``flow`` after exactly one optimizer step of
    :func:`bgad_lite.train.train_flows` on every image of ``level`` (β, τ, N, λ for "bgad").

    One level, ``batch_images`` = all images, ``fiber_chunk`` ≥ the number of fibers,
    one epoch, no warm-up: one batch, one chunk, one step at ``lr``
    (``lr_factor(0, 1, 0) = 1``). The chunk's fibers are shuffled, but every loss
    term is a mean over fibers, so the step does not depend on their order
    (up to float rounding). Focal weighting is off and the boundary is per batch
    (computed from this one chunk's normal fibers).

    Compare in float64 (``flow.double()``, features and positional encoding too):
    Adam's first step moves a parameter by about lr·g/(|g| + 1e-8), so float32
    rounding in a gradient g near 0 can shift it by a visible fraction of lr.
    """
    n, _, h, w = level.features.shape
    flows = torch.nn.ModuleList([copy.deepcopy(flow)])
    history = train_flows(flows, [level], objective, epochs=1, lr=lr, beta=beta, tau=tau, normalizer=normalizer,
                          lam=lam, batch_images=n, fiber_chunk=n * h * w, progress=False)
    return flows[0], history


def compare_parameters(mine, reference, atol: float = 1e-5) -> str | None:
    """None when two flows hold the same parameters (within ``atol``), else what differs."""
    if mine is None:
        return "got None (return the flow after the step)"
    if not isinstance(mine, torch.nn.Module):
        return f"a torch.nn.Module expected (the flow after the step), got {type(mine).__name__}"
    a, b = dict(mine.named_parameters()), dict(reference.named_parameters())
    if a.keys() != b.keys():
        return "the two flows have different parameters (is it the same kind of flow?)"
    worst, name = 0.0, ""
    for k in b:
        d = float((a[k].detach().cpu().double() - b[k].detach().cpu().double()).abs().max())
        if d > worst:
            worst, name = d, k
    return None if worst <= atol else f"parameters differ by up to {worst:.2e} (in {name})"


def compare_gradients(mine, reference, rtol: float = 1e-6) -> str | None:
    """None when the gradients left on two flows' parameters agree (within ``rtol`` of the
    largest reference gradient), else what differs — with the ratio when one is a multiple of the other.

    The parameters alone cannot tell a loss from a multiple of it: Adam's first step moves a
    parameter by about lr·g/(|g| + 1e-8) ≈ lr·sign(g), whatever the scale of g. The gradients can.
    """
    pairs = [(k, p.grad, q.grad) for (k, p), q in zip(mine.named_parameters(), reference.parameters())
             if q.grad is not None]
    if any(g is None for _, g, _ in pairs):
        return ("your flow holds no gradients after the step: call loss.backward() before opt.step(), and leave "
                "the gradients in place after it (no zero_grad after the step; the check compares them)")
    g = torch.cat([a.detach().cpu().double().reshape(-1) for _, a, _ in pairs])
    r = torch.cat([b.detach().cpu().double().reshape(-1) for _, _, b in pairs])
    scale = float(r.abs().max())
    worst = float((g - r).abs().max())
    if worst <= rtol * max(scale, 1e-30):
        return None
    ratio = float(g @ r / (r @ r))
    if ratio > 0 and float((g - ratio * r).abs().max()) <= 1e-3 * scale * abs(ratio):
        return (f"your gradients are {ratio:.4g} times those of train_flows: the loss is scaled (a sum instead "
                "of a mean? a term multiplied or divided by a constant it should not be?)")
    return f"the gradients differ by up to {worst:.2e} (the largest is {scale:.2e})"


def check_step(exercise: str, attempt: Callable[[], Any], start_flow, level, objective: str, lr: float,
               beta: float = 0.01, tau: float = 0.1, normalizer: float = 10.0, lam: float = 1.0, what: str = "",
               atol: float = 1e-5, rtol_grad: float = 1e-6) -> str:
    """Compare the flow returned by ``attempt()`` (one optimizer step by hand, from a
    deep copy of ``start_flow``) with one step of ``train_flows`` from the same state
    (:func:`one_step_of_train_flows` with ``lr`` and, for "bgad", β, τ, N, λ): first the
    gradients the step left on the parameters (:func:`compare_gradients`: a loss multiplied by
    a constant fails here), then the parameters themselves (within ``atol``)."""
    reference, _ = one_step_of_train_flows(start_flow, level, objective, lr, beta, tau, normalizer, lam)
    moved = max(float((p.detach() - q.detach()).abs().max()) for p, q in zip(reference.parameters(), start_flow.parameters()))
    try:
        mine = attempt()
    except NotImplementedError:
        return _report(exercise, NOT_ATTEMPTED, what)
    except Exception as err:
        return _report(exercise, FAIL, f"{what}: your code raised {type(err).__name__}: {err}".lstrip(": "))
    if mine is start_flow:
        return _report(exercise, FAIL, f"{what}: return a trained deep copy, not the starting flow itself")
    why = compare_parameters(mine, reference, float("inf"))  # a flow with the same parameters at all?
    if why:
        return _report(exercise, FAIL, f"{what}: {why}".lstrip(": "))
    why = compare_gradients(mine, reference, rtol_grad)
    if why:
        return _report(exercise, FAIL, f"{what}: {why}".lstrip(": "))
    why = compare_parameters(mine, reference, atol)
    if why:
        return _report(exercise, FAIL, f"{what}: {why}; one step of train_flows moved them by up to "
                                       f"{moved:.2e}".lstrip(": "))
    worst = max(float((p.detach() - q.detach()).abs().max()) for p, q in zip(mine.parameters(), reference.parameters()))
    return _report(exercise, PASS, f"{what}: same gradients and parameters as one step of train_flows (max |difference| "
                                   f"{worst:.1e}; the step moved them by up to {moved:.2e})".lstrip(": "))


# ---------------------------------------------------------------------------
# Concept questions
# ---------------------------------------------------------------------------


class Quiz:
    """A multiple-choice question with immediate feedback (see :func:`quiz`)."""

    def __init__(self, question: str, options: list[str], answer: int, explanations: list[str] | None = None):
        if not 0 <= answer < len(options):
            raise ValueError(f"answer must index one of the {len(options)} options, got {answer}.")
        if explanations is not None and len(explanations) != len(options):
            raise ValueError("give one explanation per option (or none).")
        self.question, self.options, self.answer = question, list(options), answer
        self.explanations = explanations or [""] * len(options)
        self.letters = [chr(ord("A") + i) for i in range(len(options))]
        self.widget = None
        self.feedback_html = ""

    def feedback(self, choice: int) -> str:
        """The feedback shown after choosing option ``choice``, as HTML."""
        right = choice == self.answer
        head = ("<b style='color:#2a7d2a'>Right.</b>" if right else
                f"<b style='color:#b22222'>Not quite</b> — you chose {self.letters[choice]}.")
        why = self.explanations[choice]
        return f"{head} {why}" if why else head

    def choose(self, choice: int) -> str:
        """What clicking the button of option ``choice`` does (also callable from code and tests)."""
        self.feedback_html = self.feedback(choice)
        if self.widget is not None:
            self.widget.children[-1].value = self.feedback_html
        return self.feedback_html

    def build(self):
        """The widget: the question and options as HTML, one button per option, a feedback line."""
        items = "".join(f"<li style='list-style:none'><b>{c}.</b> {o}</li>" for c, o in zip(self.letters, self.options))
        text = W.HTML(value=f"<div><b>{self.question}</b><ul style='margin:4px 0'>{items}</ul></div>")
        buttons = []
        for i, c in enumerate(self.letters):
            b = W.Button(description=c, layout=W.Layout(width="48px"))
            b.on_click(lambda _b, i=i: self.choose(i))
            buttons.append(b)
        self.widget = W.VBox([text, W.HBox(buttons), W.HTML(value="<i>Choose an answer.</i>")])
        return self.widget

    def _repr_markdown_(self):  # where no widget can be drawn (GitHub, a static export)
        lines = [f"**{self.question}**", ""] + [f"- **{c}.** {o}" for c, o in zip(self.letters, self.options)]
        return "\n".join(lines + ["", "*(run the notebook to answer)*"])


def answer_key(quiz_id: str, options: list[str]) -> tuple[int, list[str]]:
    """The right option's index and one explanation per option of question ``quiz_id``, from
    :data:`bgad_lite.course.answers.QUIZ_ANSWERS` (not from the notebook, so that a student copy's
    source does not give the answer away)."""
    from .answers import QUIZ_ANSWERS

    if quiz_id not in QUIZ_ANSWERS:
        raise BGADError(f"no answer for the question {quiz_id!r} in bgad_lite/course/answers.py: add it there.")
    key = QUIZ_ANSWERS[quiz_id]
    unknown = [o for o in options if o not in key["why"]]
    if unknown or key["right"] not in options:
        raise BGADError(f"question {quiz_id!r}: the options in the notebook and in bgad_lite/course/answers.py "
                        f"differ ({unknown or key['right']!r}); change both together.")
    return options.index(key["right"]), [key["why"][o] for o in options]


def quiz(quiz_id: str, question: str, options: list[str]) -> None:
    """Show the multiple-choice concept question ``quiz_id`` (e.g. ``"02.Q3"``); the right option
    and the explanations come from :func:`answer_key`.

    With ipywidgets (Colab, JupyterLab, Notebook) the student clicks a letter and sees
    at once whether it was right and why. The output carries the widget view *and* the
    question as markdown, so viewers without widgets (GitHub, a static HTML export) show
    the question as text. Executed headless (papermill) it is displayed and does nothing.
    Returns nothing, so the cell shows the question once; use :class:`Quiz` to drive a
    question from code.
    """
    answer, explanations = answer_key(quiz_id, options)
    q = Quiz(question, options, answer, explanations)
    try:
        widget = q.build()
    except Exception:  # no ipywidgets: the question as text
        display(q)
        return None
    # the message a widget sends to display itself (the same in ipywidgets 7 and 8), plus markdown
    view = {"version_major": 2, "version_minor": 0, "model_id": widget.model_id}
    display({"application/vnd.jupyter.widget-view+json": view, "text/markdown": q._repr_markdown_(),
             "text/plain": f"{question} (a multiple-choice question: run the notebook to answer)"}, raw=True)
    return None


def show_solution(exercise: str, force: bool = False) -> str | None:
    """Print the reference solution of ``exercise`` (e.g. ``"02.4"``) once its check has run in
    this kernel (pass, FAIL or not attempted); ``force=True`` shows it anyway (a lecturer).

    The solutions are the ``### BEGIN SOLUTION`` blocks of the solution notebooks, copied into
    :mod:`bgad_lite.course.solutions` by ``bgad-lite student`` — so this works wherever the
    package is installed (Colab included), without the notebooks. Returns the text printed.
    """
    if exercise not in SOLUTIONS:
        raise BGADError(f"no exercise {exercise!r}; the exercises are {', '.join(sorted(SOLUTIONS))}.")
    if not force and exercise not in {e for e, _ in RESULTS}:
        print(f"Try exercise {exercise} first: run its check cell, then show_solution({exercise!r}) again.")
        return None
    text = f"# reference solution of exercise {exercise} (the lines between the markers are the answer)\n"
    text += SOLUTIONS[exercise]
    print(text)
    return text
