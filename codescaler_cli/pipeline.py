"""read -> validate -> extract -> score -> shape -> write, chunk by chunk.

The same :func:`process_chunk` runs in the local engine and inside Ray actors, so
both produce identical rows.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import BadRowError, InputError, UsageError
from .io import BadRow, Chunk, InputSpec
from .shaping import shape_reward

if TYPE_CHECKING:
    import pyarrow as pa

    from .model import RewardModel
    from .scoring import Scorer

QUESTION_FIELDS = ("question", "prompt", "problem", "question_content", "instruction", "query")
RESPONSE_FIELDS = ("response", "completion", "output", "code", "answer", "generation", "solution")
EXTRACT_COLUMNS = ("code", "code_valid", "extract_method", "n_code_blocks")
SCORE_COLUMNS = ("score", "reward", "n_tokens", "truncated")
OUTPUT_COLUMNS = EXTRACT_COLUMNS + SCORE_COLUMNS
# Field detection looks at the columns of this many readable rows (both engines).
FIELDS_PROBE_ROWS = 1000


@dataclass
class PipelineOptions:
    """Options that decide the rows written (and so belong in a resume fingerprint)."""

    question_field: str | None = None
    response_field: str | None = None
    extract_mode: str = "auto"
    shaping: str = "softplus"
    max_length: int = 4096
    score: bool = True  # False: extraction only (no model)

    def fingerprint(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Fields:
    question: str
    response: str


@dataclass
class RunSummary:
    rows_read: int = 0
    rows_written: int = 0
    scored: int = 0
    unique_scored: int = 0
    deduplicated: int = 0
    invalid: int = 0
    truncated: int = 0
    too_long: int = 0
    rejected: int = 0
    chunks: int = 0
    chunks_resumed: int = 0
    forward_calls: int = 0
    seconds: float = 0.0
    output: str | None = None
    rejected_path: str | None = None
    methods: dict[str, int] = field(default_factory=dict)

    @property
    def rows_per_second(self) -> float:
        return self.rows_read / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["rows_per_second"] = round(self.rows_per_second, 3)
        d["seconds"] = round(self.seconds, 3)
        return d


class Progress:
    """Progress sink; the CLI plugs in a rich bar. The library itself prints nothing."""

    def start(self, total: int | None) -> None:
        pass

    def advance(self, rows: int, tokens: int = 0) -> None:
        pass

    def message(self, text: str) -> None:
        pass

    def stop(self) -> None:
        pass


# ---------------------------------------------------------------- fields


def detect_fields(
    columns: Sequence[str], question: str | None, response: str | None, source: str
) -> Fields:
    """Pick the question/response columns, explicitly named or by common names."""
    cols = list(columns)

    def pick(explicit: str | None, names: Sequence[str], role: str, flag: str) -> str:
        if explicit:
            if explicit not in cols:
                raise UsageError(
                    f"{source}: {role} field {explicit!r} not found; available columns: "
                    f"{', '.join(cols) or '(none)'}"
                )
            return explicit
        for name in names:
            if name in cols:
                return name
        raise UsageError(
            f"{source}: no {role} column found (looked for {', '.join(names)}); available "
            f"columns: {', '.join(cols) or '(none)'}; choose one with {flag}"
        )

    q = pick(question, QUESTION_FIELDS, "question", "--question-field")
    r = pick(response, [n for n in RESPONSE_FIELDS if n != q], "response", "--response-field")
    if q == r:
        raise UsageError(f"{source}: question and response fields are both {q!r}")
    return Fields(q, r)


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def validate_rows(chunk: Chunk, fields: Fields) -> tuple[list[int], list[BadRow]]:
    """Indices of usable rows, and the rows that miss a field or have a wrong type."""
    good: list[int] = []
    bad = list(chunk.bad)
    for i, rec in enumerate(chunk.records):
        for name in (fields.question, fields.response):
            if name not in rec:
                bad.append(BadRow(chunk.locations[i], f"missing field {name!r}", rec))
                break
            if not isinstance(rec[name], str):
                reason = f"field {name!r} must be a string, got {_describe(rec[name])}"
                bad.append(BadRow(chunk.locations[i], reason, rec))
                break
        else:
            good.append(i)
    return good, bad


# ---------------------------------------------------------------- tables


def records_to_table(records: list[dict[str, Any]], schema: pa.Schema | None = None) -> pa.Table:
    """Arrow table of the input rows; columns whose JSON types vary by row become JSON text
    (nothing is dropped) instead of failing the run."""
    import pyarrow as pa

    if schema is not None:
        try:
            return pa.Table.from_pylist(records, schema=schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            pass
    try:
        return pa.Table.from_pylist(records)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        pass
    names: list[str] = []
    for rec in records:
        for k in rec:
            if k not in names:
                names.append(k)
    cols = {}
    for name in names:
        values = [rec.get(name) for rec in records]
        try:
            cols[name] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            cols[name] = pa.array(
                [
                    v if v is None or isinstance(v, str) else json.dumps(v, ensure_ascii=False)
                    for v in values
                ],
                type=pa.string(),
            )
    return pa.table(cols) if cols else pa.table({})


def _input_table(records: list[dict[str, Any]], replace_outputs: bool) -> pa.Table:
    """Input columns that collide with output columns are kept as ``input_<name>``,
    unless the rows are a previous codescaler output being re-scored."""
    table = records_to_table(records)
    names = table.column_names
    collisions = [c for c in names if c in OUTPUT_COLUMNS]
    if not collisions:
        return table
    if replace_outputs:
        return table.drop_columns(collisions)
    return table.rename_columns([f"input_{c}" if c in OUTPUT_COLUMNS else c for c in names])


def looks_scored(columns: Sequence[str]) -> bool:
    return all(c in columns for c in ("score", "reward", "code_valid"))


@dataclass
class ChunkResult:
    table: pa.Table
    bad: list[BadRow]
    unique_scored: int = 0


@dataclass
class PreparedChunk:
    """A chunk after the CPU-side work: validated, extracted, deduplicated and tokenized."""

    chunk: Chunk
    records: list[dict[str, Any]]
    bad: list[BadRow]
    extractions: list[Any]
    questions: list[str]
    prepared: Any = None  # scoring.Prepared when scoring
    rows: list[int] = field(default_factory=list)  # positions of ``records`` in the chunk


def prepare_chunk(
    chunk: Chunk,
    fields: Fields,
    options: PipelineOptions,
    scorer: Scorer | None,
    on_bad_row: str = "error",
) -> PreparedChunk:
    """Validate, extract and tokenize one chunk (no model forward: can run ahead in a thread)."""
    from .extract import extract_code

    good, bad = validate_rows(chunk, fields)
    bad.sort(key=location_order)  # report and set aside in file order
    if bad and on_bad_row == "error":
        raise BadRowError(bad[0].location, bad[0].reason)
    records = [chunk.records[i] for i in good]
    extractions = [extract_code(r[fields.response], options.extract_mode) for r in records]
    questions = [r[fields.question] for r in records]
    prepared = None
    if options.score:
        if scorer is None:
            raise ValueError("scoring requested without a scorer")
        prepared = scorer.prepare(questions, [e.code for e in extractions])
    return PreparedChunk(chunk, records, bad, extractions, questions, prepared, good)


def finish_chunk(
    pc: PreparedChunk,
    options: PipelineOptions,
    scorer: Scorer | None,
    progress: Progress | None = None,
) -> ChunkResult:
    """Run the model on a prepared chunk and build its output table, rows in input order."""
    import pyarrow as pa

    records, extractions = pc.records, pc.extractions
    replace = looks_scored(records[0].keys()) if records else False
    table = _input_table(records, replace)
    n = len(records)
    cols: dict[str, pa.Array] = {
        "code": pa.array([e.code for e in extractions], pa.string()),
        "code_valid": pa.array([e.valid for e in extractions], pa.bool_()),
        "extract_method": pa.array([e.method for e in extractions], pa.string()),
        "n_code_blocks": pa.array([e.n_blocks for e in extractions], pa.int32()),
    }
    unique = 0
    if options.score:
        tick = (lambda k, t: progress.advance(k, t)) if progress else None
        if n:
            res = scorer.run(pc.prepared, progress=tick)
        else:  # every row of this chunk was set aside: nothing to score
            from .scoring import PairScores

            res = PairScores([], [], [], [])
        unique = res.unique_scored
        if progress:
            # Rows not run through the model (duplicates, no code) still count as done.
            progress.advance(n - unique, 0)
        # A program too long to score whole is not scored at all: flagged, reward 0.
        valid = [e.valid and not res.too_long[i] for i, e in enumerate(extractions)]
        cols["code_valid"] = pa.array(valid, pa.bool_())
        cols["score"] = pa.array(res.score, pa.float64())
        cols["reward"] = pa.array(
            [shape_reward(s, v, options.shaping) for s, v in zip(res.score, valid, strict=True)],
            pa.float64(),
        )
        cols["n_tokens"] = pa.array(res.n_tokens, pa.int64())
        cols["truncated"] = pa.array(res.truncated, pa.bool_())
    elif progress:
        progress.advance(n, 0)
    for name, arr in cols.items():
        table = (
            table.append_column(name, arr) if table.num_columns or n == 0 else pa.table({name: arr})
        )
    return ChunkResult(table, pc.bad, unique)


def process_chunk(
    chunk: Chunk,
    fields: Fields,
    options: PipelineOptions,
    scorer: Scorer | None,
    on_bad_row: str = "error",
    progress: Progress | None = None,
) -> ChunkResult:
    """Validate, extract and (optionally) score one chunk; rows keep their input order."""
    return finish_chunk(
        prepare_chunk(chunk, fields, options, scorer, on_bad_row), options, scorer, progress
    )


def location_order(bad: BadRow) -> int:
    """Sort key putting a chunk's bad rows in file order."""
    # Bad rows are reported in file order: the line/row number is the location's last number
    # ("f.jsonl:17", "f.parquet row 17", "f.json[17]"); a chunk never spans two files.
    match = _LAST_NUMBER.search(bad.location)
    return int(match.group(1)) if match else 0


_LAST_NUMBER = re.compile(r"(\d+)\D*$")


def provenance(rm: RewardModel | None, options: PipelineOptions) -> dict[str, str]:
    """Parquet schema metadata: what produced these scores."""
    meta = {
        "codescaler.version": __version__,
        "codescaler.extract": options.extract_mode,
        "codescaler.shaping": options.shaping,
        "codescaler.question_field": options.question_field or "",
        "codescaler.response_field": options.response_field or "",
    }
    if rm is not None:
        from .model import dtype_name

        meta.update(
            {
                "codescaler.model": rm.name,
                "codescaler.revision": rm.revision or "",
                "codescaler.commit": rm.commit or "",
                "codescaler.dtype": dtype_name(rm.dtype),
                "codescaler.max_length": str(options.max_length),
            }
        )
    return meta


def summarize_chunk(summary: RunSummary, result: ChunkResult, n_read: int) -> None:
    t = result.table
    summary.rows_read += n_read
    summary.rows_written += t.num_rows
    summary.rejected += len(result.bad)
    summary.chunks += 1
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
        base = output
        for suffix in (".parquet", ".pq", ".jsonl", ".json", ".ndjson"):
            if base.lower().endswith(suffix):
                base = base[: -len(suffix)]
                break
        return base + ".rejected.jsonl"
    first = next((s.path for s in specs if s.kind in ("jsonl", "parquet")), None)
    if first:
        return os.path.splitext(first)[0] + ".rejected.jsonl"
    return "codescaler.rejected.jsonl"


def rejected_rows(bad: Sequence[BadRow]) -> list[dict[str, Any]]:
    """The rejected-rows file's records: where, why, and the raw row."""
    return [{"location": b.location, "reason": b.reason, "row": b.raw} for b in bad]


def first_fields(chunk: Chunk, options: PipelineOptions, source: str) -> Fields:
    """Detect fields from the first readable row (or fail on an unreadable input)."""
    if not chunk.records:
        if chunk.bad:
            b = chunk.bad[0]
            raise InputError(f"{b.location}: {b.reason}")
        raise InputError(f"{source}: input has no rows")
    keys = record_columns(chunk.records)
    return detect_fields(keys, options.question_field, options.response_field, source)


def record_columns(records: Sequence[dict[str, Any]], limit: int = FIELDS_PROBE_ROWS) -> list[str]:
    """Column names in first-seen order over the first ``limit`` rows."""
    keys: dict[str, None] = {}
    for rec in records[:limit]:
        keys.update(dict.fromkeys(rec))
    return list(keys)
