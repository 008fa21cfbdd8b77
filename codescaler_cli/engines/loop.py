"""The one resumable run loop: read chunk -> (engine: extract, score, shape) -> checkpoint -> merge.

Every engine runs inside this loop, so chunking, field detection, resuming, bad-row
handling, output formats and the final atomic merge are the same whichever engine
scores. Finished chunks live in ``OUTPUT.partial/`` until the run ends (io/checkpoint.py).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import IO, Any

from ..config import OnBadRow, ResumeMode, RunOptions
from ..errors import BadRowError, InputError, UsageError
from ..fields import InputFields
from ..io.checkpoint import PartialRun, PartInfo
from ..io.inputs import InputSpec, fingerprint_inputs
from ..io.paths import check_output_path, output_dir
from ..io.readers import BadRow, count_rows
from ..io.source import chunk_refs
from ..io.writers import StdoutWriter
from ..progress import Progress, RunSummary
from ..stages import (
    ChunkResult,
    default_rejected_path,
    rejected_rows,
    row_provenance,
    summarize_chunk,
)
from ..tables import json_columns, with_json_columns
from .base import Engine, Work


def run(
    specs: list[InputSpec],
    opts: RunOptions,
    engine: Engine | None = None,
    *,
    progress: Progress | None = None,
    stdin: IO[bytes] | None = None,
    stdout: IO[str] | None = None,
) -> RunSummary:
    """Run extraction (and scoring when ``opts.rows.score``) over ``specs`` with ``engine``
    (default: this process). ``opts.output`` may be a file, ``-`` (JSON Lines on stdout),
    or a directory ending with ``/`` (Parquet parts in input order)."""
    opts.validate()
    if engine is None:
        from .local import LocalEngine

        engine = LocalEngine(opts)
    out_dir = output_dir(opts.output)
    check_output_path(out_dir or opts.output, specs, directory=out_dir is not None)
    progress = progress or Progress()
    started = time.perf_counter()
    summary = RunSummary(output=opts.output)
    base = out_dir or opts.output
    rejected_path = opts.rejected or default_rejected_path(base, specs)
    writer = StdoutWriter(stdout, rejected_path) if opts.output == "-" else None
    progress.start(count_rows(specs))
    partial: PartialRun | None = None
    try:
        with engine.session(progress):
            if writer is None:
                partial = PartialRun(base, run_fingerprint(specs, opts, engine.device()))
                # stdin cannot be fingerprinted, so a run reading it never resumes.
                stdin_read = any(s.kind == "stdin" for s in specs)
                msg = partial.open(ResumeMode.never if stdin_read else opts.resume)
                if msg:
                    progress.message(msg)
                for i in sorted(partial.parts):
                    _add_resumed(summary, partial, i)
                    progress.advance(partial.parts[i].rows_written, 0)
            fields = InputFields(opts.rows.question_field, opts.rows.response_field)
            refs = chunk_refs(specs, opts.chunk_size, stdin, ranges=engine.reads_ranges)
            gate = ErrorGate(opts.on_bad_row, set(partial.parts) if partial else set())
            meta: dict[str, str] | None = None

            def work() -> Iterator[Work]:
                for ref in refs:
                    found = fields.fields_for(ref)  # every chunk: they may be the first rows
                    if partial is None or not partial.done(ref.index):
                        yield Work(ref, found)

            for result in engine.score(work(), progress):
                gate.add(result.index, result.bad)
                summarize_chunk(summary, result)
                if meta is None:
                    meta = _metadata(opts, fields, engine, partial)
                rejected = rejected_rows(result.bad)
                if partial is not None:
                    table = with_json_columns(
                        result.table.replace_schema_metadata(meta),
                        json_columns(result.table.schema),
                    )
                    info = PartInfo(
                        result.n_read, table.num_rows, len(result.bad), result.unique_scored
                    )
                    partial.write_part(result.index, table, rejected, info)
                else:
                    assert writer is not None
                    writer.add(result.index, result.table, rejected)
            gate.finish()
            if not fields.by_input:
                raise InputError(f"{specs[0].name}: input has no rows")
            meta = meta or _metadata(opts, fields, engine, partial)
            if partial is not None:
                if out_dir is not None:
                    partial.finalize_dir(out_dir, meta, rejected_path)
                else:
                    partial.finalize(meta, rejected_path)
            elif writer is not None:
                writer.finish()
            if summary.rejected:
                summary.rejected_path = rejected_path
            summary.forward_calls = engine.forward_calls
    except (InputError, UsageError):
        # Bad input: a later run needs a changed input, so the partial work is useless.
        if partial is not None:
            partial.discard()
        raise
    finally:
        if writer is not None:
            writer.close()
        progress.stop()
        summary.seconds = time.perf_counter() - started
    return summary


def run_fingerprint(specs: list[InputSpec], opts: RunOptions, device: str | None) -> dict[str, Any]:
    """What a resumed run must share with the interrupted one."""
    fp: dict[str, Any] = {"inputs": fingerprint_inputs(specs), **opts.fingerprint()}
    if opts.rows.score:
        from ..model.load import model_fingerprint

        fp["model"] = model_fingerprint(opts.model, device)
    return fp


def _metadata(
    opts: RunOptions, fields: InputFields, engine: Engine, partial: PartialRun | None
) -> dict[str, str]:
    """The output's provenance: the rows' options, and the model that scored them (from the
    engine, or from a part an earlier run scored)."""
    meta = row_provenance(opts.rows, *fields.named())
    if not opts.rows.score:
        return meta
    model = engine.model_meta()
    if model is None and partial is not None and partial.parts:
        old = partial.part_meta(min(partial.parts))
        model = {k: v for k, v in old.items() if k not in meta}
    return {**meta, **(model or {})}


def _add_resumed(summary: RunSummary, partial: PartialRun, index: int) -> None:
    """Count a chunk finished by an earlier, interrupted run."""
    info = partial.parts[index]
    result = ChunkResult(partial.read_part(index), [], info.unique_scored, index, info.rows_read)
    summarize_chunk(summary, result)
    summary.rejected += info.rejected
    summary.chunks_resumed += 1


class ErrorGate:
    """``--on-bad-row error``: raise the first bad row in input order, as soon as every
    chunk before it has finished (an engine may finish chunks in any order)."""

    def __init__(self, mode: OnBadRow, done: set[int]) -> None:
        self.mode = mode
        self.done = done
        self.first: tuple[int, BadRow] | None = None
        self.next = 0

    def add(self, index: int, bad: list[BadRow]) -> None:
        self.done.add(index)
        if self.mode == OnBadRow.error and bad and (self.first is None or index < self.first[0]):
            self.first = (index, bad[0])  # chunks list their bad rows in file order
        while self.next in self.done:
            self.next += 1
        if self.first is not None and self.next >= self.first[0]:
            self.finish()

    def finish(self) -> None:
        if self.first is not None:
            b = self.first[1]
            raise BadRowError(b.location, b.reason)
