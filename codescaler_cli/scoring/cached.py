"""The score cache's side of a run: lookups before planning, scores stored since, new scores
stored as passes finish, and every row's result (stored or new) in input order.

A hit is the stored entry as it is (bit for bit); a miss goes through the model exactly
as without a cache. See docs/cache.md.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .encode import Encoded, Prepared

if TYPE_CHECKING:
    from ..cache import ModelCache
    from ..cache.keys import Entry

FLUSH_EVERY = 1024  # new scores stored in groups of this many while a run goes on


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
    cached: list[bool] | None = None  # rows answered from the score cache (None: no cache)
    cached_rows: int = 0  # how many

    @classmethod
    def empty(cls) -> PairScores:
        return cls([], [], [], [])


def lookup(
    cache: ModelCache | None, questions: Sequence[str], codes: Sequence[str], texts: bool
) -> tuple[list[bytes] | None, list[Entry | None]]:
    """Cache keys and stored results of unique pairs (``texts``: whole inputs in ``codes``)."""
    keys = None
    if cache is not None:
        keys = cache.text_keys(codes) if texts else cache.pair_keys(questions, codes)
    if cache is None or keys is None:
        return None, [None] * len(codes)
    return keys, cache.get(keys)


def late_hits(cache: ModelCache | None, prepared: Prepared) -> None:
    """Scores stored since the lookup (an earlier chunk's, another process's) are taken from
    the store rather than computed again; looked for only when the store changed since."""
    keys, hits = prepared.keys, prepared.hits
    if cache is None or keys is None or hits is None or prepared.version is None:
        return
    if cache.store.version() == prepared.version:
        return
    todo = [i for i, e in enumerate(prepared.encoded) if e is not None and e.ids is not None]
    for i, entry in zip(todo, cache.get([keys[i] for i in todo]), strict=True):
        if entry is not None:
            hits[i] = entry
            prepared.encoded[i] = None


def fan_out(prepared: Prepared, scores: Sequence[float | None]) -> PairScores:
    """Every row's result: its unique pair's stored entry, or what this run computed."""
    encoded, hits = prepared.encoded, prepared.hits
    n = len(prepared.owner)
    result = PairScores([None] * n, [None] * n, [False] * n, [False] * n)
    cached = [False] * n
    for i, slot in enumerate(prepared.owner):
        if slot < 0:
            continue
        enc = encoded[slot]
        if enc is None:  # from the cache
            entry = hits[slot]  # type: ignore[index]
            assert entry is not None
            result.score[i] = entry.score
            result.n_tokens[i] = entry.n_tokens
            result.truncated[i] = entry.truncated
            result.too_long[i] = entry.score is None
            cached[i] = True
            continue
        result.truncated[i] = enc.truncated
        if enc.ids is None:
            result.too_long[i] = True
            result.n_tokens[i] = enc.full_length
            continue
        result.score[i] = scores[slot]
        result.n_tokens[i] = len(enc.ids)
    result.unique_scored = sum(
        (hits[s].score is not None) if e is None else (e.ids is not None)  # type: ignore[index, union-attr]
        for s, e in enumerate(encoded)
    )
    result.cached = cached if hits is not None else None
    result.cached_rows = sum(cached)
    return result


class StoreSink:
    """New results of one run, stored as passes finish (a crash loses little) and at the
    end: scores, and the pairs too long to score (so a later run needs no tokenizer)."""

    def __init__(self, cache: ModelCache, prepared: Prepared) -> None:
        self.cache = cache
        self.prepared = prepared
        self.scores: Sequence[float | None] = ()
        self.pending: list[tuple[bytes, Entry]] = []
        self.lock = threading.Lock()

    def bind(self, scores: Sequence[float | None]) -> None:
        """The run's score list, filled in as its passes finish."""
        self.scores = scores

    def __call__(self, slots: Sequence[int]) -> None:
        """``slots``' scores are final (called from the stream that computed them)."""
        items = [self._entry(s) for s in slots]
        with self.lock:
            self.pending.extend(items)
            if len(self.pending) < FLUSH_EVERY:
                return
            items, self.pending = self.pending, []
        self.cache.put(items)

    def _entry(self, slot: int) -> tuple[bytes, Entry]:
        from ..cache.keys import Entry

        keys, enc = self.prepared.keys, self.prepared.encoded[slot]
        assert keys is not None and isinstance(enc, Encoded) and enc.ids is not None
        return keys[slot], Entry(self.scores[slot], len(enc.ids), enc.truncated)

    def finish(self) -> None:
        from ..cache.keys import Entry

        keys = self.prepared.keys
        assert keys is not None
        too_long = [
            (keys[s], Entry(None, e.full_length, e.truncated))
            for s, e in enumerate(self.prepared.encoded)
            if e is not None and e.ids is None
        ]
        with self.lock:
            items, self.pending = self.pending + too_long, []
        self.cache.put(items)
