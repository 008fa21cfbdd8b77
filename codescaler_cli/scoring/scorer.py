"""Score (question, code) pairs: dedup -> cache lookup -> encode the misses -> plan -> run
the passes in streams -> store the new scores -> fan out.

Every path here (cache hits, dedup, length sorting, token budgets, shared-prefix reuse,
OOM backoff, streams, shards) returns the score the model card computes for the candidate
alone; the test suite checks each against that reference (fp32 within 1e-5, float64
within 1e-9). A hit is the stored score, bit for bit.

The model loads in steps (model/lazy.py): a chunk whose pairs all hit needs no tokenizer
and no weights; the tokenizer loads for the first miss, the weights for the first pass.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from ..config import ScoringOptions
from .cached import PairScores, StoreSink, fan_out, late_hits, lookup
from .encode import Encoded, Encoder, Prepared, dedup
from .oom import Budget, ScoreStats, is_oom
from .plan import MAX_PADDING, Group, plan_batches, plan_groups, prefix_groups
from .streams import Pass, run_passes, serialized

if TYPE_CHECKING:
    from ..cache import ModelCache
    from ..cache.keys import Entry
    from ..model.reward_model import RewardModel

ProgressFn = Callable[[int, int], None]  # (candidates scored, real tokens scored)
Sink = Callable[[Sequence[int]], None]  # unique slots whose scores are final

__all__ = ["PairScores", "Prepared", "ScoreStats", "Scorer", "ScoringOptions"]


class Scorer:
    """Scores pairs with a reward model (loaded on first need); reusable across chunks."""

    def __init__(
        self,
        rm: RewardModel | Any,
        options: ScoringOptions | None = None,
        cache: ModelCache | None = None,
    ) -> None:
        from ..model.lazy import LazyRewardModel

        self.rm: LazyRewardModel = rm if isinstance(rm, LazyRewardModel) else LazyRewardModel.of(rm)
        self.options = options or ScoringOptions()
        self.options.validate()
        self.cache = cache
        self.encoder = Encoder(self.rm, self.options.max_length)
        self._stats = ScoreStats()
        self._budget: Budget | None = None
        self._budget_lock = threading.Lock()
        self._remembered = False  # the tokenizer's longest token, in the cache
        self._max_chars: int | None = None
        target = self.rm.target
        self.attention_mask = self.options.attention_mask
        if self.attention_mask is None:
            self.attention_mask = target.device_type == "cuda" and target.dtype == "float32"
        self.pack_groups = self.options.pack_groups
        if self.pack_groups is None:
            self.pack_groups = target.device_type != "cpu"
        self.trim = self.options.trim_last_layer
        if self.rm.loaded is not None:
            self._model()  # the budget, at once

    def _model(self) -> RewardModel:
        """The weights, loaded on the first forward pass."""
        rm = self.rm.load()
        if self._budget is None:
            from ..model.load import default_token_budget

            with self._budget_lock:
                if self._budget is None:
                    tokens = self.options.max_tokens_per_batch or default_token_budget(rm.device)
                    self._budget = Budget(tokens, rm.device, self._stats)
        return rm

    @property
    def budget(self) -> int:
        self._model()
        return self._budget.tokens  # type: ignore[union-attr]

    @property
    def stats(self) -> ScoreStats:
        return self._stats

    @property
    def max_response_chars(self) -> int:
        """A response longer than this can never fit: it is not extracted (see Encoder).
        Known from the cache when an earlier run remembered the tokenizer's longest token."""
        if self._max_chars is not None:  # a constant: asked once per chunk or request
            return self._max_chars
        if self.cache is not None and not self.rm.text_loaded:
            known = self.cache.max_token_chars()
            if known:
                self._max_chars = self.encoder.max_chars(known)
                return self._max_chars
        chars = self._max_chars = self.encoder.max_chars()
        if self.cache is not None and not self._remembered:
            self._remembered = True
            self.cache.remember_max_token_chars(self.encoder.longest_token)
        return chars

    def load(self) -> None:
        """Load the weights now (a server that should be warm before its first request)."""
        self._model()

    # ------------------------------------------------------------ preparing

    def encode_pairs(self, questions: Sequence[str], codes: Sequence[str]) -> list[Encoded]:
        return self.encoder.encode_pairs(questions, codes)

    def lookup(
        self, questions: Sequence[str], codes: Sequence[str], texts: bool = False
    ) -> tuple[list[bytes] | None, list[Entry | None]]:
        """Cache keys and stored results of pairs (``texts``: whole inputs in ``codes``)."""
        return lookup(self.cache, questions, codes, texts)

    def prepare(self, questions: Sequence[str], codes: Sequence[str]) -> Prepared:
        """Dedup, look up, and tokenize the misses (CPU work that can run ahead of the
        forward passes)."""
        owner, uq, uc = dedup(questions, codes, self.options.dedup)
        return self._prepared(owner, uq, uc, texts=False)

    def prepare_texts(self, texts: Sequence[str]) -> Prepared:
        """Whole model inputs scored as given (no chat template), as vLLM's /classify does.
        Their common group key lets shared prefixes (a system prompt) run once."""
        owner, uq, unique = dedup([""] * len(texts), texts, self.options.dedup)
        return self._prepared(owner, uq, unique, texts=True)

    def _prepared(self, owner: list[int], uq: list[str], uc: list[str], texts: bool) -> Prepared:
        version = self.cache.store.version() if self.cache is not None else None
        keys, hits = self.lookup(uq, uc, texts)
        miss = [i for i, h in enumerate(hits) if h is None]
        encoded: list[Encoded | None] = [None] * len(uc)
        for i, e in zip(miss, self._encode(uq, uc, miss, texts), strict=True):
            encoded[i] = e
        return Prepared(owner, uq, encoded, uc, keys, hits if keys else None, texts, version)

    def _encode(self, uq: list[str], uc: list[str], which: list[int], texts: bool) -> list[Encoded]:
        if not which:
            return []
        if self.cache is not None and not self._remembered:
            # The tokenizer loads now anyway: a later run answered from the store will know
            # the bound on responses without loading it.
            self._remembered = True
            self.cache.remember_max_token_chars(self.encoder.longest_token)
        if texts:
            return self.encoder.encode_texts([uc[i] for i in which])
        return self.encoder.encode_pairs([uq[i] for i in which], [uc[i] for i in which])

    def _without_hits(self, prepared: Prepared) -> Prepared:
        """Every unique pair tokenized (shards must plan alike, whatever each found stored)."""
        assert prepared.codes is not None
        hit = [i for i, e in enumerate(prepared.encoded) if e is None]
        encoded = list(prepared.encoded)
        for i, e in zip(
            hit, self._encode(prepared.questions, prepared.codes, hit, prepared.texts), strict=True
        ):
            encoded[i] = e
        return Prepared(
            prepared.owner,
            prepared.questions,
            encoded,
            prepared.codes,
            prepared.keys,
            None,
            prepared.texts,
        )

    # ------------------------------------------------------------ scoring

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
        """Forward passes for the misses; results (stored and new) fanned out to every row.

        ``shard=(k, n)``: run only the k-th of every n passes of the plan (the plan is the
        same for every shard of the same pairs), for scale-out over workers; ``ran`` then
        tells which rows' scores this run computed, by row, whatever order passes ran in.
        """
        if shard is not None and prepared.hits is not None:
            prepared = self._without_hits(prepared)
        else:
            late_hits(self.cache, prepared)
        sink = None
        if self.cache is not None and prepared.keys is not None:
            sink = StoreSink(self.cache, prepared)
        try:
            scores, done, plan = self._score_encoded(
                prepared.encoded, prepared.questions, progress, shard, sink
            )
        finally:
            if sink is not None:
                sink.finish()
        result = fan_out(prepared, scores)
        result.ticked = sum(done)
        encoded = prepared.encoded
        if shard is not None:
            result.plan = plan
            # A row with no score to compute (no code, too long) needs no shard.
            result.ran = [
                slot < 0 or encoded[slot].ids is None or done[slot]  # type: ignore[union-attr]
                for slot in prepared.owner
            ]
        return result

    # ------------------------------------------------------------ planning

    def _score_encoded(
        self,
        encoded: list[Encoded | None],
        questions: Sequence[str],
        progress: ProgressFn | None,
        shard: tuple[int, int] | None,
        sink: StoreSink | None = None,
    ) -> tuple[list[float | None], list[bool], str | None]:
        scores: list[float | None] = [None] * len(encoded)
        if sink is not None:
            sink.bind(scores)
        todo = [i for i, e in enumerate(encoded) if e is not None and e.ids is not None]
        if not todo:  # everything was stored, too long, or empty: no model needed
            return scores, [False] * len(encoded), _plan_digest([]) if shard else None
        rm = self._model()
        assert self._budget is not None
        # Shards split the plan between them, so they must make the same one: with the
        # budget they started with, not one an out-of-memory error lowered in one of them.
        budget = self._budget.initial if shard is not None else self._budget.tokens
        if progress is not None:
            progress = serialized(progress)
        planned: list[tuple[int, list[int], int, Pass]] = []  # (tokens, members, width, pass)
        rest = todo
        if self.options.prefix_reuse and rm.supports_prefix_reuse:
            seqs = [e.ids if e is not None else None for e in encoded]
            groups, rest = prefix_groups(seqs, questions, todo, self.options.min_prefix_tokens)
            for g in groups:
                self.stats.prefix_groups += 1
                self.stats.prefix_tokens_saved += len(g.prefix) * (len(g.members) - 1)
            for batch in plan_groups(groups, budget, bool(self.pack_groups)):
                size = sum(len(g.prefix) + sum(map(len, g.suffixes)) for g in batch)
                members = [m for g in batch for m in g.members]
                job = partial(self._prompt_pass, batch, scores, progress, sink)
                planned.append((size, members, len(members), job))
        lengths = [len(encoded[i].ids) for i in rest]  # type: ignore[arg-type, union-attr]
        for plan in plan_batches(lengths, budget, self.options.max_batch_size, MAX_PADDING):
            items = [rest[j] for j in plan]
            size = len(plan) * max(lengths[j] for j in plan)
            job = partial(self._run_batch, items, encoded, scores, progress, sink)
            planned.append((size, items, 1, job))
        # Largest first: the streams then end on short passes, not one long one.
        planned.sort(key=lambda p: -p[0])
        digest = None
        if shard is not None:
            k, n = shard
            digest = _plan_digest([p[1] for p in planned])
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

        rm = self._model()
        cpu = rm.device.type == "cpu" and not rm.compiled
        return 2 if cpu and torch.get_num_threads() >= 2 else 1

    # ------------------------------------------------------------ passes

    def _run_batch(
        self,
        items: list[int],
        encoded: list[Encoded],
        scores: list[float | None],
        progress: ProgressFn | None,
        sink: Sink | None,
    ) -> None:
        """One planned batch of whole sequences."""
        rm = self._model()
        seqs = [encoded[i].ids for i in items]
        out = self._budget.run(  # type: ignore[union-attr]
            lambda b: rm.score_ids(b, attention_mask=self.attention_mask, trim=self.trim),
            seqs,
            len,
        )
        for i, s in zip(items, out, strict=True):
            scores[i] = s
        if sink:
            sink(items)
        if progress:
            progress(len(seqs), sum(len(x) for x in seqs))  # type: ignore[arg-type]

    def _prompt_pass(
        self,
        batch: list[Group],
        scores: list[float | None],
        progress: ProgressFn | None,
        sink: Sink | None,
    ) -> list[Pass]:
        """The shared prompts' states; returns the answer passes that read them."""
        rows = [(gi, k) for gi, g in enumerate(batch) for k in range(len(g.suffixes))]
        pmax = max(len(g.prefix) for g in batch)
        lengths = [len(batch[gi].suffixes[k]) for gi, k in rows]
        try:
            states = self._model().prefix_states([g.prefix for g in batch], trim=self.trim)
        except Exception as exc:
            if not is_oom(exc):
                raise
            raise self._budget.oom_error("prompt states", pmax * len(batch)) from None  # type: ignore[union-attr]
        # Answers of one pass share nothing but the cached prompts, so they are sorted by
        # length across problems and padding is capped; every row attends to up to pmax
        # cached positions, which the budget counts.
        plans = plan_batches(
            lengths, self.budget, self.options.max_batch_size, MAX_PADDING, context=pmax
        )
        return [
            partial(
                self._answer_pass,
                states,
                pmax,
                batch,
                [rows[j] for j in plan],
                scores,
                progress,
                sink,
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
        sink: Sink | None,
    ) -> None:
        """Answers of one pass against their cached prompts (pmax slots each)."""
        rm = self._model()
        out = self._budget.run(  # type: ignore[union-attr]
            lambda r: rm.score_suffixes(
                states, r, trim=self.trim, skip_blocks=self.options.skip_hidden_blocks
            ),
            [(gi, batch[gi].suffixes[k]) for gi, k in part],
            lambda row: len(row[1]),
            context=pmax,
        )
        for (gi, k), s in zip(part, out, strict=True):
            scores[batch[gi].members[k]] = s
        if sink:
            sink([batch[gi].members[k] for gi, k in part])
        if progress:
            progress(
                len(part),
                sum(len(batch[gi].prefix) + len(batch[gi].suffixes[k]) for gi, k in part),
            )


def _plan_digest(members: list[list[int]]) -> str:
    return hashlib.sha256(repr(members).encode()).hexdigest()[:16]
