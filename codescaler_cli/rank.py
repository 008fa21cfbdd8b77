"""Best-of-N selection and the metrics that show it works (pure, no model).

Within a group (one problem) candidates are ordered by the chosen key (shaped reward
by default, so valid programs come first), ties broken by raw score, then by input
order: stable and deterministic. A missing score sorts last.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .config import RankBy
from .errors import InputError, UsageError

if TYPE_CHECKING:
    import pyarrow as pa

RANK_BY = tuple(b.value for b in RankBy)


def _key(value: float | None) -> float:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return -math.inf
    return float(value)


def group_order(groups: Sequence[Hashable]) -> dict[Hashable, list[int]]:
    """Row indices per group, groups in order of first appearance. Groups are exact values:
    ``1``, ``1.0``, ``True`` and ``"1"`` are four groups."""
    out: dict[Hashable, list[int]] = {}
    for i, g in enumerate(groups):
        out.setdefault((type(g), g), []).append(i)
    return out


def rank_within_groups(
    groups: Sequence[Hashable],
    rewards: Sequence[float | None],
    scores: Sequence[float | None],
    by: str = "reward",
) -> tuple[list[int], list[int]]:
    """1-based rank and group size for every row (aligned with the inputs)."""
    if by not in RANK_BY:
        raise UsageError(f"--by must be one of {', '.join(RANK_BY)}")
    primary = rewards if by == "reward" else scores
    rank = [0] * len(groups)
    size = [0] * len(groups)
    for members in group_order(groups).values():
        ordered = sorted(members, key=lambda i: (-_key(primary[i]), -_key(scores[i]), i))
        for r, i in enumerate(ordered, start=1):
            rank[i] = r
            size[i] = len(members)
    return rank, size


def select(groups: Sequence[Hashable], rank: Sequence[int], top_k: int | None) -> list[int]:
    """Row indices to keep, ordered by group (first appearance) then rank."""
    if top_k is not None and top_k < 0:
        raise UsageError("--top-k must be >= 0")
    keep: list[int] = []
    for members in group_order(groups).values():
        ordered = sorted(members, key=lambda i: rank[i])
        keep.extend(ordered if not top_k else ordered[:top_k])
    return keep


def parse_label(value: Any, location: str) -> bool | None:
    """Labels may be booleans, 0/1 numbers, or 'true'/'false' strings; null is unknown.
    ``location`` names the row in error messages."""
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "0", "1"):
        return value.strip().lower() in ("true", "1")
    raise InputError(f"{location}: label {value!r} is not a boolean, 0/1 or 'true'/'false'")


@dataclass
class GroupMetrics:
    group: str
    size: int
    top1_reward: float | None
    top1_passed: bool | None = None
    random_accuracy: float | None = None
    oracle: bool | None = None


@dataclass
class SelectionMetrics:
    groups: int
    candidates: int
    selected: int
    selected_mean_reward: float
    selected_mean_score: float | None
    selected_valid_fraction: float
    labelled: bool = False
    best_of_n_accuracy: float | None = None
    random_accuracy: float | None = None
    oracle_accuracy: float | None = None
    per_group: list[GroupMetrics] = field(default_factory=list)

    def gate_value(self) -> tuple[str, float]:
        """What --fail-under compares: accuracy when labels exist, else mean reward."""
        if self.labelled and self.best_of_n_accuracy is not None:
            return "best-of-N accuracy", self.best_of_n_accuracy
        return "selected mean reward", self.selected_mean_reward

    def as_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def selection_metrics(
    groups: Sequence[Hashable],
    rank: Sequence[int],
    rewards: Sequence[float | None],
    scores: Sequence[float | None],
    valid: Sequence[bool],
    kept: Sequence[int],
    labels: Sequence[bool | None] | None = None,
) -> SelectionMetrics:
    """Metrics of a selection; with labels, top-1 accuracy vs random pick vs oracle.

    Random accuracy of a group is the fraction of its candidates that pass (the expected
    accuracy of picking one uniformly); oracle is whether any candidate passes. Overall
    numbers are means over groups. Unlabelled candidates (null) are left out of a group's
    label statistics; a group with no labels is left out of the label averages.
    """
    kept_rewards = [_key(rewards[i]) if rewards[i] is not None else 0.0 for i in kept]
    kept_scores = [scores[i] for i in kept if scores[i] is not None]
    m = SelectionMetrics(
        groups=len(group_order(groups)),
        candidates=len(groups),
        selected=len(kept),
        selected_mean_reward=sum(kept_rewards) / len(kept) if kept else 0.0,
        selected_mean_score=sum(kept_scores) / len(kept_scores) if kept_scores else None,
        selected_valid_fraction=sum(1 for i in kept if valid[i]) / len(kept) if kept else 0.0,
        labelled=labels is not None,
    )
    top1s, randoms, oracles = [], [], []
    for members in group_order(groups).values():
        best = min(members, key=lambda i: rank[i])
        gm = GroupMetrics(str(groups[best]), len(members), rewards[best])
        if labels is not None:
            known = [labels[i] for i in members if labels[i] is not None]
            if known:
                gm.top1_passed = labels[best]
                gm.random_accuracy = sum(known) / len(known)
                gm.oracle = any(known)
                top1s.append(1.0 if gm.top1_passed else 0.0)
                randoms.append(gm.random_accuracy)
                oracles.append(1.0 if gm.oracle else 0.0)
        m.per_group.append(gm)
    if labels is not None and top1s:
        m.best_of_n_accuracy = sum(top1s) / len(top1s)
        m.random_accuracy = sum(randoms) / len(randoms)
        m.oracle_accuracy = sum(oracles) / len(oracles)
    return m


@dataclass
class PairMetrics:
    pairs: int
    accuracy: float
    ties: int
    unscored: int
    mean_margin: float | None

    def as_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def pair_accuracy(
    chosen: Sequence[float | None], rejected: Sequence[float | None]
) -> tuple[list[bool], PairMetrics]:
    """Per pair: does the chosen program score strictly higher? A missing score loses."""
    correct: list[bool] = []
    ties = unscored = 0
    margins = []
    for c, r in zip(chosen, rejected, strict=True):
        if c is None or r is None:
            unscored += 1
        else:
            margins.append(c - r)
            ties += c == r
        correct.append(_key(c) > _key(r))
    n = len(correct)
    return correct, PairMetrics(
        pairs=n,
        accuracy=sum(correct) / n if n else 0.0,
        ties=ties,
        unscored=unscored,
        mean_margin=sum(margins) / len(margins) if margins else None,
    )


def rank_table(
    table: pa.Table,
    group_column: str,
    top_k: int | None,
    by: str = "reward",
    groups: Sequence[Hashable] | None = None,
) -> tuple[pa.Table, list[int]]:
    """Add ``rank`` and ``group_size`` and keep the top K rows per group (all when K is 0/None).

    ``groups``: the rows' group values (default: the column's); returns the rows kept too.
    """
    import pyarrow as pa

    if groups is None:
        groups = table.column(group_column).to_pylist()
    rewards = table.column("reward").to_pylist()
    scores = table.column("score").to_pylist()
    rank, size = rank_within_groups(groups, rewards, scores, by)
    keep = select(groups, rank, top_k)
    out = table.take(pa.array(keep, pa.int64()))
    for name in ("rank", "group_size"):
        if name in out.column_names:
            out = out.drop_columns([name])
    out = out.append_column("rank", pa.array([rank[i] for i in keep], pa.int32()))
    out = out.append_column("group_size", pa.array([size[i] for i in keep], pa.int32()))
    return out, keep
