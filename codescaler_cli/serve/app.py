"""``codescaler serve``: the scorer as an HTTP service (FastAPI on uvicorn).

Routes: ``POST /v1/rewards`` (native), ``POST /get_reward`` (OpenRLHF), ``POST /classify``
(vLLM's pooling API, for verl), ``GET``/``HEAD`` ``/health``, ``/v1/models``, ``/metrics``.
Every error, 404 and 405 included, is vLLM's shape, ``{"error": {"message", "type",
"param", "code"}}``, with a one-line message: 400 bad input, 401 no or wrong key, 413 too
large, 503 loading, overloaded or stopping (with ``Retry-After``; both RL clients retry
it), 504 timeout, 500 a failed batch (the server keeps serving). A request whose client
leaves is dropped (counted as ``cancelled``). SIGTERM and SIGINT stop accepting, finish
what they can within ``--shutdown-timeout``, then exit 0.
"""

from __future__ import annotations

import asyncio
import hmac
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from ..errors import describe_error
from . import routes
from .body import ClientGone, RequestError, decode_json
from .prep import Client
from .protocol import guarded_protocol
from .service import Service

OPEN_ROUTES = ("/health",)  # answered without the API key (load balancers, probes)
ROUTES = ("/v1/rewards", "/get_reward", "/classify", "/health", "/v1/models", "/metrics")
CLIENT_GONE = 499  # nginx's "client closed request": never sent, counted as cancelled
SHUTDOWN_MARGIN = 1.5  # seconds of the grace period kept for closing down after the drain

ASGIApp = Callable[[dict, Callable, Callable], Awaitable[None]]


def error_response(exc: RequestError, headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": {"message": str(exc), "type": exc.kind, "param": None, "code": exc.status}}
    headers = dict(headers or {})
    if exc.status == 503:
        headers["Retry-After"] = "1"
    return JSONResponse(body, status_code=exc.status, headers=headers or None)


class Guard:
    """ASGI middleware in front of every route: the API key, framing and size checks made
    on the headers alone (the body is not read: the connection is closed), the batcher's
    announcement of a scoring request, and the request metrics."""

    def __init__(self, app: ASGIApp, service: Service) -> None:
        self.app = app
        self.service = service
        key = service.options.key()
        self.key = key.encode() if key else None

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what uvicorn answers if the app fails before responding

        async def send_status(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        # A scoring request is announced from its first byte: a forming batch waits for it.
        ticket = self.service.arrive(scope["method"] == "POST")
        state = scope.setdefault("state", {})
        state["ticket"] = ticket
        try:
            refusal = self._refuse(scope)
            if refusal is None:
                await self.app(scope, receive, send_status)
            else:
                response = error_response(refusal, {"Connection": "close"})
                await response(scope, receive, send_status)
        finally:
            ticket.leave()
            label = "408" if state.get("timed_out") else str(status)
            label = "cancelled" if status == CLIENT_GONE and label != "408" else label
            route = scope["path"] if scope["path"] in ROUTES else "other"  # never a new series
            self.service.metrics.request(route, label, time.perf_counter() - started)

    def _refuse(self, scope: dict) -> RequestError | None:
        headers: dict[bytes, bytes] = {}
        for name, value in scope["headers"]:
            headers.setdefault(name, value)
        if self.key is not None and scope["path"] not in OPEN_ROUTES:
            scheme, _, token = headers.get(b"authorization", b"").strip().partition(b" ")
            # Constant time: the comparison does not tell how much of a guess was right.
            if not hmac.compare_digest(token.strip(), self.key) or scheme.lower() != b"bearer":
                return RequestError(
                    401, "missing or wrong API key: send Authorization: Bearer KEY",
                    "AuthenticationError",
                )  # fmt: skip
        if b"transfer-encoding" in headers and b"content-length" in headers:
            return RequestError(
                400, "Content-Length and Transfer-Encoding together are ambiguous; send one"
            )
        length = headers.get(b"content-length", b"")
        limit = self.service.options.max_request_bytes
        if length.isdigit() and int(length) > limit:
            return _too_large(limit)
        return None


def create_app(service: Service) -> ASGIApp:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.start()
        try:
            yield
        finally:
            service.close()  # what is queued is scored, within the grace period

    app = FastAPI(title="codescaler", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.openapi_url = None  # type: ignore[assignment]

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        if exc.status_code == 404:
            error = RequestError(
                404, f"no such route; routes: {', '.join(ROUTES)}", "NotFoundError"
            )
        elif exc.status_code == 405:
            allowed = (exc.headers or {}).get("Allow", "")
            error = RequestError(
                405, f"{request.method} is not allowed on this route (allowed: {allowed})",
                "MethodNotAllowed",
            )  # fmt: skip
        else:
            error = RequestError(exc.status_code, str(exc.detail).splitlines()[0][:300], "Error")
        return error_response(error, exc.headers)

    async def handle(request: Request, route: Callable[..., Awaitable[Any]]) -> Response:
        client = None
        try:
            raw = await _read_body(request, service.options.max_request_bytes)
            client = Client(request.receive)
            large = len(raw) > service.large_bytes
            if large:
                request.state.ticket.leave()  # not on its way soon: batches do not wait for it
                await service.await_turn(client)
            body = (
                await service.prep.call(decode_json, raw, low=True) if large else decode_json(raw)
            )
            return JSONResponse(await route(service, body, request.state.ticket, client))
        except ClientGone:
            return Response(status_code=CLIENT_GONE)
        except asyncio.CancelledError:  # the grace period is over: answer, if still possible
            return error_response(_stopping())
        except RequestError as exc:
            return error_response(exc)
        except Exception as exc:  # a failed batch: this request gets a 500, others go on
            text = f"scoring failed: {describe_error(exc)}"
            return error_response(RequestError(500, text, "InternalServerError"))
        finally:
            if client is not None:
                client.close()

    @app.post("/v1/rewards")
    async def rewards(request: Request) -> Response:
        return await handle(request, routes.rewards)

    @app.post("/get_reward")
    async def get_reward(request: Request) -> Response:
        return await handle(request, routes.get_reward)

    @app.post("/classify")
    async def classify(request: Request) -> Response:
        return await handle(request, routes.classify)

    @app.api_route("/health", methods=["GET", "HEAD"])
    async def health() -> Any:
        if service.ready.is_set():
            return {"status": "ready", "model": service.name}
        if service.failed.is_set():
            return JSONResponse({"status": "failed", "error": str(service.error)}, status_code=503)
        return JSONResponse({"status": "loading"}, status_code=503, headers={"Retry-After": "1"})

    @app.api_route("/v1/models", methods=["GET", "HEAD"])
    async def models() -> Any:
        return service.models()

    @app.api_route("/metrics", methods=["GET", "HEAD"])
    async def metrics() -> Any:
        body, kind = service.metrics.exposition()
        return Response(body, media_type=kind)

    return Guard(app, service)


async def _read_body(request: Request, limit: int) -> bytes:
    parts, size = [], 0
    try:
        async for part in request.stream():  # chunked uploads too: stop at the limit
            size += len(part)
            if size > limit:
                raise _too_large(limit)
            parts.append(part)
    except ClientDisconnect:  # the client left, or its body timed out
        raise ClientGone() from None
    return b"".join(parts)


def _stopping() -> RequestError:
    return RequestError(503, "the server is shutting down", "ServiceUnavailable")


def _too_large(limit: int) -> RequestError:
    return RequestError(413, f"request body over --max-request-bytes {limit}", "RequestTooLarge")


def serve(service: Service) -> None:
    """Run until SIGTERM or SIGINT (then finish what it can within the grace period). A
    model that cannot load stops the server and is raised."""
    import threading

    import uvicorn

    opts = service.options
    grace = opts.shutdown_timeout_s
    drain = max(grace - SHUTDOWN_MARGIN, grace / 4)  # the rest is for closing down

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            service.begin_shutdown(drain)
            super().handle_exit(sig, frame)
            # A stop on SIGTERM/SIGINT is a clean exit (0): uvicorn would re-raise the
            # signal once drained, and the process would die of it.
            self._captured_signals.clear()

    config = uvicorn.Config(
        create_app(service),
        host=opts.host,
        port=opts.port,
        log_level="warning",
        access_log=False,
        http=guarded_protocol(opts.header_timeout_s, opts.body_timeout_s),
        timeout_graceful_shutdown=drain,  # type: ignore[arg-type]
    )
    server = Server(config)

    def watch() -> None:
        while not (service.ready.is_set() or service.failed.wait(0.1)):
            pass
        if service.failed.is_set():
            server.should_exit = True
        else:
            print(f"codescaler serve: {service.name} ready", file=sys.stderr, flush=True)

    threading.Thread(target=watch, daemon=True).start()
    where = f"http://{opts.host}:{opts.port}"
    auth = (
        "API key required (every route but /health)"
        if opts.key()
        else "no API key: anyone who can reach the port can use it"
    )
    print(
        f"codescaler serve: listening on {where}; {auth}; loading {service.name}",
        file=sys.stderr,
        flush=True,
    )
    server.run()
    if service.error is not None:
        raise service.error
