"""`codescaler eval-pairs`: pairwise preference accuracy on (question, chosen, rejected) rows."""

from __future__ import annotations

from typing import Annotated

from ..config import CacheOptions, ModelOptions, RowOptions, RunOptions, ScoringOptions
from .gate import FailUnder, check_gate, check_threshold
from .groups import (
    EngineChoice,
    Source,
    cache_options,
    engine_options,
    model_options,
    pair_row_options,
    scoring_options,
    sources,
    uses,
)
from .options import (
    INPUT,
    OUTPUT,
    ChunkSize,
    MetricsJson,
    Quiet,
    option,
)


@uses(
    source=sources,
    rows=pair_row_options,
    model=model_options,
    scoring=scoring_options,
    cache=cache_options,
    engine=engine_options,
)
def eval_pairs(
    source: Source,
    rows: RowOptions,
    model: ModelOptions,
    scoring: ScoringOptions,
    cache: CacheOptions,
    engine: EngineChoice,
    output: Annotated[
        str | None,
        option(
            "--output",
            "-o",
            help="Per-pair scores (.parquet, .jsonl or '-').",
            panel=OUTPUT,
            metavar="PATH",
        ),
    ] = None,
    chosen_field: Annotated[
        str | None,
        option(
            "--chosen-field",
            help="Preferred program \\[default: code_pos/chosen].",
            panel=INPUT,
            metavar="NAME",
        ),
    ] = None,
    rejected_field: Annotated[
        str | None,
        option(
            "--rejected-field",
            help="Dispreferred program \\[default: code_neg/rejected].",
            panel=INPUT,
            metavar="NAME",
        ),
    ] = None,
    metrics_json: MetricsJson = None,
    fail_under: FailUnder = None,
    chunk_size: ChunkSize = RunOptions.chunk_size,
    quiet: Quiet = False,
) -> None:
    """Score both programs of each pair; report how often the chosen one scores higher.

    --fail-under gates on the pair accuracy.
    """
    from ..io.writers import write_json
    from ..tasks.eval_pairs import run_eval_pairs
    from .display import RichProgress, print_pair_metrics

    check_threshold(fail_under)
    opts = RunOptions(output or "", rows, model, scoring, chunk_size, cache=cache)
    result = run_eval_pairs(
        source.specs(output or "", metrics_json),
        opts,
        chosen_field=chosen_field,
        rejected_field=rejected_field,
        engine=engine.factory(),
        progress=RichProgress("scoring pairs", quiet=quiet),
        side_outputs={"--metrics-json": metrics_json},
    )
    if not quiet:
        print_pair_metrics(result.metrics)
    write_json(metrics_json, result.metrics.as_dict())
    check_gate("pair accuracy", result.metrics.accuracy, fail_under)
