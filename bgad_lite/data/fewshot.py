"""The few-shot split of supervised anomaly detection: k labelled anomalies of the seen types.

:func:`few_shot_split` draws the ``k`` labelled anomalies that BGAD trains with from the
*seen* defect types (round robin over types, or group by group when the images come in
groups such as camera positions) and returns the test set that is left; the *unseen*
types appear only in the test set.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..config import BGADError
from .layout import Category, Sample

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------
# Few-shot split: k labelled anomalies of the seen types
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FewShotSplit:
    """The labelled anomalies for training and the test set that is left.

    Attributes:
        labelled: the ``k`` labelled anomalies (seen types only), sorted by
            ``(defect type, file name)``.
        test: the category's test set minus the labelled images (and minus
            seen-type anomalies that share a group with a labelled one).
        seen_types: the defect types labelled anomalies come from.
        unseen_types: the other defect types (only in the test set).
    """

    labelled: tuple[Sample, ...]
    test: tuple[Sample, ...]
    seen_types: tuple[str, ...]
    unseen_types: tuple[str, ...]


def _choose_seen_types(
    category: Category, seen_types: Sequence[str] | None, require_unseen: bool | None
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Resolve ``seen_types`` to ``(seen, unseen)``, both sorted."""
    all_types = category.defect_types
    if not all_types:
        raise BGADError(f"category {category.name!r} has no defect types in its test set; nothing to label.")
    if require_unseen is None:
        require_unseen = seen_types is None

    if seen_types is None:
        seen = all_types[: math.ceil(len(all_types) / 2)]
    else:
        if isinstance(seen_types, str):
            raise BGADError(
                f"seen_types must be a tuple of type names, got the string {seen_types!r}; "
                f"write seen_types=({seen_types!r},)."
            )
        unknown = sorted(set(seen_types) - set(all_types))
        if unknown:
            raise BGADError(
                f"unknown defect type(s) {unknown} in seen_types for category {category.name!r}; "
                f"valid types are {list(all_types)}."
            )
        seen = tuple(sorted(set(seen_types)))
    unseen = tuple(t for t in all_types if t not in seen)

    if require_unseen and not unseen:
        if len(all_types) == 1:
            raise BGADError(
                f"category {category.name!r} has only one defect type ({all_types[0]!r}): nothing "
                f"is left for 'unseen'. Pass seen_types=({all_types[0]!r},) to train and evaluate "
                f"on seen types only (command line: --seen-types {all_types[0]})."
            )
        raise BGADError(
            f"seen_types {list(seen)} covers every defect type of {category.name!r}: nothing is left "
            f"for 'unseen'. Leave some types out, or pass require_unseen=False."
        )
    return seen, unseen


def _draw_round_robin(by_type: dict[str, list[Sample]], k: int, rng: np.random.Generator) -> list[Sample]:
    """Take ``k`` images, one per type in turn, random images within a type."""
    queues = {t: [items[j] for j in rng.permutation(len(items))] for t, items in by_type.items()}
    chosen: list[Sample] = []
    while len(chosen) < k:
        for t in sorted(queues):
            if queues[t] and len(chosen) < k:
                chosen.append(queues[t].pop(0))
    return chosen


def _draw_by_group(by_type: dict[str, list[Sample]], k: int, rng: np.random.Generator) -> list[Sample]:
    """Take ``k`` images group by group, cycling over the types.

    At a type's turn, a random group that still holds an unlabelled image of
    that type is taken whole (all its seen-type images, of any type). A group
    that would overshoot ``k`` contributes a random subset. Images without a
    group form a group of their own.
    """
    members: dict[str, list[Sample]] = {}
    for t in sorted(by_type):
        for s in by_type[t]:
            members.setdefault(s.group if s.group is not None else f"\0{s.key}", []).append(s)
    chosen: list[Sample] = []
    used: set[str] = set()
    while len(chosen) < k:
        for t in sorted(by_type):
            if len(chosen) >= k:
                break
            candidates = sorted(g for g, items in members.items() if g not in used and any(s.defect_type == t for s in items))
            if not candidates:
                continue
            group = candidates[int(rng.integers(len(candidates)))]
            used.add(group)
            items = members[group]
            room = k - len(chosen)
            if len(items) > room:
                items = [items[j] for j in sorted(rng.choice(len(items), size=room, replace=False))]
            chosen.extend(items)
    return chosen


def few_shot_split(
    category: Category,
    k: int,
    seen_types: Sequence[str] | None,
    seed: int,
    require_unseen: bool | None = None,
) -> FewShotSplit:
    """Draw ``k`` labelled anomalies of the seen types; the rest is the test set.

    Args:
        category: from :func:`load_category` (optionally :func:`with_groups`).
        k: number of labelled anomalies (0 gives an empty labelled set).
        seen_types: the defect types that may be labelled. ``None`` takes the
            first ``ceil(n / 2)`` of the ``n`` sorted types.
        seed: seeds ``numpy.random.default_rng``; same seed, same split.
        require_unseen: whether at least one type must stay unseen. ``None``
            means "yes when seen_types is None, no when it is given".

    The draw goes round robin over the seen types (random images within a
    type), so the labelled set is as balanced as possible. When the seen
    anomalies carry a ``group``, whole groups are drawn instead, and every
    seen-type test anomaly that shares a group with a labelled image is
    removed from the test set, so that near-duplicates do not leak.

    Raises:
        BGADError: unknown types, no type left unseen when one is required,
            a negative ``k``, or fewer seen anomalies than ``k``.
    """
    seen, unseen = _choose_seen_types(category, seen_types, require_unseen)
    if not isinstance(k, (int, np.integer)) or k < 0:
        raise BGADError(f"k (the number of labelled anomalies) must be an integer >= 0, got {k!r}.")

    by_type = {t: [s for s in category.test if s.defect_type == t] for t in seen}
    available = sum(len(v) for v in by_type.values())
    if available < k:
        raise BGADError(
            f"asked for k={k} labelled anomalies but the seen types {list(seen)} have only "
            f"{available} images; lower n_anomalies or add types to seen_types."
        )

    rng = np.random.default_rng(seed)
    uses_groups = any(s.group is not None for items in by_type.values() for s in items)
    chosen = _draw_by_group(by_type, k, rng) if uses_groups else _draw_round_robin(by_type, k, rng)
    labelled = tuple(sorted(chosen, key=lambda s: (s.defect_type, s.path.name)))

    taken = set(labelled)
    leaked_groups = {s.group for s in labelled if s.group is not None}
    test = tuple(
        s
        for s in category.test
        if s not in taken and not (s.defect_type in seen and s.group is not None and s.group in leaked_groups)
    )
    removed = len(category.test) - len(test) - len(labelled)
    if removed:
        logger.info("removed %d same-group seen anomalies from the test set", removed)
    if seen and k > 0 and not any(s.defect_type in seen for s in test):
        logger.warning("no anomaly of the seen types %s is left in the test set", list(seen))
    return FewShotSplit(labelled=labelled, test=test, seen_types=seen, unseen_types=unseen)
