"""What rerank and eval-pairs share: the output's lock and checks, scoring through the
normal (chunked) run into a temporary Parquet file, and a writer that streams the result.

Both need every row of a problem (or every pair) before they can answer, so they read
their input more than once (streams are first copied to files: io/inputs.copy_streams);
memory stays bounded by the chunk size, never the file.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import IO, TYPE_CHECKING, Any, TypeVar

from ..config import ResumeMode, RunOptions, output_format
from ..engines.base import Engine
from ..engines.loop import run
from ..io.inputs import InputSpec
from ..io.lock import holding
from ..io.paths import check_paths
from ..io.records import note_written
from ..io.writers import RowsWriter, atomic_path
from ..progress import Progress, RunSummary
from ..tables import decoded_rows, json_columns

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


def score_to_parquet(
    specs: list[InputSpec],
    opts: RunOptions,
    engine: EngineFactory | None,
    progress: Progress | None,
    tmp: str,
) -> tuple[str, RunSummary]:
    """Score ``specs`` with the normal run into ``tmp``/scored.parquet."""
    scored = replace(opts, output=os.path.join(tmp, "scored.parquet"), resume=ResumeMode.never)
    eng = engine(scored) if engine is not None else None
    summary = run(specs, scored, eng, progress=progress)
    return scored.output, summary


class TableWriter:
    """Streams record batches to ``output``: Parquet, JSON Lines, a ``.json`` array
    (io/writers.RowsWriter), or ``-`` (JSON Lines on stdout). A file appears complete or
    not at all."""

    def __init__(self, output: str, schema: pa.Schema, stdout: IO[str] | None = None) -> None:
        self.output = output
        self.json_columns = json_columns(schema)
        self.tmp: str | None = None
        self.parquet: Any = None
        self.text: IO[str] | None = None
        if output == "-":
            self.text = stdout if stdout is not None else sys.stdout
            self.rows = RowsWriter(self.text, output)
            return
        fd, self.tmp = atomic_path(output)
        if output_format(output) == "parquet":
            import pyarrow.parquet as pq

            os.close(fd)
            self.parquet = pq.ParquetWriter(self.tmp, schema)
        else:
            self.text = os.fdopen(fd, "w", encoding="utf-8")
        self.rows = RowsWriter(self.text, output) if self.text is not None else None

    def write(self, table: pa.Table) -> None:
        if self.parquet is not None:
            self.parquet.write_table(table)
        else:
            assert self.rows is not None
            self.rows.write(decoded_rows(table.to_pylist(), self.json_columns))

    def close(self) -> None:
        if self.rows is not None:
            self.rows.close()
        if self.tmp is None:  # stdout
            assert self.text is not None
            self.text.flush()
            return
        if self.parquet is not None:
            self.parquet.close()
        else:
            assert self.text is not None
            self.text.close()
        os.replace(self.tmp, self.output)
        self.tmp = None
        note_written([self.output])  # codescaler's: never read back as fresh input

    def abort(self) -> None:
        if self.parquet is not None:
            self.parquet.close()
        if self.text is not None and self.tmp is not None:
            self.text.close()
        if self.tmp and os.path.exists(self.tmp):
            os.unlink(self.tmp)
