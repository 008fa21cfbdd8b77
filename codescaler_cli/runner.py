"""The local engine: stream chunks through the pipeline into a resumable output."""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import IO, TYPE_CHECKING, Any

from .checkpoint import PartialRun, PartInfo
from .errors import InputError, UsageError
from .io import (
    Chunk,
    InputSpec,
    atomic_path,
    check_output_path,
    count_rows,
    dumps_row,
    fingerprint_inputs,
    iter_chunks,
    output_format,
)
from .model import ModelOptions, RewardModel
from .pipeline import (
    Fields,
    PipelineOptions,
    PreparedChunk,
    Progress,
    RunSummary,
    default_rejected_path,
    finish_chunk,
    first_fields,
    prepare_chunk,
    provenance,
    rejected_rows,
    summarize_chunk,
)
from .scoring import Scorer, ScoringOptions

if TYPE_CHECKING:
    import pyarrow as pa

DEFAULT_CHUNK_SIZE = 50_000


@dataclass
class RunConfig:
    output: str
    pipeline: PipelineOptions = field(default_factory=PipelineOptions)
    model: ModelOptions = field(default_factory=ModelOptions)
    scoring: ScoringOptions = field(default_factory=ScoringOptions)
    chunk_size: int = DEFAULT_CHUNK_SIZE
    resume: str = "auto"  # auto | never
    on_bad_row: str = "error"  # error | skip
    rejected_path: str | None = None


def check_config(cfg: RunConfig) -> None:
    if cfg.chunk_size < 1:
        raise UsageError("--chunk-size must be >= 1")
    if cfg.resume not in ("auto", "never"):
        raise UsageError("--resume must be 'auto' or 'never'")
    if cfg.on_bad_row not in ("error", "skip"):
        raise UsageError("--on-bad-row must be 'error' or 'skip'")
    from .extract import EXTRACT_MODES
    from .shaping import SHAPINGS

    if cfg.pipeline.extract_mode not in EXTRACT_MODES:
        raise UsageError(f"--extract must be one of {', '.join(EXTRACT_MODES)}")
    if cfg.pipeline.shaping not in SHAPINGS:
        raise UsageError(f"--shaping must be one of {', '.join(SHAPINGS)}")
    if cfg.pipeline.max_length < 8:
        raise UsageError("--max-length must be at least 8")
    output_format(cfg.output)


def run_fingerprint(
    specs: list[InputSpec], cfg: RunConfig, device: str | None = None
) -> dict[str, Any]:
    """What a resumed run must share with the interrupted one. ``device``: where the model
    runs when that is not this process (Ray workers); default: resolved here."""
    fp: dict[str, Any] = {
        "inputs": fingerprint_inputs(specs),
        "pipeline": cfg.pipeline.fingerprint(),
        "chunk_size": cfg.chunk_size,
        "on_bad_row": cfg.on_bad_row,
    }
    if cfg.pipeline.score:
        import torch

        from .model import dtype_name, resolve_device, resolve_dtype

        m = cfg.model
        dev = torch.device(device) if device else resolve_device(m.device)
        fp["model"] = {
            "model": os.path.abspath(m.model) if os.path.isdir(m.model) else m.model,
            "revision": m.revision,
            "dtype": dtype_name(resolve_dtype(m.dtype, dev)),
            "device_type": dev.type,
        }
    return fp


def scoring_options(cfg: RunConfig) -> ScoringOptions:
    """The run's scoring options, with the pipeline's max length."""
    return ScoringOptions(**{**vars(cfg.scoring), "max_length": cfg.pipeline.max_length})


def run_job(
    specs: list[InputSpec],
    cfg: RunConfig,
    *,
    progress: Progress | None = None,
    reward_model: RewardModel | None = None,
    stdin: IO[bytes] | None = None,
    stdout: IO[str] | None = None,
) -> RunSummary:
    """Run extraction (and scoring when ``cfg.pipeline.score``) over ``specs``."""
    check_config(cfg)
    check_output_path(cfg.output, specs)
    progress = progress or Progress()
    started = time.perf_counter()
    summary = RunSummary(output=cfg.output)
    rejected_path = cfg.rejected_path or default_rejected_path(cfg.output, specs)
    scoring = cfg.pipeline.score
    state: dict[str, Any] = {"rm": reward_model, "scorer": None}

    def scorer() -> Scorer | None:
        if not scoring:
            return None
        if state["scorer"] is None:
            if state["rm"] is None:
                from .model import load_reward_model

                progress.message(f"loading model {cfg.model.model}")
                state["rm"] = load_reward_model(cfg.model)
            state["scorer"] = Scorer(state["rm"], scoring_options(cfg))
        return state["scorer"]

    to_stdout = cfg.output == "-"
    partial: PartialRun | None = None
    if not to_stdout:
        partial = PartialRun(cfg.output, run_fingerprint(specs, cfg))
    # stdin cannot be fingerprinted, so a run reading it never resumes.
    resume = "never" if any(s.kind == "stdin" for s in specs) else cfg.resume

    fields: Fields | None = None
    pipeline = cfg.pipeline
    writer = StdoutWriter(stdout, rejected_path) if to_stdout else None
    progress.start(count_rows(specs))
    try:
        if partial is not None:
            msg = partial.open(resume)
            if msg:
                progress.message(msg)
        chunks = iter_chunks(specs, cfg.chunk_size, stdin=stdin)

        def step() -> tuple[Chunk, PreparedChunk | None] | None:
            # Runs one chunk ahead in a worker thread: reading, extraction and tokenization
            # overlap with the forward passes of the previous chunk.
            nonlocal fields, pipeline
            chunk = next(chunks, None)
            if chunk is None:
                return None
            if fields is None:
                if not chunk.records and chunk.bad and cfg.on_bad_row == "skip":
                    # Nothing readable yet to detect the fields from: set the rows aside.
                    return chunk, PreparedChunk(chunk, [], list(chunk.bad), [], [])
                fields = first_fields(chunk, cfg.pipeline, specs[0].name)
                pipeline = replace(
                    cfg.pipeline, question_field=fields.question, response_field=fields.response
                )
            if partial is not None and partial.done(chunk.index):
                return chunk, None
            return chunk, prepare_chunk(chunk, fields, pipeline, scorer(), cfg.on_bad_row)

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="codescaler-prep") as pool:
            ahead = pool.submit(step)
            while (item := ahead.result()) is not None:
                ahead = pool.submit(step)
                chunk, prepared = item
                if prepared is None:
                    add_resumed(summary, partial, chunk.index)
                    progress.advance(partial.parts[chunk.index].rows_written, 0)
                    continue
                result = finish_chunk(prepared, pipeline, state["scorer"], progress)
                rejected = rejected_rows(result.bad)
                summarize_chunk(summary, result, chunk.n_read)
                if partial is not None:
                    info = PartInfo(
                        chunk.n_read, result.table.num_rows, len(result.bad), result.unique_scored
                    )
                    partial.write_part(chunk.index, result.table, rejected, info)
                else:
                    writer.add(chunk.index, result.table, rejected)
        if fields is None:
            raise InputError(f"{specs[0].name}: input has no rows")
        rm = state["rm"]
        if partial is not None:
            partial.finalize(provenance(rm, pipeline), rejected_path)
        if writer is not None:
            writer.finish()
        if summary.rejected:
            summary.rejected_path = rejected_path
        if rm is not None:
            summary.forward_calls = rm.forward_calls
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


def add_resumed(summary: RunSummary, partial: PartialRun, index: int) -> None:
    """Count a chunk finished by an earlier, interrupted run."""
    from .pipeline import ChunkResult

    info = partial.parts[index]
    result = ChunkResult(partial.read_part(index), [], info.unique_scored)
    summarize_chunk(summary, result, info.rows_read)
    summary.rejected += info.rejected
    summary.chunks_resumed += 1


class StdoutWriter:
    """``-o -``: JSON Lines in input order, each chunk written as soon as every earlier one
    is (the Ray engine's chunks finish out of order); rejected rows go to a file, atomically."""

    def __init__(self, stdout: IO[str] | None, rejected_path: str) -> None:
        self.out = stdout if stdout is not None else sys.stdout
        self.rejected_path = rejected_path
        self.pending: dict[int, tuple[pa.Table, list[dict[str, Any]]]] = {}
        self.next = 0
        self.rejected_fh: IO[str] | None = None
        self.rejected_tmp: str | None = None

    def add(self, index: int, table: pa.Table, rejected: list[dict[str, Any]]) -> None:
        self.pending[index] = (table, rejected)
        while self.next in self.pending:
            table, rejected = self.pending.pop(self.next)
            for row in table.to_pylist():
                self.out.write(dumps_row(row) + "\n")
            self.out.flush()
            if rejected:
                if self.rejected_fh is None:
                    fd, self.rejected_tmp = atomic_path(self.rejected_path)
                    self.rejected_fh = os.fdopen(fd, "w", encoding="utf-8")
                for row in rejected:
                    self.rejected_fh.write(dumps_row(row) + "\n")
            self.next += 1

    def finish(self) -> None:
        if self.rejected_fh is not None:
            self.rejected_fh.close()
            self.rejected_fh = None
            os.replace(self.rejected_tmp, self.rejected_path)  # type: ignore[arg-type]

    def close(self) -> None:
        if self.rejected_fh is not None:
            self.rejected_fh.close()
            if self.rejected_tmp and os.path.exists(self.rejected_tmp):
                os.unlink(self.rejected_tmp)
