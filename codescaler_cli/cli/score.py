"""`codescaler score`: extract code from each response and score it."""

from __future__ import annotations

from ..config import CacheOptions, ModelOptions, RowOptions, ScoringOptions
from .groups import (
    EngineChoice,
    Robustness,
    Source,
    cache_options,
    engine_options,
    model_options,
    robustness,
    row_options,
    scoring_options,
    sources,
    uses,
)
from .options import (
    Output,
    Quiet,
    SummaryJson,
)


@uses(
    source=sources,
    rows=row_options,
    model=model_options,
    scoring=scoring_options,
    cache=cache_options,
    robust=robustness,
    engine=engine_options,
)
def score(
    source: Source,
    output: Output,
    rows: RowOptions,
    model: ModelOptions,
    scoring: ScoringOptions,
    cache: CacheOptions,
    robust: Robustness,
    engine: EngineChoice,
    quiet: Quiet = False,
    summary_json: SummaryJson = None,
) -> None:
    """Extract code from each response and score it with the reward model."""
    from ..engines.loop import run
    from ..io.writers import write_json
    from .display import RichProgress, print_summary

    opts = robust.run_options(output, rows, model, scoring, cache)
    factory = engine.factory()
    summary = run(
        source.specs(output, opts.rejected, summary_json),
        opts,
        factory(opts) if factory else None,
        progress=RichProgress("scoring", quiet=quiet),
        side_outputs={"--summary-json": summary_json},
    )
    if not quiet:
        print_summary(summary, "codescaler score")
    write_json(summary_json, summary.as_dict())
