"""The server's scoring service: the same model, scorer, extraction and shaping as
``codescaler score``, behind the HTTP routes (app.py). Each route turns its request into
candidates here, the batcher scores them with everything else in flight, and the answers
are shaped here. A request whose client leaves stops where it is: between extraction
chunks, in the queue, or (with nobody else in its batch) between forward passes.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..config import (
    CacheOptions,
    ExtractMode,
    ModelOptions,
    RowOptions,
    ScoringOptions,
    ServeOptions,
    Shaping,
)
from ..extract import Extraction
from ..stages import extract_responses, score_columns
from .batcher import Batcher, Candidate, Closed, QueueFull, Scored, Ticket
from .body import RequestError
from .items import CHARS_PER_TOKEN
from .metrics import Metrics
from .parse import (
    Layout,
    layout_of,
)
from .prep import Client, Prep

if TYPE_CHECKING:
    from ..model.reward_model import RewardModel

EXTRACT_CHUNK = 32  # responses extracted between checks that the client is still there
TURN_POLL_S = 0.02  # how often a large request checks whether it may go on
FIRST = asyncio.FIRST_COMPLETED


@dataclass
class Scoring:
    """One request's candidates after scoring, with what the routes report."""

    extractions: list[Extraction]
    columns: dict[str, list[Any]]  # code_valid, score, reward, n_tokens, truncated


class Service:
    def __init__(
        self,
        model: ModelOptions,
        scoring: ScoringOptions,
        rows: RowOptions,
        serve: ServeOptions,
        reward_model: RewardModel | None = None,
        cache: CacheOptions | None = None,
    ) -> None:
        self.cache_options = cache if cache is not None else CacheOptions()
        self.model_options = model
        self.scoring_options = scoring
        self.rows = rows
        self.options = serve
        self.rm = reward_model
        self.scorer: Any = None
        self.batcher: Batcher | None = None
        self.layout: Layout | None = None  # the reward model's template, for /classify text
        self.error: BaseException | None = None
        self.ready = threading.Event()
        self.failed = threading.Event()
        self.metrics = Metrics(
            lambda: self.batcher.queue_depth if self.batcher else 0, self._store_bytes
        )
        self.prep = Prep()
        self._large: asyncio.Lock | None = None  # the turn of large requests (await_turn)
        self._admitted = -1  # the batcher's batch count when a large request was last let in
        self.name = serve.served_model_name or model.model

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Load the model in the background: /health answers 503 until it is ready."""
        threading.Thread(target=self._load, name="codescaler-load", daemon=True).start()

    def _load(self) -> None:
        try:
            from ..scoring.build import build_scorer

            cache = self.cache_options if self.cache_options.enabled else None
            self.scorer = build_scorer(
                self.rm or self.model_options, self.scoring_options, cache, notify=_log
            )
            self.scorer.load()  # warm before the first request, cache or not
            self.rm = self.scorer.rm
            tok = self.rm.tokenizer
            try:
                self.layout = layout_of(lambda m: tok.apply_chat_template(m, tokenize=False))
            except Exception:  # no usable template: /classify text asks for messages instead
                self.layout = None
            self.batcher = Batcher(
                self.scorer, self.options, self.metrics.batch, self.metrics.abandon
            )
            self.ready.set()
        except BaseException as exc:
            self.error = exc
            self.failed.set()

    def begin_shutdown(self, grace: float) -> None:
        """A stop signal: from now, at most ``grace`` seconds of scoring."""
        if self.batcher is not None:
            self.batcher.stop_within(grace)

    def close(self) -> None:
        """Score what is queued, within the shutdown grace period, then stop."""
        if self.batcher is not None:
            self.batcher.close(self.options.shutdown_timeout_s)

    # ------------------------------------------------------------ scoring

    def arrive(self, scoring: bool = True) -> Ticket:
        return Ticket(self.batcher if scoring else None)

    def require_ready(self) -> None:
        if not self.ready.is_set():
            raise RequestError(
                503, "the model is still loading; retry shortly", "ServiceUnavailable"
            )

    @property
    def large_bytes(self) -> int:
        """A body over this may hold more than a piece: it waits for its turn (await_turn)."""
        pieces = self.batcher.piece_tokens if self.batcher is not None else 0
        return int(pieces * CHARS_PER_TOKEN)

    async def await_turn(self, client: Client) -> None:
        """A large request waits here before its body is decoded: one at a time, only while
        no other waits for its first piece, and at most one per batch the model runs (any
        time while it is idle). So a flood of large requests costs the reading of their
        bodies, and one whose client leaves meanwhile costs nothing more. The turn passes
        on once the request is queued (``client.admitted``)."""
        if self._large is None:
            self._large = asyncio.Lock()
        acquire = asyncio.ensure_future(self._large.acquire())
        try:
            while not acquire.done():
                await asyncio.wait({acquire, *client.waits()}, return_when=FIRST)
                client.check()
        except BaseException:
            if acquire.done() and not acquire.cancelled():
                self._large.release()
            acquire.cancel()
            raise
        client.turn = self._large.release
        while self.batcher is not None and not self.batcher.admits_large(self._admitted):
            await asyncio.wait(client.waits(), timeout=TURN_POLL_S)
            client.check()
        self._admitted = self.batcher.batches if self.batcher is not None else 0

    def _submit(
        self, items: list[Candidate], ticket: Ticket | None, client: Client, **large: Any
    ) -> Future:
        """Queue the items; the next large request may then be prepared."""
        self.require_ready()
        assert self.batcher is not None
        client.check()
        try:
            future = self.batcher.submit(items, ticket, **large)
            client.admitted()
            return future
        except QueueFull:
            raise RequestError(
                503, f"over {self.options.max_queue} candidates are waiting; retry shortly",
                "ServiceUnavailable",
            ) from None  # fmt: skip
        except Closed:
            raise _stopping() from None

    async def _wait(
        self, future: Future, client: Client, feed: Callable[[], Awaitable[None]] | None = None
    ) -> list[Scored]:
        """The scores, unless the client leaves (ClientGone) or the request times out
        (504); either way nothing more of it is scored. ``feed``: called while waiting, to
        give a large request's next items."""
        assert self.batcher is not None
        deadline = time.monotonic() + self.options.request_timeout_s
        waiter = asyncio.wrap_future(future)
        try:
            while not waiter.done() and not client.gone:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RequestError(
                        504, f"no answer within {self.options.request_timeout_s:g} s", "Timeout"
                    )
                timeout = left if feed is None else min(left, TURN_POLL_S)
                await asyncio.wait({waiter, *client.waits()}, timeout=timeout, return_when=FIRST)
                if feed is not None and not waiter.done():
                    await feed()
            client.check()
            return waiter.result()
        except Closed:
            raise _stopping() from None
        except BaseException:  # gone, timed out, cancelled at shutdown, or failed
            self.batcher.cancel(future)
            waiter.cancel()
            raise

    def _store_bytes(self) -> int:
        import os

        cache = self.scorer.cache if self.scorer is not None else None
        if cache is None:
            return 0
        path = cache.store.path
        return sum(os.path.getsize(p) for p in (path, path + "-wal") if os.path.exists(p))

    def _stored(self, items: list[Candidate]) -> list[Scored | None]:
        """Each item's stored score (None: not in the score cache), looked up before any
        batch: a request whose items all hit is answered at once."""
        cache = self.scorer.cache if self.scorer is not None else None
        found: list[Scored | None] = [None] * len(items)
        if cache is None:
            return found
        for raw in (False, True):
            idx = [i for i, c in enumerate(items) if c.raw == raw and c.code]
            if not idx:
                continue
            _, entries = self.scorer.lookup(
                [items[i].question for i in idx], [items[i].code for i in idx], texts=raw
            )
            for i, e in zip(idx, entries, strict=True):
                if e is not None:
                    found[i] = Scored(e.score, e.n_tokens, e.truncated, e.score is None)
        hits = sum(f is not None for f in found)
        self.metrics.cache(hits, len(items) - hits)
        return found

    async def score(
        self, items: list[Candidate], ticket: Ticket | None = None, client: Client | None = None
    ) -> list[Scored]:
        """Scores of ``items``: stored ones at once, the others from a batch."""
        client = client or Client()
        self.require_ready()
        found = self._stored(items)
        misses = [i for i, f in enumerate(found) if f is None]
        if not misses:
            if ticket is not None:
                ticket.leave()
            return found  # type: ignore[return-value]
        fresh = await self._wait(self._submit([items[i] for i in misses], ticket, client), client)
        for i, scored in zip(misses, fresh, strict=True):
            found[i] = scored
        return found  # type: ignore[return-value]

    async def score_pairs(
        self,
        questions: list[str],
        responses: list[str],
        extract: ExtractMode,
        shaping: Shaping,
        ticket: Ticket | None = None,
        client: Client | None = None,
    ) -> Scoring:
        """Extract, score and shape as ``codescaler score`` does, row for row. A request
        larger than a piece is extracted a little ahead of its scoring (two pieces), so one
        whose client leaves has cost little extraction."""
        self.require_ready()
        assert self.batcher is not None
        client = client or Client()
        limit = self.scorer.max_response_chars
        n = len(responses)
        sizes = [(len(q) + min(len(r), limit)) / CHARS_PER_TOKEN for q, r in zip(questions, responses, strict=True)]  # fmt: skip
        ahead = 2 * self.batcher.piece_tokens
        large = sum(sizes) > self.batcher.piece_tokens
        extractions: list[Extraction] = []

        async def extract_to(end: int) -> list[Candidate]:
            start = len(extractions)
            for i in range(start, end, EXTRACT_CHUNK):
                client.check()
                part = responses[i : min(i + EXTRACT_CHUNK, end)]
                extractions.extend(
                    await self.prep.call(extract_responses, part, extract, limit, low=large)
                )
            return [Candidate(questions[i], extractions[i].code) for i in range(start, end)]

        def reach(start: int) -> int:  # the end of about two pieces from ``start``
            end, tokens = start, 0.0
            while end < n and (end == start or tokens < ahead):
                tokens += sizes[end]
                end += 1
            return end

        if not large:
            scored = await self.score(await extract_to(n), ticket, client)
        else:
            first = await extract_to(reach(0))
            future = self._submit(first, ticket, client, total=n, estimate=sum(sizes))

            async def feed() -> None:
                if len(extractions) < n and self.batcher.ahead(future) < ahead / 2:  # type: ignore[union-attr]
                    self.batcher.extend(future, await extract_to(reach(len(extractions))))  # type: ignore[union-attr]

            scored = await self._wait(future, client, feed)
        return Scoring(extractions, score_columns(extractions, _pair_scores(scored), shaping))

    def models(self) -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {
                    "id": self.name,
                    "object": "model",
                    "created": int(time.time()),
                    "owned_by": "codescaler",
                    "max_model_len": self.scoring_options.max_length,
                }
            ],
        }


def _log(message: str) -> None:
    """The score cache's one-line notices (a damaged, read-only or full store)."""
    import sys

    print(f"codescaler: {message}", file=sys.stderr, flush=True)


def _stopping() -> RequestError:
    return RequestError(503, "the server is shutting down", "ServiceUnavailable")


def _pair_scores(scored: list[Scored]) -> Any:
    from ..scoring.scorer import PairScores

    return PairScores(
        [s.score for s in scored],
        [s.n_tokens for s in scored],
        [s.truncated for s in scored],
        [s.too_long for s in scored],
    )
