"""One chunk through the stages: validate -> extract -> score -> shape -> table.

The same functions run in every engine (in this process, in Ray actors, in the server),
so all of them produce identical rows.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .config import ExtractMode, OnBadRow, RowOptions, Shaping
from .errors import BadRowError
from .extract import Extraction, extract_code
from .fields import Fields
from .io.inputs import InputSpec
from .io.jsonl import BadRow, describe
from .io.readers import Chunk
from .progress import Progress, RunSummary
from .provenance import (
    EXTRACT_COLUMNS,
    OUTPUT_COLUMNS,
    PROVENANCE_COLUMN,
    SCORE_COLUMNS,
    Provenance,
    kept_name,
    provenance_array,
    provenance_of,
)
from .shaping import shape_reward
from .tables import input_table

if TYPE_CHECKING:
    import pyarrow as pa

    from .model.reward_model import RewardModel
    from .scoring.scorer import PairScores, Prepared, Scorer


def row_fields(
    prov: Provenance | None, fields: Fields | None, options: RowOptions
) -> Fields | None:
    """The question and response fields of one row: a codescaler row's own (as its
    provenance names them, or the named fields as codescaler renamed them), else the input's."""
    if prov is None or not (prov.question_field and prov.response_field):
        return fields
    q, r = options.question_field, options.response_field
    return Fields(
        kept_name(q, None) if q else prov.question_field,
        kept_name(r, None) if r else prov.response_field,
    )


def validate_rows(
    chunk: Chunk, fields: Fields | None, options: RowOptions | None = None
) -> tuple[list[int], list[BadRow], list[Fields]]:
    """Indices of usable rows, the rows that miss a field or have a wrong type, and each
    usable row's fields."""
    options = options or RowOptions()
    good: list[int] = []
    per_row: list[Fields] = []
    bad = list(chunk.bad)
    for i, rec in enumerate(chunk.records):
        found = row_fields(provenance_of(rec), fields, options)
        if found is None:  # the input's fields could not be detected from its rows
            continue
        for name in (found.question, found.response):
            if name not in rec:
                bad.append(BadRow(chunk.locations[i], f"missing field {name!r}", rec))
                break
            if not isinstance(rec[name], str):
                reason = f"field {name!r} must be a string, got {describe(rec[name])}"
                bad.append(BadRow(chunk.locations[i], reason, rec))
                break
        else:
            good.append(i)
            per_row.append(found)
    return good, bad, per_row


@dataclass
class ChunkResult:
    table: pa.Table
    bad: list[BadRow]
    unique_scored: int = 0
    index: int = 0
    n_read: int = 0
    ran: list[bool] | None = None  # with a shard: the rows whose score it computed
    plan: str | None = None  # with a shard: a digest of the passes every shard must plan alike
    cached: int = 0  # rows whose scores came from the score cache


@dataclass
class PreparedChunk:
    """A chunk after the CPU-side work: validated, extracted, deduplicated and tokenized."""

    chunk: Chunk
    records: list[dict[str, Any]]
    bad: list[BadRow]
    extractions: list[Any]
    questions: list[str]
    prepared: Prepared | None = None  # when scoring
    rows: list[int] = field(default_factory=list)  # positions of ``records`` in the chunk
    fields: list[Fields] = field(default_factory=list)  # each record's fields
    reused: list[bool] = field(default_factory=list)  # rows whose earlier scores are kept


# Code longer than any conversation that fits (or a response past the cap below): not
# tokenized, not scored, flagged truncated.
TOO_LONG = Extraction("", False, "too_long", 0, ("too_long",))
# A raw response longer than this is never extracted (TOO_LONG), whatever the model: a
# safety cap on one row's time and memory. Extraction is linear, but tree-sitter reads
# prose-like text at about 1 MB/s, so this is a few seconds per row at worst.
MAX_RESPONSE_CHARS = 4 * 1024 * 1024


def extract_responses(
    responses: Sequence[str], mode: ExtractMode, limit: int | None
) -> list[Extraction]:
    """The code of each response, or :data:`TOO_LONG` when it is not scored: the response
    is over :data:`MAX_RESPONSE_CHARS`, or its code (what would be tokenized, after
    reasoning and prose are dropped) is longer than ``limit`` characters, more than can
    ever fit the model."""
    out = []
    for text in responses:
        found = TOO_LONG if len(text) > MAX_RESPONSE_CHARS else extract_code(text, str(mode))
        out.append(TOO_LONG if limit is not None and len(found.code) > limit else found)
    return out


def score_columns(
    extractions: Sequence[Extraction], res: PairScores, shaping: Shaping
) -> dict[str, list[Any]]:
    """The score columns of extracted rows from the model's results (every engine's)."""
    # A program too long to score whole is not scored at all: flagged, reward 0.
    valid = [
        e.valid and not too_long for e, too_long in zip(extractions, res.too_long, strict=True)
    ]
    return {
        "code_valid": valid,
        "score": res.score,
        "reward": [shape_reward(s, v, str(shaping)) for s, v in zip(res.score, valid, strict=True)],
        "n_tokens": res.n_tokens,
        "truncated": [t or e is TOO_LONG for t, e in zip(res.truncated, extractions, strict=True)],
    }


def prepare_chunk(
    chunk: Chunk,
    fields: Fields | None,
    options: RowOptions,
    scorer: Scorer | Callable[[], Scorer | None] | None,
    on_bad_row: OnBadRow = OnBadRow.error,
) -> PreparedChunk:
    """Validate, extract and tokenize one chunk (no model forward: can run ahead in a thread).

    ``scorer`` may be a function that loads one: called only when a row needs scoring.
    Rows scored earlier by the scorer ``options.reuse`` names keep their scores.
    """
    good, bad, per_row = validate_rows(chunk, fields, options)
    bad.sort(key=location_order)  # report and set aside in file order
    if bad and on_bad_row == OnBadRow.error:
        raise BadRowError(bad[0].location, bad[0].reason)
    records = [chunk.records[i] for i in good]
    if not records:
        return PreparedChunk(chunk, [], bad, [], [], None, [])
    reused = [reusable(r, options) for r in records]
    fresh = [i for i, kept in enumerate(reused) if not kept]
    if fresh and options.score and scorer is not None and not hasattr(scorer, "prepare"):
        scorer = scorer()  # the model loads on the first row that needs it
    limit = scorer.max_response_chars if options.score and fresh and scorer is not None else None
    extractions: list[Any] = [None] * len(records)
    done = extract_responses(
        [records[i][per_row[i].response] for i in fresh], options.extract, limit
    )
    for i, e in zip(fresh, done, strict=True):
        extractions[i] = e
    for i, kept in enumerate(reused):
        if kept:
            extractions[i] = earlier_extraction(records[i])
    questions = [r[f.question] for r, f in zip(records, per_row, strict=True)]
    prepared = None
    if options.score and fresh:
        if scorer is None:
            raise ValueError("scoring requested without a scorer")
        codes = ["" if kept else e.code for e, kept in zip(extractions, reused, strict=True)]
        prepared = scorer.prepare(questions, codes)
    return PreparedChunk(
        chunk, records, bad, extractions, questions, prepared, good, per_row, reused
    )


def reusable(record: dict[str, Any], options: RowOptions) -> bool:
    """A row scored earlier by the scorer ``options.reuse`` names (its score is kept)."""
    if options.reuse is None:
        return False
    prov = provenance_of(record)
    return prov is not None and prov.scored and same_scorer(prov.scorer(), options.reuse)


def same_scorer(row: Sequence[Any], target: Sequence[Any]) -> bool:
    """A row's scorer is ``target``'s; a target's unknown commit (a model named but not yet
    loaded) matches any (provenance.Provenance.scorer(): commit is the third field)."""
    row, target = list(row), list(target)
    if target[2] is None:
        row[2] = None
    return row == target


def earlier_extraction(record: dict[str, Any]) -> Extraction:
    """The extraction a codescaler row records (kept when its score is reused)."""
    return Extraction(
        record.get("code") or "",
        bool(record.get("code_valid")),
        record.get("extract_method") or "none",
        int(record.get("n_code_blocks") or 0),
        (),
    )


def finish_chunk(
    pc: PreparedChunk,
    options: RowOptions,
    scorer: Scorer | None,
    progress: Progress | None = None,
    shard: tuple[int, int] | None = None,
) -> ChunkResult:
    """Run the model on a prepared chunk and build its output table, rows in input order.

    ``shard=(k, n)``: run only the k-th of n shares of the chunk's forward passes (see
    Scorer.run); a row's score is then null unless ``ran`` says this shard computed it.
    """
    import pyarrow as pa

    records, extractions = pc.records, pc.extractions
    table, provs = input_table(records, pc.chunk.schema)
    n = len(records)
    cols: dict[str, pa.Array] = {
        "code": pa.array([e.code for e in extractions], pa.string()),
        "code_valid": pa.array([e.valid for e in extractions], pa.bool_()),
        "extract_method": pa.array([e.method for e in extractions], pa.string()),
        "n_code_blocks": pa.array([e.n_blocks for e in extractions], pa.int32()),
    }
    unique = cached = 0
    ran = plan = None
    model: dict[str, Any] = {}
    if options.score:
        from .scoring.scorer import PairScores

        tick = (lambda k, t: progress.advance(k, t)) if progress else None
        if pc.prepared is not None:
            assert scorer is not None
            res = scorer.run(pc.prepared, progress=tick, shard=shard)
            model = model_fields(scorer.rm, scorer.options.max_length)
        else:
            res = PairScores([None] * n, [None] * n, [False] * n, [False] * n)
        unique, ran, plan, cached = res.unique_scored, res.ran, res.plan, res.cached_rows
        if progress:
            # Rows not run through the model (duplicates, no code, other shards') count too.
            progress.advance(n - res.ticked, 0)
        out = score_columns(extractions, res, options.shaping)
        for i, kept in enumerate(pc.reused):
            if kept:  # scored earlier by the same scorer: its columns as they were
                for name in (*SCORE_COLUMNS, "code_valid"):
                    out[name][i] = records[i].get(name)
        for name, kind in (
            ("code_valid", pa.bool_()),
            ("score", pa.float64()),
            ("reward", pa.float64()),
            ("n_tokens", pa.int64()),
            ("truncated", pa.bool_()),
        ):
            cols[name] = pa.array(out[name], kind)
    elif progress:
        progress.advance(n, 0)
    added = OUTPUT_COLUMNS if options.score else EXTRACT_COLUMNS
    made = Provenance(
        version=__version__,
        task="score" if options.score else "extract",
        extract=str(options.extract),
        shaping=str(options.shaping),
        columns=added,
        **model,
    )
    cols[PROVENANCE_COLUMN] = provenance_array(
        [
            _row_made(made, prov, f, kept)
            for prov, f, kept in zip(provs, pc.fields, pc.reused or [False] * n, strict=True)
        ]
    )
    for name, arr in cols.items():
        table = (
            table.append_column(name, arr) if table.num_columns or n == 0 else pa.table({name: arr})
        )
    return ChunkResult(table, pc.bad, unique, pc.chunk.index, pc.chunk.n_read, ran, plan, cached)


def _row_made(made: Provenance, prov: Provenance | None, fields: Fields, kept: bool) -> Provenance:
    """One row's provenance: this run's, or the earlier run's whose scores it keeps; its
    fields as this output names them."""
    base = prov if kept and prov is not None else made
    return replace(
        base,
        version=made.version,
        task=made.task,
        columns=made.columns,
        question_field=kept_name(fields.question, prov),
        response_field=kept_name(fields.response, prov),
    )


def process_chunk(
    chunk: Chunk,
    fields: Fields | None,
    options: RowOptions,
    scorer: Scorer | None,
    on_bad_row: OnBadRow = OnBadRow.error,
    progress: Progress | None = None,
) -> ChunkResult:
    """Validate, extract and (optionally) score one chunk; rows keep their input order."""
    prepared = prepare_chunk(chunk, fields, options, scorer, on_bad_row)
    return finish_chunk(prepared, options, scorer, progress)


_LAST_NUMBER = re.compile(r"(\d+)\D*$")


def location_order(bad: BadRow) -> int:
    """Sort key putting a chunk's bad rows in file order."""
    # The line/row number is the location's last number ("f.jsonl:17", "f.parquet row 17",
    # "f.json[17]"); a chunk never spans two files.
    match = _LAST_NUMBER.search(bad.location)
    return int(match.group(1)) if match else 0


def row_provenance(options: RowOptions, question_field: str, response_field: str) -> dict[str, str]:
    """Parquet schema metadata: how the rows were made."""
    return {
        "codescaler.version": __version__,
        "codescaler.extract": str(options.extract),
        "codescaler.shaping": str(options.shaping),
        "codescaler.question_field": question_field,
        "codescaler.response_field": response_field,
    }


def model_name(name: str) -> str:
    """A model as provenance names it: a local directory by its real path."""
    return os.path.realpath(name) if os.path.isdir(name) else name


def model_fields(rm: RewardModel, max_length: int) -> dict[str, Any]:
    """The model that scored, as a row's provenance names it."""
    from .model.load import dtype_name

    return {
        "model": model_name(rm.name),
        "revision": rm.revision or None,
        "commit": rm.commit or None,
        "dtype": dtype_name(rm.dtype),
        "max_length": max_length,
    }


def model_provenance(rm: RewardModel, max_length: int) -> dict[str, str]:
    """Parquet schema metadata: the model that scored the rows."""
    return {
        f"codescaler.{k}": "" if v is None else str(v)
        for k, v in model_fields(rm, max_length).items()
    }


def summarize_chunk(summary: RunSummary, result: ChunkResult) -> None:
    t = result.table
    summary.rows_read += result.n_read
    summary.rows_written += t.num_rows
    summary.rejected += len(result.bad)
    summary.chunks += 1
    summary.cached += result.cached
    if t.num_rows == 0:
        return
    valid = t.column("code_valid").to_pylist()
    summary.invalid += sum(1 for v in valid if not v)
    for m in t.column("extract_method").to_pylist():
        summary.methods[m] = summary.methods.get(m, 0) + 1
    if "score" in t.column_names:
        scored = sum(1 for s in t.column("score").to_pylist() if s is not None)
        summary.scored += scored
        summary.unique_scored += result.unique_scored
        summary.deduplicated += scored - result.unique_scored
        summary.truncated += sum(1 for v in t.column("truncated").to_pylist() if v)


def default_rejected_path(output: str, specs: list[InputSpec]) -> str:
    if output != "-":
        base = output.rstrip("/" + os.sep) or output
        for suffix in (".parquet", ".pq", ".jsonl", ".json", ".ndjson"):
            if base.lower().endswith(suffix):
                base = base[: -len(suffix)]
                break
        return base + ".rejected.jsonl"
    first = next((s.path for s in specs if s.is_file), None)
    if first:
        return os.path.splitext(first)[0] + ".rejected.jsonl"
    return "codescaler.rejected.jsonl"


def rejected_rows(bad: Sequence[BadRow]) -> list[dict[str, Any]]:
    """The rejected-rows file's records: where, why, and the raw row."""
    return [{"location": b.location, "reason": b.reason, "row": b.raw} for b in bad]
