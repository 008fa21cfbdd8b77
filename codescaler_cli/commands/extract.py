"""`codescaler extract`: extraction alone, no model (torch is never imported)."""

from __future__ import annotations

from .options import (
    ChunkSize,
    Dataset,
    Extract,
    Inputs,
    OnBadRow,
    Output,
    QuestionField,
    Quiet,
    Rejected,
    ResponseField,
    Resume,
    Split,
    SummaryJson,
    make_config,
    specs_for,
    write_json,
)


def extract(
    inputs: Inputs = None,
    output: Output = ...,
    question_field: QuestionField = None,
    response_field: ResponseField = None,
    extract: Extract = "auto",
    chunk_size: ChunkSize = 50_000,
    resume: Resume = "auto",
    on_bad_row: OnBadRow = "error",
    rejected: Rejected = None,
    dataset: Dataset = None,
    split: Split = "train",
    quiet: Quiet = False,
    summary_json: SummaryJson = None,
) -> None:
    """Extract code only: adds code, code_valid, extract_method, n_code_blocks; prints a summary."""
    from ..progress import RichProgress, print_summary
    from ..runner import run_job

    opts = dict(locals())
    specs = specs_for(inputs, dataset, split)
    cfg = make_config(output, opts, score=False)
    summary = run_job(specs, cfg, progress=RichProgress("extracting", quiet=quiet))
    if not quiet:
        print_summary(summary, "codescaler extract")
    write_json(summary_json, summary.as_dict())
