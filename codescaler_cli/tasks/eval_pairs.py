"""eval-pairs: pairwise preference accuracy, how often the chosen program scores higher.

Streams: the pairs are flattened to a temporary JSON Lines file (two candidates a pair),
scored by the normal run, then joined back to the input rows chunk by chunk; memory is
bounded by the chunk size, not the file.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import IO, Any

from ..config import OnBadRow, ResumeMode, RunOptions
from ..errors import InputError
from ..fields import CHOSEN_FIELDS, PAIR_QUESTION_FIELDS, REJECTED_FIELDS, pick_field
from ..io.inputs import InputSpec, copy_streams
from ..io.readers import iter_chunks
from ..io.writers import dumps_row
from ..progress import Progress, RunSummary
from ..provenance import PAIR_COLUMNS, PROVENANCE_COLUMN, Provenance, parse, provenance_array
from ..rank import PairAccumulator, PairMetrics
from ..tables import conform, input_table, json_columns, unify_parts
from .common import EngineFactory, TableWriter, score_to_parquet, task
from .survey import survey


@dataclass
class PairsResult:
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
    """Score both programs of each pair; the metrics, and the rows when ``opts.output``."""
    import pyarrow.parquet as pq

    with tempfile.TemporaryDirectory(prefix="codescaler-pairs-") as tmp:
        specs = copy_streams(specs, stdin, tmp)  # read more than once
        cols = list(survey(specs, opts.chunk_size, None, [], []).columns)
        qf = pick_field(
            cols, opts.rows.question_field, PAIR_QUESTION_FIELDS, "question", "--question-field"
        )
        cf = pick_field(cols, chosen_field, CHOSEN_FIELDS, "chosen", "--chosen-field")
        rf = pick_field(cols, rejected_field, REJECTED_FIELDS, "rejected", "--rejected-field")
        assert qf and cf and rf
        flat = os.path.join(tmp, "pairs.jsonl")
        with open(flat, "w", encoding="utf-8") as fh:
            for chunk in _chunks(specs, opts):
                for rec, loc in zip(chunk.records, chunk.locations, strict=True):
                    for f in (qf, cf, rf):
                        if not isinstance(rec.get(f), str):
                            raise InputError(f"{loc}: field {f!r} must be a string")
                    for side in (cf, rf):
                        fh.write(dumps_row({"question": rec[qf], "response": rec[side]}) + "\n")
        rows = replace(opts.rows, question_field="question", response_field="response", score=True)
        flat_opts = replace(opts, rows=rows, resume=ResumeMode.never, on_bad_row=OnBadRow.error)
        scored, summary = score_to_parquet(
            [InputSpec("jsonl", flat)], flat_opts, engine, progress, tmp
        )
        acc = PairAccumulator()
        parts = []
        scores = pq.ParquetFile(scored).iter_batches(
            batch_size=2 * opts.chunk_size,
            columns=["score", "reward", "code_valid", PROVENANCE_COLUMN],
        )
        pending: list[dict[str, list[Any]]] = []
        for k, chunk in enumerate(_chunks(specs, opts)):
            side = _take(scores, pending, 2 * len(chunk.records))
            table = _pairs_table(chunk, side, acc)
            if opts.output:
                parts.append(os.path.join(tmp, f"out-{k:06d}.parquet"))
                pq.write_table(table, parts[-1])
        if opts.output:
            schema = unify_parts([pq.read_schema(p) for p in parts])
            meta = pq.read_schema(scored).metadata or {}
            schema = schema.with_metadata(
                {
                    **{k: v for k, v in meta.items() if k.startswith(b"codescaler.")},
                    **(schema.metadata or {}),
                    b"codescaler.task": b"eval-pairs",
                }
            )
            writer = TableWriter(opts.output, schema, stdout)
            try:
                for part in parts:
                    t = pq.read_table(part)
                    writer.write(conform(t, schema, json_columns(t.schema)))
                writer.close()
            except BaseException:
                writer.abort()
                raise
    return PairsResult(acc.result(), summary)


def _chunks(specs: list[InputSpec], opts: RunOptions) -> Iterator[Any]:
    for chunk in iter_chunks(specs, opts.chunk_size):
        if chunk.bad:
            b = chunk.bad[0]
            raise InputError(f"{b.location}: {b.reason}")
        yield chunk


def _take(batches: Iterator[Any], pending: list[dict[str, list[Any]]], n: int) -> dict[str, list]:
    """The next ``n`` scored rows (both sides of the chunk's pairs), in order."""
    out: dict[str, list[Any]] = {"score": [], "reward": [], "code_valid": [], "prov": []}
    while len(out["score"]) < n:
        if not pending:
            b = next(batches)
            pending.append(
                {
                    "score": b.column("score").to_pylist(),
                    "reward": b.column("reward").to_pylist(),
                    "code_valid": b.column("code_valid").to_pylist(),
                    "prov": b.column(PROVENANCE_COLUMN).to_pylist(),
                }
            )
        head = pending[0]
        need = n - len(out["score"])
        for key in out:
            out[key].extend(head[key][:need])
            head[key] = head[key][need:]
        if not head["score"]:
            pending.pop(0)
    return out


def _pairs_only(prov: Provenance) -> bool:
    return set(prov.columns) <= set(PAIR_COLUMNS)


def _pairs_table(chunk: Any, side: dict[str, list[Any]], acc: PairAccumulator) -> Any:
    """The chunk's rows (the user's columns, as codescaler writes them) with both scores."""
    import pyarrow as pa

    # An earlier eval-pairs row has its pair columns written again; a row of another task
    # (a scored file given as pairs) is kept whole as the user's data.
    table, _ = input_table(chunk.records, chunk.schema, _pairs_only)
    chosen, rejected = side["score"][0::2], side["score"][1::2]
    correct = acc.add(chosen, rejected)
    extra = {
        "chosen_score": pa.array(chosen, pa.float64()),
        "rejected_score": pa.array(rejected, pa.float64()),
        "chosen_reward": pa.array(side["reward"][0::2], pa.float64()),
        "rejected_reward": pa.array(side["reward"][1::2], pa.float64()),
        "chosen_valid": pa.array(side["code_valid"][0::2], pa.bool_()),
        "rejected_valid": pa.array(side["code_valid"][1::2], pa.bool_()),
        "correct": pa.array(correct, pa.bool_()),
    }
    provs = [parse(p) for p in side["prov"][0::2]]
    extra[PROVENANCE_COLUMN] = provenance_array(
        [
            replace(
                p, task="eval-pairs", columns=PAIR_COLUMNS, question_field=None, response_field=None
            )  # type: ignore[arg-type]
            for p in provs
        ]
    )
    for name, arr in extra.items():
        table = table.append_column(name, arr) if table.num_columns else pa.table({name: arr})
    return table
