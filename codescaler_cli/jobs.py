"""Whole-file jobs built on the scoring run: rerank and eval-pairs.

Both need every row of a problem (or every pair) before they can answer, so they score
into a temporary Parquet file with the normal (resumable, chunked) scoring run, then
read it back. Already-scored inputs skip the model entirely.
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import IO, Any

from .errors import InputError, UsageError
from .io import InputSpec, check_output_path, dumps_row, iter_chunks, write_table_atomic
from .pipeline import (
    PipelineOptions,
    Progress,
    RunSummary,
    looks_scored,
    record_columns,
    records_to_table,
)
from .rank import (
    PairMetrics,
    SelectionMetrics,
    detect_group_field,
    detect_label_field,
    pair_accuracy,
    parse_label,
    rank_table,
    selection_metrics,
)
from .runner import RunConfig, check_config, run_job

ScoreRunner = Callable[..., RunSummary]

PAIR_QUESTION_FIELDS = ("question_content", "question", "prompt", "problem")
CHOSEN_FIELDS = ("code_pos", "chosen", "positive", "response_chosen", "chosen_response")
REJECTED_FIELDS = ("code_neg", "rejected", "negative", "response_rejected", "rejected_response")


def _buffer_stdin(specs: list[InputSpec], stdin: IO[bytes] | None) -> IO[bytes] | None:
    """These jobs read their input twice (peek, then score): keep stdin in memory."""
    if not any(s.kind == "stdin" for s in specs):
        return stdin
    return io.BytesIO((stdin or sys.stdin.buffer).read())


def _read_all(specs: list[InputSpec], stdin: IO[bytes] | None) -> tuple[list[dict], list[str]]:
    records: list[dict] = []
    locations: list[str] = []
    if stdin is not None:
        stdin.seek(0)
    for chunk in iter_chunks(specs, 50_000, stdin=stdin):
        if chunk.bad:
            b = chunk.bad[0]
            raise InputError(f"{b.location}: {b.reason}")
        records.extend(chunk.records)
        locations.extend(chunk.locations)
    if stdin is not None:
        stdin.seek(0)
    return records, locations


def _load(
    specs: list[InputSpec], cfg: RunConfig, stdin: IO[bytes] | None
) -> tuple[IO[bytes] | None, list[dict], list[str]]:
    """Check the options and output path, then read every row (these jobs need them all)."""
    if cfg.output:  # eval-pairs may run without an output, for its metrics only
        check_config(cfg)
        check_output_path(cfg.output, specs)
    stdin = _buffer_stdin(specs, stdin)
    records, locations = _read_all(specs, stdin)
    if not records:
        raise InputError(f"{specs[0].name}: input has no rows")
    return stdin, records, locations


def _score_to_table(
    specs: list[InputSpec],
    cfg: RunConfig,
    runner: ScoreRunner,
    progress: Progress | None,
    stdin: IO[bytes] | None,
) -> tuple[Any, RunSummary]:
    import pyarrow.parquet as pq

    with tempfile.TemporaryDirectory(prefix="codescaler-") as tmp:
        out = os.path.join(tmp, "scored.parquet")
        scored_cfg = replace(cfg, output=out, resume="never")
        if stdin is not None:
            stdin.seek(0)
        summary = runner(specs, scored_cfg, progress=progress, stdin=stdin)
        return pq.read_table(out), summary


@dataclass
class RerankResult:
    table: Any
    metrics: SelectionMetrics
    summary: RunSummary | None  # None when the input was already scored
    group_field: str
    label_field: str | None


def run_rerank(
    specs: list[InputSpec],
    cfg: RunConfig,
    *,
    top_k: int | None = 1,
    by: str = "reward",
    group_field: str | None = None,
    label_field: str | None = None,
    rescore: bool = False,
    runner: ScoreRunner = run_job,
    progress: Progress | None = None,
    stdin: IO[bytes] | None = None,
    stdout: IO[str] | None = None,
) -> RerankResult:
    """Score (unless already scored), rank within groups, keep the top K, write."""
    stdin, records, _ = _load(specs, cfg, stdin)
    columns = record_columns(records)
    summary = None
    if looks_scored(columns) and not rescore:
        table = records_to_table(records)
        meta = None
    else:
        table, summary = _score_to_table(specs, cfg, runner, progress, stdin)
        meta = table.schema.metadata
    del records
    # Without a group column, the question text names the group.
    gcol = detect_group_field(table.column_names, group_field, None) or _question_field(table, cfg)
    lcol = detect_label_field(table.column_names, label_field)
    groups = table.column(gcol).to_pylist()
    if any(g is None for g in groups):
        raise InputError(
            f"group field {gcol!r} is null in some rows; fill it or choose --group-field"
        )
    ranked_all = rank_table(table, gcol, None, by)
    labels = None
    if lcol is not None:
        labels = [
            parse_label(v, f"row {i} field {lcol!r}")
            for i, v in enumerate(ranked_all.column(lcol).to_pylist())
        ]
    g_all = ranked_all.column(gcol).to_pylist()
    rank_all = ranked_all.column("rank").to_pylist()
    kept = [i for i, r in enumerate(rank_all) if not top_k or r <= top_k]
    metrics = selection_metrics(
        g_all,
        rank_all,
        ranked_all.column("reward").to_pylist(),
        ranked_all.column("score").to_pylist(),
        [bool(v) for v in ranked_all.column("code_valid").to_pylist()],
        kept,
        labels,
    )
    out = ranked_all if not top_k else rank_table(table, gcol, top_k, by)
    _write(out, cfg.output, meta, stdout)
    return RerankResult(out, metrics, summary, gcol, lcol)


def _question_field(table: Any, cfg: RunConfig) -> str:
    meta = table.schema.metadata or {}
    recorded = meta.get(b"codescaler.question_field", b"").decode()
    if cfg.pipeline.question_field:
        return cfg.pipeline.question_field
    if recorded and recorded in table.column_names:
        return recorded
    from .pipeline import QUESTION_FIELDS

    for name in QUESTION_FIELDS:
        if name in table.column_names:
            return name
    raise UsageError(
        f"no question column found (looked for {', '.join(QUESTION_FIELDS)}); "
        "choose one with --question-field or --group-field"
    )


def _write(table: Any, output: str, metadata: dict | None, stdout: IO[str] | None) -> None:
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


# ---------------------------------------------------------------- eval-pairs


def _pick(
    columns: list[str], explicit: str | None, names: tuple[str, ...], role: str, flag: str
) -> str:
    if explicit:
        if explicit not in columns:
            raise UsageError(
                f"{role} field {explicit!r} not found; available columns: {', '.join(columns)}"
            )
        return explicit
    for n in names:
        if n in columns:
            return n
    raise UsageError(
        f"no {role} column found (looked for {', '.join(names)}); available columns: "
        f"{', '.join(columns)}; choose one with {flag}"
    )


@dataclass
class PairsResult:
    table: Any
    metrics: PairMetrics
    summary: RunSummary


def run_eval_pairs(
    specs: list[InputSpec],
    cfg: RunConfig,
    *,
    chosen_field: str | None = None,
    rejected_field: str | None = None,
    runner: ScoreRunner = run_job,
    progress: Progress | None = None,
    stdin: IO[bytes] | None = None,
    stdout: IO[str] | None = None,
) -> PairsResult:
    """Pairwise preference accuracy: how often the chosen program scores higher."""
    import pyarrow as pa

    stdin, records, locations = _load(specs, cfg, stdin)
    cols = record_columns(records)
    qf = _pick(
        cols, cfg.pipeline.question_field, PAIR_QUESTION_FIELDS, "question", "--question-field"
    )
    cf = _pick(cols, chosen_field, CHOSEN_FIELDS, "chosen", "--chosen-field")
    rf = _pick(cols, rejected_field, REJECTED_FIELDS, "rejected", "--rejected-field")
    for rec, loc in zip(records, locations, strict=True):
        for f in (qf, cf, rf):
            if not isinstance(rec.get(f), str):
                raise InputError(f"{loc}: field {f!r} must be a string")
    with tempfile.TemporaryDirectory(prefix="codescaler-pairs-") as tmp:
        flat = os.path.join(tmp, "pairs.jsonl")
        with open(flat, "w", encoding="utf-8") as fh:
            for rec in records:
                for side in (cf, rf):
                    fh.write(dumps_row({"question": rec[qf], "response": rec[side]}) + "\n")
        pipeline = replace(
            cfg.pipeline, question_field="question", response_field="response", score=True
        )
        flat_cfg = replace(
            cfg,
            output=os.path.join(tmp, "scored.parquet"),
            pipeline=pipeline,
            resume="never",
            on_bad_row="error",
        )
        scored, summary = _score_to_table(
            [InputSpec("jsonl", flat)], flat_cfg, runner, progress, None
        )
    score = scored.column("score").to_pylist()
    reward = scored.column("reward").to_pylist()
    valid = scored.column("code_valid").to_pylist()
    chosen, rejected = score[0::2], score[1::2]
    correct, metrics = pair_accuracy(chosen, rejected)
    table = records_to_table(records)
    extra = {
        "chosen_score": pa.array(chosen, pa.float64()),
        "rejected_score": pa.array(rejected, pa.float64()),
        "chosen_reward": pa.array(reward[0::2], pa.float64()),
        "rejected_reward": pa.array(reward[1::2], pa.float64()),
        "chosen_valid": pa.array(valid[0::2], pa.bool_()),
        "rejected_valid": pa.array(valid[1::2], pa.bool_()),
        "correct": pa.array(correct, pa.bool_()),
    }
    for name, arr in extra.items():
        if name in table.column_names:
            table = table.drop_columns([name])
        table = table.append_column(name, arr)
    if cfg.output:
        _write(table, cfg.output, scored.schema.metadata, stdout)
    return PairsResult(table, metrics, summary)


__all__ = ["PipelineOptions", "run_eval_pairs", "run_rerank"]
