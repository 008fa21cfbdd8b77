"""Request coalescing: candidates of concurrent requests scored together by one worker thread.

RL trainers send one sample per request; scored one request at a time, a GPU (or CPU)
runs tiny passes. Here a batch waits, up to a short window after its first request, for
the requests already being read (or until about ``batch_tokens`` tokens wait; a lone
request does not wait at all), and requests that arrive while the model is busy wait for
the next batch; then everything waiting goes to the scorer as one batch: the same Scorer as ``codescaler score``, so duplicates across requests are
scored once, a GRPO group's shared prompt is computed once, and every score is that
candidate's score alone within fp32 rounding. A request is never split across batches:
one request scored alone gets exactly ``codescaler score``'s numbers for the same rows.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ...config import ServeOptions
    from ...scoring.scorer import PairScores, Scorer

CHARS_PER_TOKEN = 3.5  # to size a batch before tokenizing it


class QueueFull(Exception):
    """More candidates are waiting than the queue holds: try again later (503)."""


class Closed(Exception):
    """The server is shutting down."""


@dataclass
class Candidate:
    question: str
    code: str  # the extracted code; with ``raw``, the whole model input
    raw: bool = False  # score ``code`` as the text it is (no chat template, no extraction)


@dataclass
class Scored:
    score: float | None
    n_tokens: int | None
    truncated: bool
    too_long: bool


@dataclass
class _Request:
    items: list[Candidate]
    future: Future
    tokens: float
    enqueued: float = field(default_factory=time.monotonic)


@dataclass
class BatchReport:
    """What one batch did, for the metrics."""

    requests: int
    candidates: int
    unique: int  # candidates the model ran
    dedup_hits: int  # candidates answered by an identical one in the batch
    tokens: int
    prefix_tokens_saved: int  # prompt tokens not recomputed (prompt reuse)


class Ticket:
    """A request on its way to the batcher (being read, parsed, extracted): a forming batch
    waits for it, up to the window. Withdrawn once: when it is queued, or on an error."""

    def __init__(self, batcher: Batcher | None) -> None:
        self.batcher = batcher
        if batcher is not None:
            batcher.coming(+1)

    def leave(self) -> None:
        batcher, self.batcher = self.batcher, None
        if batcher is not None:
            batcher.coming(-1)


class Batcher:
    def __init__(
        self,
        scorer: Scorer,
        options: ServeOptions,
        on_batch: Callable[[BatchReport], None] | None = None,
    ) -> None:
        self.scorer = scorer
        self.window = options.batch_window_ms / 1000
        self.batch_tokens = options.batch_tokens
        self.max_queue = options.max_queue
        self.on_batch = on_batch
        self._cond = threading.Condition()
        self._pending: deque[_Request] = deque()
        self._waiting = 0  # candidates in ``_pending``
        self._coming = 0  # requests announced (being read and extracted), not yet submitted
        self._closed = False
        self._thread = threading.Thread(target=self._work, name="codescaler-batcher", daemon=True)
        self._thread.start()

    @property
    def queue_depth(self) -> int:
        return self._waiting

    def coming(self, delta: int) -> None:
        """A request starts (+1) or stops (-1) being prepared: while any is, a batch waits
        for it (up to the window); with none coming, a lone request runs at once."""
        with self._cond:
            self._coming += delta
            self._cond.notify_all()

    def submit(self, items: list[Candidate], ticket: Ticket | None = None) -> Future:
        """A future of the items' :class:`Scored`, in order. Raises QueueFull or Closed.
        ``ticket``: the request's announcement, withdrawn as it is queued (atomically, so
        a forming batch never stops waiting for a request that is not in it yet)."""
        future: Future = Future()
        tokens = sum(len(c.question) + len(c.code) for c in items) / CHARS_PER_TOKEN
        with self._cond:
            if ticket is not None and ticket.batcher is self:
                ticket.batcher = None
                self._coming -= 1
            if self._closed:
                raise Closed()
            if self._waiting + len(items) > self.max_queue and self._pending:
                raise QueueFull()
            self._pending.append(_Request(items, future, tokens))
            self._waiting += len(items)
            self._cond.notify_all()
        return future

    def close(self) -> None:
        """Accept nothing more, score what is queued, stop the worker."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join()

    def _take(self) -> list[_Request] | None:
        """The next batch: wait for a first request, then the window or enough tokens."""
        with self._cond:
            while not self._pending and not self._closed:
                self._cond.wait()
            if not self._pending:
                return None  # closed and drained
            deadline = self._pending[0].enqueued + self.window
            while (
                not self._closed
                and self._coming > 0  # more requests are on their way
                and sum(r.tokens for r in self._pending) < self.batch_tokens
            ):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            batch: list[_Request] = []
            tokens = 0.0
            while self._pending and (
                not batch or tokens + self._pending[0].tokens <= self.batch_tokens
            ):
                request = self._pending.popleft()
                self._waiting -= len(request.items)
                if request.future.set_running_or_notify_cancel():  # False: timed out, dropped
                    batch.append(request)
                    tokens += request.tokens
            return batch

    def _work(self) -> None:
        while (batch := self._take()) is not None:
            if not batch:
                continue
            saved = self.scorer.stats.prefix_tokens_saved
            try:
                results, unique, dedup_hits = self._score([c for r in batch for c in r.items])
            except Exception as exc:
                self._one_by_one(batch, exc)
                continue
            if self.on_batch is not None:
                self.on_batch(
                    BatchReport(
                        requests=len(batch),
                        candidates=len(results),
                        unique=unique,
                        dedup_hits=dedup_hits,
                        tokens=sum(s.n_tokens or 0 for s in results if s.score is not None),
                        prefix_tokens_saved=self.scorer.stats.prefix_tokens_saved - saved,
                    )
                )
            start = 0
            for request in batch:
                request.future.set_result(results[start : start + len(request.items)])
                start += len(request.items)

    def _one_by_one(self, batch: list[_Request], exc: Exception) -> None:
        """A batch failed: score its requests alone, so only the one at fault fails (500);
        the server goes on."""
        if len(batch) == 1:
            batch[0].future.set_exception(exc)
            return
        for request in batch:
            try:
                request.future.set_result(self._score(request.items)[0])
            except Exception as alone:
                request.future.set_exception(alone)

    def _score(self, items: list[Candidate]) -> tuple[list[Scored], int, int]:
        """Scores of ``items`` in order; how many unique candidates ran; dedup hits."""
        out: list[Any] = [None] * len(items)
        unique = dedup_hits = 0
        for raw in (False, True):
            where = [i for i, c in enumerate(items) if c.raw == raw]
            if not where:
                continue
            codes = [items[i].code for i in where]
            if raw:
                prepared = self.scorer.prepare_texts(codes)
            else:
                prepared = self.scorer.prepare([items[i].question for i in where], codes)
            res: PairScores = self.scorer.run(prepared)
            unique += res.unique_scored
            dedup_hits += sum(o >= 0 for o in prepared.owner) - len(prepared.encoded)
            for k, i in enumerate(where):
                out[i] = Scored(res.score[k], res.n_tokens[k], res.truncated[k], res.too_long[k])
        return out, unique, dedup_hits
