"""`codescaler rerank`: keep the best K candidates per problem, with selection metrics."""

from __future__ import annotations

from typing import Annotated

import typer

from ..config import (
    CacheOptions,
    ModelOptions,
    RankBy,
    RerankOptions,
    RowOptions,
    RunOptions,
    ScoringOptions,
)
from .gate import FailUnder, check_gate, check_threshold
from .groups import (
    EngineChoice,
    Source,
    cache_options,
    engine_options,
    model_options,
    row_options,
    scoring_options,
    sources,
    uses,
)
from .options import (
    INPUT,
    OUTPUT,
    ChunkSize,
    MetricsJson,
    Output,
    Quiet,
    flag,
    option,
)


@uses(
    source=sources,
    rows=row_options,
    model=model_options,
    scoring=scoring_options,
    cache=cache_options,
    engine=engine_options,
)
def rerank(
    ctx: typer.Context,
    source: Source,
    output: Output,
    rows: RowOptions,
    model: ModelOptions,
    scoring: ScoringOptions,
    cache: CacheOptions,
    engine: EngineChoice,
    top_k: Annotated[
        int,
        option(
            "--top-k", "-k", help="Candidates kept per group (0: all).", panel=OUTPUT, metavar="K"
        ),
    ] = RerankOptions.top_k,
    all_rows: Annotated[
        bool, flag("--all", help="Keep every row, ranked (same as --top-k 0).", panel=OUTPUT)
    ] = False,
    by: Annotated[
        RankBy,
        option(
            "--by",
            help="Rank by the shaped reward (validity first) or the raw score.",
            panel=OUTPUT,
        ),
    ] = RerankOptions.by,
    group_field: Annotated[
        str | None,
        option(
            "--group-field",
            help="Problem id column \\[default: auto, else the question].",
            panel=INPUT,
            metavar="NAME",
        ),
    ] = RerankOptions.group_field,
    label_field: Annotated[
        str | None,
        option(
            "--label-field",
            help="Pass/fail column \\[default: passed/correct/label].",
            panel=INPUT,
            metavar="NAME",
        ),
    ] = RerankOptions.label_field,
    group_as_text: Annotated[
        bool,
        flag(
            "--group-as-text",
            help='Group by the value\'s text: 1 and "1" in one group (default: exact values).',
            panel=INPUT,
        ),
    ] = RerankOptions.group_as_text,
    rescore: Annotated[
        bool, flag("--rescore", help="Score again even if the input has scores.", panel=INPUT)
    ] = RerankOptions.rescore,
    fail_under: FailUnder = None,
    metrics_json: MetricsJson = None,
    chunk_size: ChunkSize = RunOptions.chunk_size,
    quiet: Quiet = False,
) -> None:
    """Rank candidates within each problem and keep the best K (scores first if needed).

    --fail-under X (a fraction, 0..1) gates on best-of-N accuracy and needs a label column.
    """
    import os

    from ..io.writers import write_json
    from ..tasks.rerank import run_rerank
    from .display import RichProgress, print_selection_metrics

    check_threshold(fail_under)
    opts = RunOptions(output, rows, model, scoring, chunk_size, cache=cache)
    # --model (or $CODESCALER_MODEL) named: rows scored by another model are scored again.
    source_of = ctx.get_parameter_source("model")
    named = getattr(source_of, "name", "") == "COMMANDLINE" or bool(
        os.environ.get("CODESCALER_MODEL")
    )
    result = run_rerank(
        source.specs(output, metrics_json),
        opts,
        top_k=0 if all_rows else top_k,
        by=by,
        group_field=group_field,
        label_field=label_field,
        rescore=rescore,
        group_as_text=group_as_text,
        model_named=named,
        fail_under=fail_under,
        engine=engine.factory(),
        progress=RichProgress("scoring", quiet=quiet),
        side_outputs={"--metrics-json": metrics_json},
    )
    m = result.metrics
    if not quiet:
        print_selection_metrics(m, result.group_field, result.label_field)
    write_json(metrics_json, m.as_dict())
    check_gate(*m.gate_value(), fail_under)
