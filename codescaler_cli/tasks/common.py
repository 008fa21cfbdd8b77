"""What rerank and eval-pairs share: every row read up front, scoring into a temporary
Parquet file through the normal (chunked) run, and writing the result.

Both need every row of a problem (or every pair) before they can answer, and both check
their inputs and options before any scoring starts.
"""

from __future__ import annotations

import functools
import io
import os
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import IO, TYPE_CHECKING, Any, TypeVar

from ..config import ResumeMode, RunOptions
from ..engines.base import Engine
from ..engines.loop import run
from ..errors import InputError
from ..io.inputs import InputSpec
from ..io.lock import holding
from ..io.paths import check_paths
from ..io.readers import iter_chunks
from ..io.writers import dumps_row, write_table_atomic
from ..progress import Progress, RunSummary

if TYPE_CHECKING:
    import pyarrow as pa

EngineFactory = Callable[[RunOptions], Engine]
F = TypeVar("F", bound=Callable[..., Any])


def task(func: F) -> F:
    """A task that writes ``opts.output`` (and the caller's ``side_outputs``, flag -> path):
    options and paths checked before any work, the output's lock held throughout."""

    @functools.wraps(func)
    def run_task(
        specs: list[InputSpec],
        opts: RunOptions,
        *,
        side_outputs: Mapping[str, str | None] | None = None,
        **kwargs: Any,
    ) -> Any:
        opts.validate()
        check_paths(specs, {"-o": opts.output, **(side_outputs or {})})
        with holding(opts.output):
            return func(specs, opts, **kwargs)

    return run_task  # type: ignore[return-value]


def load_rows(
    specs: list[InputSpec], opts: RunOptions, stdin: IO[bytes] | None
) -> tuple[IO[bytes] | None, list[dict[str, Any]], list[str]]:
    """Every row of the input, with its location (these tasks need them all)."""
    # These tasks read their input twice (check, then score): keep stdin in memory.
    if any(s.kind == "stdin" for s in specs):
        stdin = io.BytesIO((stdin or sys.stdin.buffer).read())
    records: list[dict[str, Any]] = []
    locations: list[str] = []
    for chunk in iter_chunks(specs, opts.chunk_size, stdin=stdin):
        if chunk.bad:
            b = chunk.bad[0]
            raise InputError(f"{b.location}: {b.reason}")
        records.extend(chunk.records)
        locations.extend(chunk.locations)
    if not records:
        raise InputError(f"{specs[0].name}: input has no rows")
    return stdin, records, locations


def score_to_table(
    specs: list[InputSpec],
    opts: RunOptions,
    engine: EngineFactory | None,
    progress: Progress | None,
    stdin: IO[bytes] | None,
) -> tuple[pa.Table, RunSummary]:
    """Score ``specs`` with the normal run into a temporary Parquet file; read it back."""
    import pyarrow.parquet as pq

    with tempfile.TemporaryDirectory(prefix="codescaler-") as tmp:
        scored = replace(opts, output=os.path.join(tmp, "scored.parquet"), resume=ResumeMode.never)
        if stdin is not None:
            stdin.seek(0)
        eng = engine(scored) if engine is not None else None
        summary = run(specs, scored, eng, progress=progress, stdin=stdin)
        return pq.read_table(scored.output), summary


def write_result(
    table: pa.Table, output: str, metadata: dict | None, stdout: IO[str] | None
) -> None:
    """The task's table to ``output`` (``-``: JSON Lines on stdout), with the scores'
    provenance."""
    if output == "-":
        out = stdout if stdout is not None else sys.stdout
        for row in table.to_pylist():
            out.write(dumps_row(row) + "\n")
        out.flush()
        return
    meta = {
        k.decode(): v.decode() for k, v in (metadata or {}).items() if k.startswith(b"codescaler.")
    }
    write_table_atomic(table, output, meta or None)
