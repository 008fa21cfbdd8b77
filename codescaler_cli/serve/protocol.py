"""Slow connections are closed: uvicorn's HTTP/1.1 protocol (h11) with read timeouts.

uvicorn times out only idle keep-alive connections; a client that sends half a header
line, or stops in the middle of its body, would hold its connection (and, mid-body, a
request the server waits for at shutdown) for ever. Here every request must complete its
headers within ``header_timeout`` seconds of its first byte (of the connection, for the
first request) and its body within ``body_timeout`` seconds of its headers; otherwise the
connection is closed (the request, if it started, sees its client gone).
"""

from __future__ import annotations

import asyncio
from typing import Any


def guarded_protocol(header_timeout: float, body_timeout: float) -> type[asyncio.Protocol]:
    """A uvicorn HTTP protocol class (``uvicorn.Config(http=...)``) with these timeouts."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class GuardedH11Protocol(H11Protocol):
        _timer: asyncio.TimerHandle | None = None
        _timed: Any = None  # the request cycle whose headers arrived last

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm(header_timeout)

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            idle = self.cycle is None or self.cycle.response_complete
            if self._timer is None and idle:
                self._arm(header_timeout)  # the first bytes of the next request
            super().data_received(data)

        def handle_events(self) -> None:
            super().handle_events()
            cycle = self.cycle
            if cycle is not None and cycle is not self._timed:  # a request's headers arrived
                self._timed = cycle
                self._disarm()
                if cycle.more_body:
                    self._arm(body_timeout)
            elif cycle is not None and not (cycle.more_body or cycle.response_complete):
                self._disarm()  # the body is complete (a header timer waits only when idle)

        def _arm(self, seconds: float) -> None:
            self._disarm()
            self._timer = self.loop.call_later(seconds, self._expire)

        def _disarm(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _expire(self) -> None:
            self._timer = None
            cycle = self.cycle
            if cycle is not None and not cycle.response_complete:
                cycle.scope["state"]["timed_out"] = True  # for the metrics: 408, not cancelled
            if not self.transport.is_closing():
                self.transport.close()

    return GuardedH11Protocol
