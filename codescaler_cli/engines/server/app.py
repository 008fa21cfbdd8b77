"""``codescaler serve``: the scorer as an HTTP service (FastAPI on uvicorn).

Routes: ``POST /v1/rewards`` (native), ``POST /get_reward`` (OpenRLHF), ``POST /classify``
(vLLM's pooling API, for verl), ``GET /health``, ``GET /v1/models``, ``GET /metrics``.
Errors are vLLM's shape, ``{"error": {"message", "type", "param", "code"}}``, with a
one-line message: 400 bad input, 401 no or wrong key, 413 too large, 503 loading or
overloaded (with ``Retry-After``; both RL clients retry it), 504 timeout, 500 a failed
batch (the server keeps serving). SIGTERM and SIGINT stop accepting, finish what is in
flight, then exit 0.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from .service import RequestError, Service

OPEN_ROUTES = ("/health",)  # answered without the API key (load balancers, probes)
ROUTES = ("/v1/rewards", "/get_reward", "/classify", "/health", "/v1/models", "/metrics")


def create_app(service: Service) -> FastAPI:
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse, Response

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.start()
        try:
            yield
        finally:
            service.close()  # what is queued is scored before the process exits

    app = FastAPI(title="codescaler", lifespan=lifespan, docs_url=None, redoc_url=None)
    key = service.options.key()

    @app.middleware("http")
    async def guard(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        route = request.url.path
        # A scoring request is announced from its first byte: a forming batch waits for it.
        ticket = request.state.ticket = service.arrive(request.method == "POST")
        try:
            if key and route not in OPEN_ROUTES:
                given = request.headers.get("authorization", "")
                if not hmac.compare_digest(given.encode(), f"Bearer {key}".encode()):
                    raise RequestError(
                        401, "missing or wrong API key: send Authorization: Bearer KEY",
                        "AuthenticationError",
                    )  # fmt: skip
            length = request.headers.get("content-length")
            if length and length.isdigit() and int(length) > service.options.max_request_bytes:
                raise _too_large(service)
            response = await call_next(request)
        except RequestError as exc:
            response = error(exc)
        finally:
            ticket.leave()
        label = route if route in ROUTES else "other"  # any path must not become a series
        service.metrics.request(label, response.status_code, time.perf_counter() - started)
        return response

    def error(exc: RequestError) -> JSONResponse:
        body = {"error": {"message": str(exc), "type": exc.kind, "param": None, "code": exc.status}}
        headers = {"Retry-After": "1"} if exc.status == 503 else None
        return JSONResponse(body, status_code=exc.status, headers=headers)

    async def handle(request: Request, route: Callable[..., Awaitable[Any]]) -> Any:
        try:
            body = await _json_body(request, service)
            return JSONResponse(await route(body, request.state.ticket))
        except RequestError as exc:
            return error(exc)
        except Exception as exc:  # a failed batch: this request gets a 500, others go on
            text = (str(exc).strip() or type(exc).__name__).splitlines()[0][:300]
            return error(
                RequestError(
                    500, f"scoring failed: {type(exc).__name__}: {text}", "InternalServerError"
                )
            )

    @app.post("/v1/rewards")
    async def rewards(request: Request) -> Any:
        return await handle(request, service.rewards)

    @app.post("/get_reward")
    async def get_reward(request: Request) -> Any:
        return await handle(request, service.get_reward)

    @app.post("/classify")
    async def classify(request: Request) -> Any:
        return await handle(request, service.classify)

    @app.get("/health")
    async def health() -> Any:
        if service.ready.is_set():
            return {"status": "ready", "model": service.name}
        if service.failed.is_set():
            return JSONResponse({"status": "failed", "error": str(service.error)}, status_code=503)
        return JSONResponse({"status": "loading"}, status_code=503, headers={"Retry-After": "1"})

    @app.get("/v1/models")
    async def models() -> Any:
        return service.models()

    @app.get("/metrics")
    async def metrics() -> Any:
        body, kind = service.metrics.exposition()
        return Response(body, media_type=kind)

    return app


async def _json_body(request: Request, service: Service) -> dict[str, Any]:
    limit = service.options.max_request_bytes
    parts, size = [], 0
    async for part in request.stream():  # chunked uploads too: stop at the limit
        size += len(part)
        if size > limit:
            raise _too_large(service)
        parts.append(part)
    try:
        data = json.loads(b"".join(parts))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RequestError(400, f"the body is not valid JSON ({exc})") from None
    except RecursionError:
        raise RequestError(400, "the body is nested too deeply") from None
    if not isinstance(data, dict):
        raise RequestError(400, "the body must be a JSON object")
    return data


def _too_large(service: Service) -> RequestError:
    limit = service.options.max_request_bytes
    return RequestError(413, f"request body over --max-request-bytes {limit}", "RequestTooLarge")


def serve(service: Service) -> None:
    """Run until SIGTERM or SIGINT (then finish what is in flight). A model that cannot load
    stops the server and is raised."""
    import threading

    import uvicorn

    opts = service.options

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            super().handle_exit(sig, frame)
            # A stop on SIGTERM/SIGINT is a clean exit (0): uvicorn would re-raise the
            # signal once drained, and the process would die of it.
            self._captured_signals.clear()

    config = uvicorn.Config(
        create_app(service), host=opts.host, port=opts.port, log_level="warning", access_log=False
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
    print(
        f"codescaler serve: listening on {where}; loading {service.name}",
        file=sys.stderr,
        flush=True,
    )
    server.run()
    if service.error is not None:
        raise service.error
