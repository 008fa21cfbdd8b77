"""Best-of-N selection and the metrics that show it works (pure, no model).

Within a group (one problem) candidates are ordered by the chosen key (shaped reward
by default, so valid programs come first), ties broken by raw score, then by input
order: stable and deterministic. A missing score sorts last.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import InputError


def _key(value: float | None) -> float:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return -math.inf
    return float(value)


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

    def gate_value(self) -> tuple[str, float | None]:
        """What --fail-under compares: best-of-N accuracy (None: no labelled group)."""
        return "best-of-N accuracy", self.best_of_n_accuracy

    def as_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


class SelectionAccumulator:
    """Selection metrics over ranked rows streamed group by group (each group's rows
    together, in rank order), and which rows to keep: ``top_k`` per group (0: all).

    With labels: top-1 accuracy vs random pick vs oracle. Random accuracy of a group is
    the fraction of its candidates that pass (the expected accuracy of picking one
    uniformly); oracle is whether any candidate passes. Overall numbers are means over
    groups. Unlabelled candidates (null) are left out of a group's label statistics; a
    group with no labels is left out of the label averages.
    """

    def __init__(self, top_k: int) -> None:
        self.top_k = top_k
        self.m = SelectionMetrics(0, 0, 0, 0.0, None, 0.0)
        self.rewards = 0.0
        self.scores: list[float] = []
        self.score_sum = 0.0
        self.n_scores = 0
        self.valid = 0
        self.group: GroupMetrics | None = None
        self.first: Any = None
        self.known: list[bool] = []
        self.top1s: list[float] = []
        self.randoms: list[float] = []
        self.oracles: list[float] = []

    def add_batch(
        self,
        first: Sequence[Any],
        rank: Sequence[int],
        rewards: Sequence[float | None],
        scores: Sequence[float | None],
        valid: Sequence[bool | None],
        labels: Sequence[Any] | None,
        group_values: Sequence[Any],
    ) -> list[int]:
        """Add rows (``first``: their group's identity); returns the indices to keep."""
        kept = []
        if labels is not None:
            self.m.labelled = True
        for i, g in enumerate(first):
            if self.group is None or g != self.first:
                self._close_group()
                self.first = g
                self.group = GroupMetrics(str(group_values[i]), 0, rewards[i])
                if labels is not None:
                    self.group.top1_passed = parse_label(labels[i], "label")
            self.group.size += 1
            self.m.candidates += 1
            if labels is not None and labels[i] is not None:
                self.known.append(bool(parse_label(labels[i], "label")))
            if self.top_k and rank[i] > self.top_k:
                continue
            kept.append(i)
            self.m.selected += 1
            self.rewards += _key(rewards[i]) if rewards[i] is not None else 0.0
            if scores[i] is not None:
                self.score_sum += scores[i]  # type: ignore[operator]
                self.n_scores += 1
            self.valid += bool(valid[i])
        return kept

    def _close_group(self) -> None:
        gm = self.group
        if gm is None:
            return
        if self.m.labelled and self.known:
            gm.random_accuracy = sum(self.known) / len(self.known)
            gm.oracle = any(self.known)
            self.top1s.append(1.0 if gm.top1_passed else 0.0)
            self.randoms.append(gm.random_accuracy)
            self.oracles.append(1.0 if gm.oracle else 0.0)
        else:
            gm.top1_passed = None
        self.m.per_group.append(gm)
        self.m.groups += 1
        self.group = None
        self.known = []

    def result(self) -> SelectionMetrics:
        self._close_group()
        m = self.m
        if m.selected:
            m.selected_mean_reward = self.rewards / m.selected
            m.selected_valid_fraction = self.valid / m.selected
        m.selected_mean_score = self.score_sum / self.n_scores if self.n_scores else None
        if self.top1s:
            m.best_of_n_accuracy = sum(self.top1s) / len(self.top1s)
            m.random_accuracy = sum(self.randoms) / len(self.randoms)
            m.oracle_accuracy = sum(self.oracles) / len(self.oracles)
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


class PairAccumulator:
    """Pairwise preference accuracy over pairs streamed in chunks: does the chosen program
    score strictly higher? A missing score loses (an unscored pair is never correct)."""

    def __init__(self) -> None:
        self.pairs = self.correct = self.ties = self.unscored = self.margins = 0
        self.margin_sum = 0.0

    def add(self, chosen: Sequence[float | None], rejected: Sequence[float | None]) -> list[bool]:
        out: list[bool] = []
        for c, r in zip(chosen, rejected, strict=True):
            if c is None or r is None:
                self.unscored += 1
            else:
                self.margin_sum += c - r
                self.margins += 1
                self.ties += c == r
            out.append(_key(c) > _key(r))
        self.pairs += len(out)
        self.correct += sum(out)
        return out

    def result(self) -> PairMetrics:
        return PairMetrics(
            pairs=self.pairs,
            accuracy=self.correct / self.pairs if self.pairs else 0.0,
            ties=self.ties,
            unscored=self.unscored,
            mean_margin=self.margin_sum / self.margins if self.margins else None,
        )
