"""Score (question, code) pairs: encode -> plan -> run the passes in streams -> fan out.

Every path here (dedup, length sorting, token budgets, shared-prefix reuse, OOM
backoff, streams, shards) returns the score the model card computes for the candidate
alone; the test suite checks each against that reference (fp32 within 1e-5, float64
within 1e-9).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from ..config import ScoringOptions
from .encode import Encoded, Encoder, Prepared
from .oom import Budget, ScoreStats, is_oom
from .plan import MAX_PADDING, Group, plan_batches, plan_groups, prefix_groups
from .streams import Pass, run_passes, serialized

if TYPE_CHECKING:
    from ..model.reward_model import RewardModel

ProgressFn = Callable[[int, int], None]  # (candidates scored, real tokens scored)

__all__ = ["PairScores", "Prepared", "ScoreStats", "Scorer", "ScoringOptions"]


@dataclass
class PairScores:
    """Per-pair results, aligned with the input lists."""

    score: list[float | None]
    n_tokens: list[int | None]
    truncated: list[bool]
    too_long: list[bool]
    unique_scored: int = 0  # unique pairs that fit (scored by this run or, with shards, another)
    ticked: int = 0  # unique pairs this run scored (and reported to progress)
    ran: list[bool] | None = None  # with a shard: rows whose score this run computed
    plan: str | None = None  # with a shard: a digest of the whole plan (equal in every shard)

    @classmethod
    def empty(cls) -> PairScores:
        return cls([], [], [], [])


class Scorer:
    """Scores pairs with a loaded :class:`RewardModel`; reusable across chunks."""

    def __init__(self, rm: RewardModel, options: ScoringOptions | None = None) -> None:
        from ..model.load import default_token_budget

        self.rm = rm
        self.options = options or ScoringOptions()
        self.options.validate()
        self.encoder = Encoder(rm, self.options.max_length)
        tokens = self.options.max_tokens_per_batch or default_token_budget(rm.device)
        self._budget = Budget(tokens, rm.device)
        self.attention_mask = self.options.attention_mask
        if self.attention_mask is None:
            import torch

            self.attention_mask = rm.device.type == "cuda" and rm.dtype == torch.float32
        self.pack_groups = self.options.pack_groups
        if self.pack_groups is None:
            self.pack_groups = rm.device.type != "cpu"
        self.trim = self.options.trim_last_layer

    @property
    def budget(self) -> int:
        return self._budget.tokens

    @property
    def stats(self) -> ScoreStats:
        return self._budget.stats

    @property
    def max_response_chars(self) -> int:
        """A response longer than this can never fit: it is not extracted (see Encoder)."""
        return self.encoder.max_chars

    def encode_pairs(self, questions: Sequence[str], codes: Sequence[str]) -> list[Encoded]:
        return self.encoder.encode_pairs(questions, codes)

    def prepare(self, questions: Sequence[str], codes: Sequence[str]) -> Prepared:
        """Dedup and tokenize (CPU work that can run ahead of the forward passes)."""
        return self.encoder.prepare(questions, codes, self.options.dedup)

    def prepare_texts(self, texts: Sequence[str]) -> Prepared:
        """Whole model inputs scored as given (no chat template), as vLLM's /classify does."""
        return self.encoder.prepare_texts(texts, self.options.dedup)

    def score_pairs(
        self, questions: Sequence[str], codes: Sequence[str], progress: ProgressFn | None = None
    ) -> PairScores:
        """Score each (question, code); pairs with empty code get no score."""
        return self.run(self.prepare(questions, codes), progress)

    def run(
        self,
        prepared: Prepared,
        progress: ProgressFn | None = None,
        shard: tuple[int, int] | None = None,
    ) -> PairScores:
        """Forward passes for prepared pairs; results fanned out to every input row.

        ``shard=(k, n)``: run only the k-th of every n passes of the plan (the plan is the
        same for every shard of the same pairs), for scale-out over workers; ``ran`` then
        tells which rows' scores this run computed, by row, whatever order passes ran in.
        """
        encoded = prepared.encoded
        n = len(prepared.owner)
        result = PairScores([None] * n, [None] * n, [False] * n, [False] * n)
        scores, done, plan = self._score_encoded(encoded, prepared.questions, progress, shard)
        for i, slot in enumerate(prepared.owner):
            if slot < 0:
                continue
            enc = encoded[slot]
            result.truncated[i] = enc.truncated
            if enc.ids is None:
                result.too_long[i] = True
                result.n_tokens[i] = enc.full_length
                continue
            result.score[i] = scores[slot]
            result.n_tokens[i] = len(enc.ids)
        result.unique_scored = sum(e.ids is not None for e in encoded)
        result.ticked = sum(done)
        if shard is not None:
            result.plan = plan
            # A row with no score to compute (no code, too long) needs no shard.
            result.ran = [
                slot < 0 or encoded[slot].ids is None or done[slot] for slot in prepared.owner
            ]
        return result

    # ------------------------------------------------------------ planning

    def _score_encoded(
        self,
        encoded: list[Encoded],
        questions: Sequence[str],
        progress: ProgressFn | None,
        shard: tuple[int, int] | None,
    ) -> tuple[list[float | None], list[bool], str | None]:
        scores: list[float | None] = [None] * len(encoded)
        # Shards split the plan between them, so they must make the same one: with the
        # budget they started with, not one an out-of-memory error lowered in one of them.
        budget = self._budget.initial if shard is not None else self.budget
        todo = [i for i, e in enumerate(encoded) if e.ids is not None]
        if progress is not None:
            progress = serialized(progress)
        planned: list[tuple[int, list[int], int, Pass]] = []  # (tokens, members, width, pass)
        rest = todo
        if self.options.prefix_reuse and self.rm.supports_prefix_reuse:
            seqs = [e.ids for e in encoded]
            groups, rest = prefix_groups(seqs, questions, todo, self.options.min_prefix_tokens)
            for g in groups:
                self.stats.prefix_groups += 1
                self.stats.prefix_tokens_saved += len(g.prefix) * (len(g.members) - 1)
            for batch in plan_groups(groups, budget, bool(self.pack_groups)):
                size = sum(len(g.prefix) + sum(map(len, g.suffixes)) for g in batch)
                members = [m for g in batch for m in g.members]
                job = partial(self._prompt_pass, batch, scores, progress)
                planned.append((size, members, len(members), job))
        lengths = [len(encoded[i].ids) for i in rest]  # type: ignore[arg-type]
        for plan in plan_batches(lengths, budget, self.options.max_batch_size, MAX_PADDING):
            items = [rest[j] for j in plan]
            size = len(plan) * max(lengths[j] for j in plan)
            job = partial(self._run_batch, items, encoded, scores, progress)
            planned.append((size, items, 1, job))
        # Largest first: the streams then end on short passes, not one long one.
        planned.sort(key=lambda p: -p[0])
        digest = None
        if shard is not None:
            k, n = shard
            digest = hashlib.sha256(repr([p[1] for p in planned]).encode()).hexdigest()[:16]
            planned = planned[k::n]
        done = [False] * len(encoded)
        for _, members, _, _ in planned:
            for m in members:
                done[m] = True
        # No more streams than passes that could ever run at once.
        parallel = sum(width for _, _, width, _ in planned)
        run_passes([p[3] for p in planned], min(self._streams(), parallel))
        return scores, done, digest

    def _streams(self) -> int:
        if self.options.streams is not None:
            return self.options.streams
        import torch

        cpu = self.rm.device.type == "cpu" and not self.rm.compiled
        return 2 if cpu and torch.get_num_threads() >= 2 else 1

    # ------------------------------------------------------------ passes

    def _run_batch(
        self,
        items: list[int],
        encoded: list[Encoded],
        scores: list[float | None],
        progress: ProgressFn | None,
    ) -> None:
        """One planned batch of whole sequences."""
        seqs = [encoded[i].ids for i in items]
        out = self._budget.run(
            lambda b: self.rm.score_ids(b, attention_mask=self.attention_mask, trim=self.trim),
            seqs,
            len,
        )
        for i, s in zip(items, out, strict=True):
            scores[i] = s
        if progress:
            progress(len(seqs), sum(len(x) for x in seqs))  # type: ignore[arg-type]

    def _prompt_pass(
        self, batch: list[Group], scores: list[float | None], progress: ProgressFn | None
    ) -> list[Pass]:
        """The shared prompts' states; returns the answer passes that read them."""
        rows = [(gi, k) for gi, g in enumerate(batch) for k in range(len(g.suffixes))]
        pmax = max(len(g.prefix) for g in batch)
        lengths = [len(batch[gi].suffixes[k]) for gi, k in rows]
        try:
            states = self.rm.prefix_states([g.prefix for g in batch], trim=self.trim)
        except Exception as exc:
            if not is_oom(exc):
                raise
            raise self._budget.oom_error("prompt states", pmax * len(batch)) from None
        # Answers of one pass share nothing but the cached prompts, so they are sorted by
        # length across problems and padding is capped; every row attends to up to pmax
        # cached positions, which the budget counts.
        plans = plan_batches(
            lengths, self.budget, self.options.max_batch_size, MAX_PADDING, context=pmax
        )
        return [
            partial(
                self._answer_pass, states, pmax, batch, [rows[j] for j in plan], scores, progress
            )
            for plan in plans
        ]

    def _answer_pass(
        self,
        states: Any,
        pmax: int,
        batch: list[Group],
        part: list[tuple[int, int]],
        scores: list[float | None],
        progress: ProgressFn | None,
    ) -> None:
        """Answers of one pass against their cached prompts (pmax slots each)."""
        out = self._budget.run(
            lambda r: self.rm.score_suffixes(
                states, r, trim=self.trim, skip_blocks=self.options.skip_hidden_blocks
            ),
            [(gi, batch[gi].suffixes[k]) for gi, k in part],
            lambda row: len(row[1]),
            context=pmax,
        )
        for (gi, k), s in zip(part, out, strict=True):
            scores[batch[gi].members[k]] = s
        if progress:
            progress(
                len(part),
                sum(len(batch[gi].prefix) + len(batch[gi].suffixes[k]) for gi, k in part),
            )
