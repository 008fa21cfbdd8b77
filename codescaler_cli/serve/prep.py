"""Work off the event loop, and the client a request's work follows."""

from __future__ import annotations

import asyncio
import itertools
import queue
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from .body import ClientGone

T = TypeVar("T")
PREP_THREADS = 2  # CPU work off the event loop; few, so abandoned requests cannot swamp it


class Prep:
    """Daemon threads for CPU work off the event loop (large bodies, parsing, extraction).
    Work of large requests (``low``) waits behind that of small ones. Daemons: a long job
    never keeps the process from exiting after the grace period."""

    def __init__(self, threads: int = PREP_THREADS) -> None:
        self._queue: queue.PriorityQueue = queue.PriorityQueue()
        self._order = itertools.count()
        for i in range(threads):
            threading.Thread(target=self._run, name=f"codescaler-prep-{i}", daemon=True).start()

    def _run(self) -> None:
        while True:
            _, _, fn, args, future = self._queue.get()
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args))
                except BaseException as exc:
                    future.set_exception(exc)

    async def call(self, fn: Callable[..., T], *args: Any, low: bool = False) -> T:
        future: Future = Future()
        self._queue.put((int(low), next(self._order), fn, args, future))
        return await asyncio.wrap_future(future)


class Client:
    """A request's client, watched on the ASGI receive channel once its body is read:
    ``gone`` when it disconnects. ``turn``: what lets the next large request in, called
    once (when this one is queued, or ends)."""

    def __init__(self, receive: Callable[[], Awaitable[dict]] | None = None) -> None:
        self.left = asyncio.ensure_future(_disconnect(receive)) if receive else None
        self.turn: Callable[[], None] | None = None

    @property
    def gone(self) -> bool:
        return self.left is not None and self.left.done()

    def waits(self) -> set[asyncio.Future]:
        """What to wait on besides the work: the client leaving."""
        return {self.left} if self.left is not None else set()

    def check(self) -> None:
        if self.gone:
            raise ClientGone()

    def admitted(self) -> None:
        turn, self.turn = self.turn, None
        if turn is not None:
            turn()

    def close(self) -> None:
        self.admitted()
        if self.left is not None:
            self.left.cancel()


async def _disconnect(receive: Callable[[], Awaitable[dict]]) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
