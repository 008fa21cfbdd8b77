"""`codescaler serve`: the reward model as an HTTP service for RL trainers."""

from __future__ import annotations

from typing import Annotated

from ..config import (
    CacheOptions,
    ExtractMode,
    ModelOptions,
    RowOptions,
    ScoringOptions,
    ServeOptions,
)
from .groups import cache_options, model_options, reward_row_options, scoring_options, uses
from .options import choices, option

SERVER = "Server"
LIMITS = "Limits"
D = ServeOptions


def server_options(
    host: Annotated[
        str,
        option(
            "--host",
            help="Address to listen on; 0.0.0.0 listens on all interfaces.",
            panel=SERVER,
            metavar="ADDR",
        ),
    ] = D.host,
    port: Annotated[
        int, option("--port", help="Port to listen on.", panel=SERVER, metavar="N")
    ] = D.port,
    api_key: Annotated[
        str | None,
        option(
            "--api-key",
            help="Require Authorization: Bearer KEY on every route but /health "
            "\\[default: $CODESCALER_API_KEY, else none; an empty key is an error].",
            panel=SERVER,
            metavar="KEY",
            show_default=False,
        ),
    ] = None,
    classify_extract: Annotated[
        ExtractMode,
        option(
            "--classify-extract",
            help=f"/classify: how the assistant turn is read, {choices(ExtractMode)} (none "
            "scores the text as given, like vLLM).",
            panel=SERVER,
            metavar="MODE",
        ),
    ] = D.classify_extract,
    served_model_name: Annotated[
        str | None,
        option(
            "--served-model-name",
            help="Model name in responses \\[default: --model].",
            panel=SERVER,
            metavar="NAME",
        ),
    ] = None,
    batch_window_ms: Annotated[
        float,
        option(
            "--batch-window-ms",
            help="How long a batch waits for more requests after the first.",
            panel=LIMITS,
            metavar="MS",
        ),
    ] = D.batch_window_ms,
    batch_tokens: Annotated[
        int,
        option(
            "--batch-tokens",
            help="About this many waiting tokens close a batch at once.",
            panel=LIMITS,
            metavar="N",
        ),
    ] = D.batch_tokens,
    max_queue: Annotated[
        int,
        option(
            "--max-queue",
            help="Candidates waiting at most; more get 503.",
            panel=LIMITS,
            metavar="N",
        ),
    ] = D.max_queue,
    max_items: Annotated[
        int,
        option(
            "--max-items", help="Candidates per request at most (413).", panel=LIMITS, metavar="N"
        ),
    ] = D.max_items,
    max_request_bytes: Annotated[
        int,
        option(
            "--max-request-bytes",
            help="Request body size at most (413).",
            panel=LIMITS,
            metavar="N",
        ),
    ] = D.max_request_bytes,
    request_timeout: Annotated[
        float,
        option(
            "--request-timeout",
            help="Seconds a request may wait for scores (504).",
            panel=LIMITS,
            metavar="S",
        ),
    ] = D.request_timeout_s,
    header_timeout: Annotated[
        float,
        option(
            "--header-timeout",
            help="Seconds a request may take to send its headers; slower connections are closed.",
            panel=LIMITS,
            metavar="S",
        ),
    ] = D.header_timeout_s,
    body_timeout: Annotated[
        float,
        option(
            "--body-timeout",
            help="Seconds a request may take to send its body after its headers.",
            panel=LIMITS,
            metavar="S",
        ),
    ] = D.body_timeout_s,
    shutdown_timeout: Annotated[
        float,
        option(
            "--shutdown-timeout",
            help="After SIGTERM or Ctrl-C, seconds to finish what is in flight before exiting.",
            panel=LIMITS,
            metavar="S",
        ),
    ] = D.shutdown_timeout_s,
) -> ServeOptions:
    opts = ServeOptions(
        host=host,
        port=port,
        api_key=api_key,
        classify_extract=classify_extract,
        served_model_name=served_model_name,
        batch_window_ms=batch_window_ms,
        batch_tokens=batch_tokens,
        max_queue=max_queue,
        max_request_bytes=max_request_bytes,
        max_items=max_items,
        request_timeout_s=request_timeout,
        header_timeout_s=header_timeout,
        body_timeout_s=body_timeout,
        shutdown_timeout_s=shutdown_timeout,
    )
    opts.validate()
    return opts


@uses(
    server=server_options,
    rows=reward_row_options,
    model=model_options,
    scoring=scoring_options,
    cache=cache_options,
)
def serve(
    server: ServeOptions,
    rows: RowOptions,
    model: ModelOptions,
    scoring: ScoringOptions,
    cache: CacheOptions,
) -> None:
    """Serve the reward model over HTTP for RL trainers (OpenRLHF, verl) and scripts.

    Routes: POST /v1/rewards (native), POST /get_reward (OpenRLHF), POST /classify (vLLM's
    API, for verl), GET /health, GET /v1/models, GET /metrics. Concurrent requests are
    scored together; every score equals that candidate's score alone. The trainer's prompt
    is trusted, the response is content: nothing it writes moves a turn boundary or picks
    its question (docs/serve.md). Needs the serve extra: pip install
    'codescaler-cli\\[serve]'.
    """
    from ..errors import MissingDependencyError

    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise MissingDependencyError(
            "codescaler serve needs the serve extra: pip install 'codescaler-cli[serve]'"
        ) from None
    from ..serve.app import serve as run_server
    from ..serve.service import Service

    run_server(Service(model, scoring, rows, server, cache=cache))
    # Stopped cleanly: every answer is sent and the sockets are closed. Skip the
    # interpreter's teardown of torch and the model (seconds on a busy machine), so that a
    # stop ends within --shutdown-timeout.
    import logging
    import os
    import sys

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
