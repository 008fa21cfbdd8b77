"""eval-pairs: pairwise preference accuracy, how often the chosen program scores higher."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, replace
from typing import IO, Any

from ..config import OnBadRow, ResumeMode, RunOptions
from ..errors import InputError
from ..fields import (
    CHOSEN_FIELDS,
    PAIR_QUESTION_FIELDS,
    REJECTED_FIELDS,
    pick_field,
    record_columns,
)
from ..io.inputs import InputSpec
from ..io.writers import dumps_row
from ..progress import Progress, RunSummary
from ..rank import PairMetrics, pair_accuracy
from ..tables import records_to_table
from .common import EngineFactory, load_rows, score_to_table, task, write_result


@dataclass
class PairsResult:
    table: Any
    metrics: PairMetrics
    summary: RunSummary


@task
def run_eval_pairs(
    specs: list[InputSpec],
    opts: RunOptions,
    *,
    chosen_field: str | None = None,
    rejected_field: str | None = None,
    engine: EngineFactory | None = None,
    progress: Progress | None = None,
    stdin: IO[bytes] | None = None,
    stdout: IO[str] | None = None,
) -> PairsResult:
    """Score both programs of each pair; the metrics, and the table when ``opts.output``."""
    import pyarrow as pa

    stdin, records, locations = load_rows(specs, opts, stdin)
    cols = record_columns(records)
    qf = pick_field(
        cols, opts.rows.question_field, PAIR_QUESTION_FIELDS, "question", "--question-field"
    )
    cf = pick_field(cols, chosen_field, CHOSEN_FIELDS, "chosen", "--chosen-field")
    rf = pick_field(cols, rejected_field, REJECTED_FIELDS, "rejected", "--rejected-field")
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
        rows = replace(opts.rows, question_field="question", response_field="response", score=True)
        flat_opts = replace(
            opts,
            output=os.path.join(tmp, "scored.parquet"),
            rows=rows,
            resume=ResumeMode.never,
            on_bad_row=OnBadRow.error,
        )
        scored, summary = score_to_table(
            [InputSpec("jsonl", flat)], flat_opts, engine, progress, None
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
    if opts.output:
        write_result(table, opts.output, scored.schema.metadata, stdout)
    return PairsResult(table, metrics, summary)
