"""rerank: score (unless already scored), rank within problems, keep the top K, write.

Every option and field is checked against the input before any scoring: a wrong
``--group-field`` or a bad label must not surface after hours of model time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import IO, Any

from ..config import RankBy, RunOptions
from ..errors import InputError, UsageError
from ..fields import (
    GROUP_FIELDS,
    LABEL_FIELDS,
    QUESTION_FIELDS,
    detect_fields,
    pick_field,
    record_columns,
)
from ..io.inputs import InputSpec
from ..progress import Progress, RunSummary
from ..rank import SelectionMetrics, parse_label, rank_table, selection_metrics
from ..tables import OUTPUT_COLUMNS, looks_scored, records_to_table, to_json_text
from .common import EngineFactory, load_rows, score_to_table, task, write_result


@dataclass
class RerankResult:
    table: Any
    metrics: SelectionMetrics
    summary: RunSummary | None  # None when the input was already scored
    group_field: str
    label_field: str | None


@task
def run_rerank(
    specs: list[InputSpec],
    opts: RunOptions,
    *,
    top_k: int = 1,
    by: RankBy = RankBy.reward,
    group_field: str | None = None,
    label_field: str | None = None,
    rescore: bool = False,
    group_as_text: bool = False,
    engine: EngineFactory | None = None,
    progress: Progress | None = None,
    stdin: IO[bytes] | None = None,
    stdout: IO[str] | None = None,
) -> RerankResult:
    """Keep the best ``top_k`` candidates per group (0: all, ranked), with selection metrics.

    Groups are exact values (``1`` and ``"1"`` differ) unless ``group_as_text``.
    """
    if top_k < 0:
        raise UsageError("--top-k must be >= 0")
    by = RankBy(by)
    stdin, records, locations = load_rows(specs, opts, stdin)
    columns = record_columns(records, len(records))
    scored = looks_scored(columns) and not rescore
    source = specs[0].name if len(specs) == 1 else None
    # The group: a named or usual id column, else the question text.
    gcol = pick_field(columns, group_field, GROUP_FIELDS, "group", "--group-field", source, False)
    if gcol is None:
        if scored:
            flag = "--question-field or --group-field"
            gcol = pick_field(
                columns, opts.rows.question_field, QUESTION_FIELDS, "question", flag, source
            )
        else:
            fields = detect_fields(
                columns, opts.rows.question_field, opts.rows.response_field, source or "input"
            )
            gcol = fields.question
    assert gcol is not None
    lcol = pick_field(columns, label_field, LABEL_FIELDS, "label", "--label-field", source, False)
    groups = [rec.get(gcol) for rec in records]
    if group_as_text:  # 1 and "1" in one group: compare the values' text
        groups = [v if isinstance(v, str) or v is None else to_json_text(v) for v in groups]
    for value, loc in zip(groups, locations, strict=True):
        if value is None:
            raise InputError(
                f"{loc}: group field {gcol!r} is null; fill it or choose --group-field"
            )
        if isinstance(value, (list, dict)):
            raise InputError(
                f"{loc}: group field {gcol!r} holds a {type(value).__name__}, not an id; "
                "choose a column of ids or text with --group-field"
            )
    labels = None
    if lcol is not None:
        labels = [
            parse_label(rec.get(lcol), f"{loc}: field {lcol!r}")
            for rec, loc in zip(records, locations, strict=True)
        ]
    if not scored and gcol in OUTPUT_COLUMNS:
        raise UsageError(f"--group-field {gcol!r} is one of the output columns; rename it")

    summary = None
    if scored:
        table = records_to_table(records)
        meta = None
    else:
        table, summary = score_to_table(specs, opts, engine, progress, stdin)
        meta = table.schema.metadata
    del records
    ranked_all, kept_all = rank_table(table, gcol, None, by, groups)
    ranked_labels = [labels[i] for i in kept_all] if labels is not None else None
    rank_all = ranked_all.column("rank").to_pylist()
    keys = [groups[i] for i in kept_all]
    kept = [i for i, r in enumerate(rank_all) if not top_k or r <= top_k]
    metrics = selection_metrics(
        keys,
        rank_all,
        ranked_all.column("reward").to_pylist(),
        ranked_all.column("score").to_pylist(),
        [bool(v) for v in ranked_all.column("code_valid").to_pylist()],
        kept,
        ranked_labels,
    )
    out = ranked_all if not top_k else rank_table(table, gcol, top_k, by, groups)[0]
    write_result(out, opts.output, meta, stdout)
    return RerankResult(out, metrics, summary, gcol, lcol)
