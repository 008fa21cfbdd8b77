"""The one resumable run loop: read chunk -> (engine: extract, score, shape) -> checkpoint -> merge.

Every engine runs inside this loop, so path checks, the output's lock, chunking, field
detection, resuming, bad-row handling, output formats and the final atomic merge are the
same whichever engine scores. Finished chunks live in ``OUTPUT.partial/`` until the run
ends (io/checkpoint.py); a run that fails before finishing a chunk leaves nothing there.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping
from typing import IO, Any

from ..config import OnBadRow, ResumeMode, RunOptions
from ..errors import BadRowError, InputError, UsageError
from ..fields import InputFields
from ..io.checkpoint import PART_KEYS, PartialRun, PartInfo
from ..io.inputs import InputSpec, fingerprint_inputs
from ..io.jsonl import BadRow
from ..io.lock import OutputLock
from ..io.paths import check_paths, output_dir
from ..io.readers import count_rows
from ..io.source import chunk_refs
from ..io.writers import StdoutWriter, remove_stale_temporaries
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
    side_outputs: Mapping[str, str | None] | None = None,
) -> RunSummary:
    """Run extraction (and scoring when ``opts.rows.score``) over ``specs`` with ``engine``
    (default: this process). ``opts.output`` may be a file, ``-`` (JSON Lines on stdout),
    or a directory ending with ``/`` (Parquet parts in input order). ``side_outputs``:
    other files the caller writes afterwards (flag -> path), checked with the rest."""
    opts.validate()
    base = output_dir(opts.output) or opts.output
    rejected_path = opts.rejected or default_rejected_path(base, specs)
    check_paths(specs, {"-o": opts.output, "--rejected": rejected_path, **(side_outputs or {})})
    if engine is None:
        from .local import LocalEngine

        engine = LocalEngine(opts)
    progress = progress or Progress()
    started = time.perf_counter()
    summary = RunSummary(output=opts.output)
    sink = _Sink(opts, specs, rejected_path, stdout)
    try:
        sink.lock()
        progress.start(count_rows(specs))
        for note in (n for s in specs for n in s.notices):  # inputs skipped or read once
            progress.message(note)
        with engine.session(progress):
            sink.open(run_fingerprint(specs, opts, engine.device()), progress, summary)
            fields = InputFields(opts.rows.question_field, opts.rows.response_field)
            refs = chunk_refs(specs, opts.chunk_size, stdin, ranges=engine.reads_ranges)
            resumed = sink.done()
            gate = ErrorGate(opts.on_bad_row, set(resumed))

            def work() -> Iterator[Work]:
                for ref in refs:
                    found = fields.fields_for(ref)  # every chunk: they may be the first rows
                    if ref.index not in resumed:
                        yield Work(ref, found)

            # Closed on the way out, even on an error: a pipe's reader lets go of it now,
            # not whenever the traceback holding its frame is dropped.
            with (
                contextlib.closing(refs),
                contextlib.closing(engine.score(work(), progress)) as results,
            ):
                for result in results:
                    gate.add(result.index, result.bad)
                    summarize_chunk(summary, result)
                    sink.add(result, lambda: _metadata(opts, fields, engine, sink.partial))
            gate.finish()
            if not fields.by_input:
                raise InputError(f"{specs[0].name}: input has no rows")
            sink.finish(_metadata(opts, fields, engine, sink.partial), summary.cached)
            if summary.rejected:
                summary.rejected_path = rejected_path
            summary.forward_calls = engine.forward_calls
    except (InputError, UsageError):
        sink.fail(bad_input=True)
        raise
    except BaseException:
        sink.fail(bad_input=False)
        raise
    finally:
        sink.close()
        progress.stop()
        summary.seconds = time.perf_counter() - started
    return summary


class _Sink:
    """Where finished chunks go: checkpoint parts under the output's lock, or stdout."""

    def __init__(
        self, opts: RunOptions, specs: list[InputSpec], rejected: str, stdout: IO[str] | None
    ) -> None:
        self.opts = opts
        self.specs = specs
        self.rejected = rejected
        self.base = output_dir(opts.output) or opts.output
        self.writer = StdoutWriter(stdout, rejected) if opts.output == "-" else None
        self.output_lock: OutputLock | None = None
        self.partial: PartialRun | None = None
        self.meta: dict[str, str] | None = None

    def lock(self) -> None:
        """One writer per output, from before any other work until the run ends."""
        if self.writer is None:
            self.output_lock = OutputLock(self.base + ".partial", self.opts.output)
            self.output_lock.acquire()

    def open(self, fingerprint: dict[str, Any], progress: Progress, summary: RunSummary) -> None:
        lock = self.output_lock
        if lock is None:
            return
        if lock.previous_pid:
            progress.message(f"an earlier run (pid {lock.previous_pid}) stopped here; taking over")
        remove_stale_temporaries(self.rejected)
        self.partial = partial = PartialRun(self.base, fingerprint)
        # stdin and pipes cannot be fingerprinted, so a run reading one never resumes.
        reads_stream = any(s.is_stream for s in self.specs)
        msg = partial.open(ResumeMode.never if reads_stream else self.opts.resume)
        if msg:
            progress.message(msg)
        for i in sorted(partial.parts):
            _add_resumed(summary, partial, i)
            progress.advance(partial.parts[i].rows_written, 0)

    def done(self) -> set[int]:
        return set(self.partial.parts) if self.partial else set()

    def add(self, result: ChunkResult, metadata: Any) -> None:
        rejected = rejected_rows(result.bad)
        if self.partial is None:
            assert self.writer is not None
            self.writer.add(result.index, result.table, rejected)
            return
        self.meta = self.meta or metadata()
        meta = {**self.meta, **_cached_meta(self.opts, result.cached)}
        table = result.table.replace_schema_metadata(meta)
        table = with_json_columns(table, json_columns(result.table.schema))
        info = PartInfo(
            result.n_read, table.num_rows, len(result.bad), result.unique_scored, result.cached
        )
        self.partial.write_part(result.index, table, rejected, info)

    def finish(self, metadata: dict[str, str], cached: int) -> None:
        """``cached``: the run's rows from the score cache (a directory's parts each say
        their own, so none is written again for the total)."""
        if self.partial is None:
            assert self.writer is not None
            self.writer.finish()
            return
        directory = output_dir(self.opts.output)
        meta = self.meta or metadata
        if directory is not None:
            self.partial.finalize_dir(directory, meta, self.rejected)
        else:
            self.partial.finalize({**meta, **_cached_meta(self.opts, cached)}, self.rejected)

    def fail(self, bad_input: bool) -> None:
        """Keep finished chunks for a rerun, unless the input is at fault (a rerun needs a
        changed input) or none finished (nothing to resume): then no trace is left."""
        if self.partial is not None:
            if bad_input:
                self.partial.discard()
            if not self.partial.parts:
                self.partial.remove()
        elif self.output_lock is not None and self.output_lock.holds_new_dir:
            PartialRun(self.base, {}).remove()  # ours, and nothing of an earlier run in it

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.output_lock is not None:
            self.output_lock.release()


def run_fingerprint(specs: list[InputSpec], opts: RunOptions, device: str | None) -> dict[str, Any]:
    """What a resumed run must share with the interrupted one."""
    fp: dict[str, Any] = {"inputs": fingerprint_inputs(specs), **opts.fingerprint()}
    if opts.rows.score:
        from ..model.fingerprint import model_fingerprint

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
        model = {k: v for k, v in old.items() if k not in meta and k.startswith("codescaler.")}
        for key in ("codescaler.json_columns", "codescaler.cache", *PART_KEYS):
            model.pop(key, None)
    cache = opts.cache.directory() if opts.cache.enabled else "off"
    return {**meta, **(model or {}), "codescaler.cache": cache}


def _cached_meta(opts: RunOptions, cached: int) -> dict[str, str]:
    """How many rows came from the score cache (scoring runs only)."""
    return {"codescaler.cached_rows": str(cached)} if opts.rows.score else {}


def _add_resumed(summary: RunSummary, partial: PartialRun, index: int) -> None:
    """Count a chunk finished by an earlier, interrupted run."""
    info = partial.parts[index]
    result = ChunkResult(
        partial.read_part(index), [], info.unique_scored, index, info.rows_read, cached=info.cached
    )
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
