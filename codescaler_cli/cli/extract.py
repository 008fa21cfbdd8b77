"""`codescaler extract`: extraction alone, no model (torch is never imported)."""

from __future__ import annotations

from ..config import RowOptions
from .groups import (
    Robustness,
    Source,
    extract_row_options,
    robustness,
    sources,
    uses,
)
from .options import (
    Output,
    Quiet,
    SummaryJson,
)


@uses(source=sources, rows=extract_row_options, robust=robustness)
def extract(
    source: Source,
    output: Output,
    rows: RowOptions,
    robust: Robustness,
    quiet: Quiet = False,
    summary_json: SummaryJson = None,
) -> None:
    """Extract code only: adds code, code_valid, extract_method, n_code_blocks; prints a summary."""
    from ..engines.loop import run
    from ..io.writers import write_json
    from .display import RichProgress, print_summary

    opts = robust.run_options(output, rows)
    summary = run(
        source.specs(output, opts.rejected, summary_json),
        opts,
        progress=RichProgress("extracting", quiet=quiet),
        side_outputs={"--summary-json": summary_json},
    )
    if not quiet:
        print_summary(summary, "codescaler extract")
    write_json(summary_json, summary.as_dict())
