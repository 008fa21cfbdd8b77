"""rerank: score what needs it, rank within problems out of core, keep the top K, write.

1. A survey of the input (tasks/survey.py) checks every option and field and finds which
   rows were scored, and by which model and settings (each row's provenance).
2. The normal run scores into a temporary Parquet file; rows already scored by the scorer
   of this ranking keep their scores (no model loads when all were).
3. DuckDB ranks within groups (window functions that spill to disk), and the result streams
   to the output while the selection metrics are gathered: memory is bounded by the chunk
   size, not the file. Order: groups by first appearance, then rank.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, replace
from typing import IO, Any

from ..config import Dtype, ExtractMode, RankBy, RerankOptions, RunOptions, Shaping
from ..errors import InputError, UsageError
from ..fields import GROUP_FIELDS, LABEL_FIELDS, QUESTION_FIELDS, pick_field
from ..io.inputs import InputSpec, copy_streams
from ..progress import Progress, RunSummary
from ..provenance import PROVENANCE_COLUMN, RANK_COLUMNS
from ..rank import SelectionAccumulator, SelectionMetrics
from ..stages import same_scorer
from ..tables import json_columns
from .common import EngineFactory, TableWriter, score_to_parquet, task
from .survey import Survey, survey

# DuckDB's working memory; beyond it sorts spill to the temporary directory.
DUCKDB_MEMORY = "128MB"


@dataclass
class RerankResult:
    table: Any  # None: the rows went to the output file only
    metrics: SelectionMetrics
    summary: RunSummary
    group_field: str
    label_field: str | None


@task
def run_rerank(
    specs: list[InputSpec],
    opts: RunOptions,
    *,
    top_k: int = RerankOptions.top_k,
    by: RankBy = RerankOptions.by,
    group_field: str | None = RerankOptions.group_field,
    label_field: str | None = RerankOptions.label_field,
    rescore: bool = RerankOptions.rescore,
    group_as_text: bool = RerankOptions.group_as_text,
    model_named: bool = True,
    fail_under: float | None = None,
    engine: EngineFactory | None = None,
    progress: Progress | None = None,
    stdin: IO[bytes] | None = None,
    stdout: IO[str] | None = None,
) -> RerankResult:
    """Keep the best ``top_k`` candidates per group (0: all, ranked), with selection metrics.

    ``model_named``: ``opts.model`` was chosen by the user; rows scored by another model or
    settings are scored again with it. Otherwise rows scored by one model keep their scores
    and unscored rows are scored with that model; rows scored by several are refused.
    Groups are exact values (``1`` and ``"1"`` differ) unless ``group_as_text``.
    """
    if top_k < 0:
        raise UsageError("--top-k must be >= 0")
    by = RankBy(by)
    with tempfile.TemporaryDirectory(prefix="codescaler-rerank-") as tmp:
        specs = copy_streams(specs, stdin, tmp)  # read more than once
        groups = [group_field] if group_field else list(GROUP_FIELDS)
        labels = [label_field] if label_field else list(LABEL_FIELDS)
        s = survey(specs, opts.chunk_size, None, groups, labels)
        cols = list(s.columns)
        source = specs[0].name if len(specs) == 1 else None
        gcol = pick_field(
            cols, s.column(group_field), GROUP_FIELDS, "group", "--group-field", source, False
        )
        if gcol is not None:
            s.check_group(gcol)
        lcol = pick_field(
            cols, s.column(label_field), LABEL_FIELDS, "label", "--label-field", source, False
        )
        if lcol is not None:
            s.check_label(lcol)
        if fail_under is not None and lcol is None:
            raise UsageError(
                "--fail-under gates on best-of-N accuracy and needs a label column "
                f"({', '.join(LABEL_FIELDS)}) or --label-field"
            )
        scored_opts = _scoring_plan(s, opts, rescore, model_named, progress)
        path, summary = score_to_parquet(specs, scored_opts, engine, progress, tmp)
        if gcol is None:  # no id column: the question text names the group
            gcol = _question_column(path, opts, cols, source)
        known = _model_metadata(s) if not rescore else {}
        metrics = rank_file(
            path, gcol, lcol, top_k, by, group_as_text, opts.output, stdout, tmp, known
        )
    if fail_under is not None and metrics.best_of_n_accuracy is None:
        raise InputError(
            f"label field {lcol!r} has no value in any group: best-of-N accuracy, which "
            "--fail-under gates on, cannot be computed"
        )
    return RerankResult(None, metrics, summary, gcol, lcol)


def _scoring_plan(
    s: Survey, opts: RunOptions, rescore: bool, model_named: bool, progress: Progress | None
) -> RunOptions:
    """The run that scores what needs it: which scorer, and which rows keep their scores."""
    say = progress.message if progress is not None else (lambda _m: None)
    if rescore or not s.scored_by:
        return opts
    if model_named:
        target = target_scorer(opts)
        others = [b for k, b in s.scored_by.items() if not same_scorer(k, target)]
        for b in others:
            say(
                f"{b.rows} row(s) scored by {b.provenance.describe()} are scored again "
                f"with {opts.model.model}"
            )
        return replace(opts, rows=replace(opts.rows, reuse=target))
    if len(s.scored_by) > 1:
        found = "; ".join(
            f"{b.provenance.describe()} in {', '.join(list(b.files)[:3])}"
            for b in s.scored_by.values()
        )
        raise UsageError(
            f"the input's rows were scored by different models or settings ({found}); "
            "rank them with one: pass --model (rows scored otherwise are scored again) "
            "or --rescore"
        )
    ((key, b),) = s.scored_by.items()
    p = b.provenance
    if s.unscored:
        say(f"{s.unscored} unscored row(s) are scored with {p.describe()}, as the others were")
    model = replace(
        opts.model, model=p.model or opts.model.model, revision=p.revision, dtype=Dtype(p.dtype)
    )
    rows = replace(opts.rows, extract=ExtractMode(p.extract), shaping=Shaping(p.shaping), reuse=key)
    scoring = replace(opts.scoring, max_length=p.max_length or opts.scoring.max_length)
    return replace(opts, model=model, rows=rows, scoring=scoring)


def target_scorer(opts: RunOptions) -> tuple[Any, ...]:
    """The scorer ``opts`` names, as provenance names one (Provenance.scorer())."""
    from ..model.load import dtype_name, resolve_device, resolve_dtype
    from ..stages import model_name

    dtype = dtype_name(resolve_dtype(str(opts.model.dtype), resolve_device(opts.model.device)))
    return (
        model_name(opts.model.model),
        opts.model.revision or None,
        None,  # the commit is only known once loaded: not compared
        dtype,
        opts.scoring.max_length,
        str(opts.rows.extract),
        str(opts.rows.shaping),
    )


def _model_metadata(s: Survey) -> dict[bytes, bytes]:
    """File metadata naming the model the reused rows were scored by (one model only)."""
    if len(s.scored_by) != 1:
        return {}
    p = next(iter(s.scored_by.values())).provenance
    values = {
        "model": p.model,
        "revision": p.revision,
        "commit": p.commit,
        "dtype": p.dtype,
        "max_length": p.max_length,
    }
    return {
        f"codescaler.{k}".encode(): ("" if v is None else str(v)).encode()
        for k, v in values.items()
    }


def _question_column(path: str, opts: RunOptions, cols: list[str], source: str | None) -> str:
    """The question column the scored rows name (their provenance), to group by."""
    import duckdb

    con = duckdb.connect()
    q = f"SELECT DISTINCT {_quote(PROVENANCE_COLUMN)}.question_field FROM read_parquet(?)"
    names = [r[0] for r in con.execute(q, [path]).fetchall() if r[0]]
    if len(names) == 1:
        return names[0]
    flag = "--question-field or --group-field"
    found = pick_field(cols, opts.rows.question_field, QUESTION_FIELDS, "question", flag, source)
    assert found is not None
    return found


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def rank_file(
    path: str,
    gcol: str,
    lcol: str | None,
    top_k: int,
    by: RankBy,
    group_as_text: bool,
    output: str,
    stdout: IO[str] | None,
    tmp: str,
    known: dict[bytes, bytes] | None = None,
) -> SelectionMetrics:
    """Rank the scored rows within groups and stream the kept ones to ``output``."""
    import duckdb
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pq.read_schema(path)
    if "file_row_number" in schema.names:
        raise InputError("a column named 'file_row_number' is reserved for ranking; rename it")
    as_json = set(json_columns(schema))
    g = _quote(gcol)
    if group_as_text:  # the value's text: 1 and "1" in one group
        g = (
            f"CASE WHEN starts_with({g}, '\"') THEN json_extract_string({g}, '$') ELSE {g} END"
            if gcol in as_json
            else f"CAST({g} AS VARCHAR)"
        )
    primary = "reward" if by == RankBy.reward else "score"

    def key(col: str) -> str:  # a missing or NaN value sorts last
        return f"CASE WHEN isnan({col}) THEN NULL ELSE {col} END DESC NULLS LAST"

    # Ranks are computed on the few columns they need; the rows then stream out joined to
    # them in output order (DuckDB spills both sorts to ``tmp`` past its memory limit).
    ranks = f"""
        CREATE TEMP TABLE ranks AS SELECT
          file_row_number AS __row,
          row_number() OVER w AS __rank,
          count(*) OVER (PARTITION BY __g) AS __size,
          min(file_row_number) OVER (PARTITION BY __g) AS __first
        FROM (SELECT file_row_number, reward, score, {g} AS __g
              FROM read_parquet($path, file_row_number = true))
        WINDOW w AS (PARTITION BY __g ORDER BY {key(primary)}, {key("score")}, file_row_number)
    """
    keep = f"WHERE r.__rank <= {int(top_k)}" if top_k else ""
    label = f"t.{_quote(lcol)} AS __label" if lcol else "NULL AS __label"

    def joined(columns: str, where: str = "") -> str:
        return f"""
            SELECT {columns}, r.__rank, r.__size, r.__first
            FROM read_parquet($path, file_row_number = true) t
            JOIN ranks r ON t.file_row_number = r.__row {where}
            ORDER BY r.__first, r.__rank
        """

    # Metrics see every row (a few columns); the output gets the kept rows, whole.
    facts = joined(f"t.reward, t.score, t.code_valid, t.{_quote(gcol)} AS __group, {label}")
    rows = joined("t.*", keep)
    config = {
        "memory_limit": DUCKDB_MEMORY,
        "temp_directory": tmp,
        "threads": 1,
        "preserve_insertion_order": False,
    }
    con = duckdb.connect(config=config)
    fields = [*schema, pa.field("rank", pa.int32()), pa.field("group_size", pa.int32())]
    # ``known``: the scoring model's metadata when no row needed the model this time.
    meta = {**(known or {}), **(schema.metadata or {}), b"codescaler.task": b"rerank"}
    out_schema = pa.schema(fields, metadata=meta)
    acc = SelectionAccumulator(top_k)
    writer = TableWriter(output, out_schema, stdout)
    try:
        con.execute(ranks, {"path": path})
        for batch in con.sql(facts, params={"path": path}).to_arrow_reader(8192):
            acc.add_batch(
                batch.column("__first").to_pylist(),
                batch.column("__rank").to_pylist(),
                batch.column("reward").to_pylist(),
                batch.column("score").to_pylist(),
                batch.column("code_valid").to_pylist(),
                _labels(batch, lcol, lcol in as_json if lcol else False),
                batch.column("__group").to_pylist(),
            )
        for batch in con.sql(rows, params={"path": path}).to_arrow_reader(8192):
            writer.write(_as_output(pa.Table.from_batches([batch]), out_schema))
        writer.close()
    except BaseException:
        writer.abort()
        raise
    finally:
        con.close()
    return acc.result()


def _labels(batch: Any, lcol: str | None, is_json: bool) -> list[Any] | None:
    if lcol is None:
        return None
    values = batch.column("__label").to_pylist()
    return [json.loads(v) if is_json and v is not None else v for v in values]


def _as_output(part: Any, schema: Any) -> Any:
    """The kept rows in the output's schema: rank columns added, provenance updated."""
    import pyarrow as pa

    from ..provenance import parse, provenance_array

    provs = [parse(v) for v in part.column(PROVENANCE_COLUMN).to_pylist()]
    ranked = provenance_array([p.with_columns("rerank", RANK_COLUMNS) for p in provs])  # type: ignore[union-attr]
    arrays = []
    for f in schema:
        if f.name == PROVENANCE_COLUMN:
            arrays.append(ranked)
        elif f.name == "rank":
            arrays.append(part.column("__rank").cast(pa.int32()))
        elif f.name == "group_size":
            arrays.append(part.column("__size").cast(pa.int32()))
        else:
            col = part.column(f.name)
            arrays.append(
                pa.nulls(len(part), f.type) if pa.types.is_null(f.type) else col.cast(f.type)
            )
    return pa.Table.from_arrays(arrays, schema=schema)
