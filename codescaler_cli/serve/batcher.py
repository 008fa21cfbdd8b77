"""Request coalescing: candidates of concurrent requests scored together by one worker thread.

RL trainers send one sample per request; scored one request at a time, a GPU (or CPU)
runs tiny passes. Here a batch waits, up to a short window after its first request, for
the requests already being read (or until about ``batch_tokens`` tokens wait; a lone
request does not wait at all), and requests that arrive while the model is busy wait for
the next batch; then everything waiting goes to the scorer as one batch: the same Scorer
as ``codescaler score``, so duplicates across requests are scored once, a GRPO group's
shared prompt is computed once, and every score is that candidate's score alone within
fp32 rounding.

Work follows the client. A request larger than a *piece* (about ``PIECE_PASSES`` forward
passes) is scored a piece at a time, taking turns with the small requests, so no request
holds the model for long. A request whose client has gone (:meth:`Batcher.cancel`) is
dropped before any more of it is scored; a batch already running finishes for the live
requests in it and the gone one's results are discarded, and a batch whose every request
has gone stops after its current forward pass. A request that fits one piece is never
split: scored alone it gets exactly ``codescaler score``'s numbers.
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
    from ..config import ServeOptions
    from ..scoring.scorer import PairScores, Scorer

from .items import Abandoned, BatchReport, Candidate, Closed, QueueFull, Scored, Ticket, tokens_of

__all__ = ["BatchReport", "Batcher", "Candidate", "Closed", "QueueFull", "Scored", "Ticket"]

PIECE_PASSES = 16  # a piece of a large request: about this many of the scorer's passes


@dataclass(eq=False)
class _Job:
    items: list[Candidate]  # those given so far (a large request's come as it is extracted)
    future: Future
    tokens: list[float]  # estimated tokens of each item
    total: float  # estimated tokens of the whole request
    expected: int  # items in the whole request
    enqueued: float = field(default_factory=time.monotonic)
    next: int = 0  # first item not yet handed to a batch
    done: int = 0  # items scored
    running: int = 0  # slices in a batch now
    gone: bool = False  # cancelled: nothing more is scored, results are discarded
    results: list[Any] = field(default_factory=list)


@dataclass
class _Slice:
    job: _Job
    start: int
    end: int


class Batcher:
    def __init__(
        self,
        scorer: Scorer,
        options: ServeOptions,
        on_batch: Callable[[BatchReport], None] | None = None,
        on_abandon: Callable[[int, bool], None] | None = None,
    ) -> None:
        self.scorer = scorer
        self.window = options.batch_window_ms / 1000
        self.batch_tokens = options.batch_tokens
        passes = getattr(scorer, "budget", options.batch_tokens)
        self.piece_tokens = min(options.batch_tokens, passes * PIECE_PASSES)
        self.max_queue = options.max_queue
        self.on_batch = on_batch
        self.on_abandon = on_abandon  # (candidates, already scored) of gone requests
        self.deadline: float | None = None  # monotonic; past it, nothing more is scored
        self._cond = threading.Condition()
        self._pending: deque[_Job] = deque()
        self._jobs: dict[Future, _Job] = {}
        self._waiting = 0  # candidates not yet handed to a batch
        self._coming = 0  # requests announced (being read and extracted), not yet submitted
        self._small_turn = True  # small requests and pieces of large ones take turns
        self._busy = False  # a batch is being scored
        self.batches = 0  # batches taken so far
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

    def submit(
        self,
        items: list[Candidate],
        ticket: Ticket | None = None,
        total: int | None = None,
        estimate: float | None = None,
    ) -> Future:
        """A future of the items' :class:`Scored`, in order. Raises QueueFull or Closed.
        ``ticket``: the request's announcement, withdrawn as it is queued (atomically, so
        a forming batch never stops waiting for a request that is not in it yet).
        ``total``: the request's size when only its first items come now and the rest
        with :meth:`extend`; ``estimate``: then, its tokens (for the choice of pieces)."""
        future: Future = Future()
        tokens = [tokens_of(c) for c in items]
        total = len(items) if total is None else total
        with self._cond:
            if ticket is not None and ticket.batcher is self:
                ticket.batcher = None
                self._coming -= 1
                self._cond.notify_all()
            if self._closed or self._past_deadline():
                raise Closed()
            if not total:
                future.set_result([])
                return future
            if self._waiting + total > self.max_queue and self._pending:
                raise QueueFull()
            size = sum(tokens) if estimate is None else estimate
            job = _Job(list(items), future, tokens, size, total, results=[None] * total)
            self._pending.append(job)
            self._jobs[future] = job
            self._waiting += total
            self._cond.notify_all()
        return future

    def extend(self, future: Future, items: list[Candidate]) -> bool:
        """More of a request's items (see :meth:`submit`); False once it is gone."""
        with self._cond:
            job = self._jobs.get(future)
            if job is None or job.gone or job.future.done():
                return False
            job.items += items
            job.tokens += [tokens_of(c) for c in items]
            self._cond.notify_all()
        return True

    def ahead(self, future: Future) -> float:
        """Estimated tokens of a request's items given but not yet handed to a batch."""
        with self._cond:
            job = self._jobs.get(future)
            return 0.0 if job is None else sum(job.tokens[job.next :])

    def admits_large(self, since: int) -> bool:
        """Whether a large request may be prepared now: none waits for its first piece, and
        a batch was taken since ``since`` (``batches`` when the last one was let in) or the
        model is idle. So large requests are prepared about as fast as they are served."""
        with self._cond:
            if any(
                j.next == 0 and (j.total > self.piece_tokens or j.expected > len(j.items))
                for j in self._pending
            ):
                return False
            return self.batches > since or not (self._busy or self._pending)

    def cancel(self, future: Future) -> None:
        """The request's client has gone: drop what of it is not scored yet; a batch that
        holds it finishes for the others (its results discarded) or stops when no one is
        left in it."""
        with self._cond:
            job = self._jobs.get(future)
            if job is None or job.gone:
                return
            job.gone = True
            left = job.expected - job.next
            if left and job in self._pending:
                self._pending.remove(job)
                self._waiting -= left
            if job.next == 0:
                future.cancel()
            if not job.running:
                self._jobs.pop(future, None)
            self._cond.notify_all()
        if left and self.on_abandon is not None:
            self.on_abandon(left, False)

    def stop_within(self, seconds: float) -> None:
        """A stop signal: score for at most ``seconds`` more. Safe in a signal handler on the
        thread that may hold the lock (it is reentrant)."""
        with self._cond:
            if self.deadline is None:
                self.deadline = time.monotonic() + seconds
            self._cond.notify_all()

    def close(self, timeout: float | None = None) -> None:
        """Accept nothing more and score what is queued, for at most ``timeout`` seconds
        (then what is left is refused as Closed); stop the worker."""
        with self._cond:
            self._closed = True
            if timeout is not None:
                end = time.monotonic() + timeout
                self.deadline = end if self.deadline is None else min(self.deadline, end)
            self._cond.notify_all()
        left = None if self.deadline is None else max(self.deadline - time.monotonic(), 0) + 0.2
        self._thread.join(left)

    # ------------------------------------------------------------ the worker

    def _past_deadline(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def _take(self) -> list[_Slice] | None:
        """The next batch: wait for a first request, then the window or enough tokens."""
        with self._cond:
            while True:
                if self._past_deadline():
                    self._refuse_pending()
                if self._pending:
                    break
                if self._closed:
                    return None  # closed and drained
                left = None if self.deadline is None else self.deadline - time.monotonic()
                self._cond.wait(left if left is not None and left > 0 else None)
            deadline = self._pending[0].enqueued + self.window
            while (
                not self._closed
                and self.deadline is None  # stopping: no waiting for more
                and self._coming > 0  # more requests are on their way
                and sum(j.total for j in self._pending) < self.batch_tokens
            ):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            whole, large = [], []
            for job in self._pending:
                if (
                    job.next == 0
                    and job.total <= self.piece_tokens
                    and job.expected == len(job.items)
                ):
                    whole.append(job)
                elif job.next < len(job.items):  # a large one, with items to score now
                    large.append(job)
            if whole and (not large or self._small_turn):
                self._small_turn = False
                batch = self._take_whole(whole)
            elif large:
                self._small_turn = True
                batch = self._take_piece(large[0])
            else:
                self._cond.wait(self.window or 0.01)  # large requests still being extracted
                return []
            self._busy = bool(batch)
            self.batches += bool(batch)
            return batch

    def _take_whole(self, jobs: list[_Job]) -> list[_Slice]:
        """Whole small requests, oldest first, up to ``batch_tokens``."""
        batch: list[_Slice] = []
        tokens = 0.0
        for job in jobs:
            if batch and tokens + job.total > self.batch_tokens:
                break
            batch.append(_Slice(job, 0, len(job.items)))
            tokens += job.total
        taken = {id(s.job) for s in batch}
        self._pending = deque(j for j in self._pending if id(j) not in taken)
        started = []
        for s in batch:
            self._waiting -= len(s.job.items)
            if s.job.future.set_running_or_notify_cancel():
                s.job.next = len(s.job.items)
                s.job.running += 1
                started.append(s)
            else:  # cancelled before it ran
                self._jobs.pop(s.job.future, None)
        return started

    def _take_piece(self, job: _Job) -> list[_Slice]:
        """The next piece of a large request; the rest waits behind requests that came
        meanwhile."""
        self._pending.remove(job)
        if job.next == 0 and not job.future.set_running_or_notify_cancel():
            self._waiting -= job.expected
            self._jobs.pop(job.future, None)
            return []
        end, tokens = job.next, 0.0
        while end < len(job.items) and (
            end == job.next or tokens + job.tokens[end] <= self.piece_tokens
        ):
            tokens += job.tokens[end]
            end += 1
        piece = _Slice(job, job.next, end)
        self._waiting -= end - job.next
        job.next = end
        job.running += 1
        if end < job.expected:
            self._pending.append(job)
        return [piece]

    def _refuse_pending(self) -> None:
        """Past the shutdown deadline: what waits is answered Closed (503), not scored."""
        while self._pending:
            job = self._pending.popleft()
            self._waiting -= job.expected - job.next
            if job.next == 0:
                job.future.set_running_or_notify_cancel()
            if not job.future.done():
                job.future.set_exception(Closed())
            if not job.running:
                self._jobs.pop(job.future, None)

    def _work(self) -> None:
        while (batch := self._take()) is not None:
            if batch:
                try:
                    self._run(batch)
                finally:
                    with self._cond:
                        self._busy = False

    def _run(self, batch: list[_Slice]) -> None:
        saved = self.scorer.stats.prefix_tokens_saved
        items = [c for s in batch for c in s.job.items[s.start : s.end]]
        try:
            results, unique, dedup_hits = self._score(items, batch)
        except Abandoned:
            self._finish(batch, None)
            return
        except Exception as exc:
            self._one_by_one(batch, exc)
            return
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
        self._finish(batch, results)

    def _finish(self, batch: list[_Slice], results: list[Scored] | BaseException | None) -> None:
        """Deliver a batch's results (None: it stopped; an exception: it failed)."""
        discarded = 0
        start = 0
        with self._cond:
            for s in batch:
                job, n = s.job, s.end - s.start
                job.running -= 1
                start += n
                if job.gone or job.future.done():  # its client left, or refused at shutdown
                    discarded += n if job.gone and isinstance(results, list) else 0
                elif isinstance(results, list):
                    job.results[s.start : s.end] = results[start - n : start]
                    job.done += n
                    if job.done == job.expected:
                        job.future.set_result(job.results)
                else:  # failed or stopped: the rest of the request is not scored either
                    if job in self._pending:
                        self._pending.remove(job)
                        self._waiting -= job.expected - job.next
                    job.future.set_exception(results if results is not None else Closed())
                if (job.gone or job.future.done()) and not job.running:
                    self._jobs.pop(job.future, None)
        if discarded and self.on_abandon is not None:
            self.on_abandon(discarded, True)

    def _one_by_one(self, batch: list[_Slice], exc: Exception) -> None:
        """A batch failed: score its requests alone, so only the one at fault fails (500);
        the server goes on."""
        if len(batch) == 1:
            self._finish(batch, exc)
            return
        for s in batch:
            try:
                alone: Any = self._score(s.job.items[s.start : s.end], [s])[0]
            except Abandoned:
                alone = None
            except Exception as error:
                alone = error
            self._finish([s], alone)

    def _score(self, items: list[Candidate], batch: list[_Slice]) -> tuple[list[Scored], int, int]:
        """Scores of ``items`` in order; how many unique candidates ran; dedup hits. Stops
        between forward passes (Abandoned) once no one waits for the batch."""

        def check(*_: Any) -> None:
            if all(s.job.gone for s in batch) or self._past_deadline():
                raise Abandoned()

        out: list[Any] = [None] * len(items)
        unique = dedup_hits = 0
        for raw in (False, True):
            where = [i for i, c in enumerate(items) if c.raw == raw]
            if not where:
                continue
            check()
            codes = [items[i].code for i in where]
            if raw:
                prepared = self.scorer.prepare_texts(codes)
            else:
                prepared = self.scorer.prepare([items[i].question for i in where], codes)
            res: PairScores = self.scorer.run(prepared, check)
            unique += res.ticked  # the model ran these (stored ones: no)
            dedup_hits += sum(o >= 0 for o in prepared.owner) - len(prepared.encoded)
            for k, i in enumerate(where):
                out[i] = Scored(res.score[k], res.n_tokens[k], res.truncated[k], res.too_long[k])
        return out, unique, dedup_hits
