"""`codescaler rerank`: keep the best K candidates per problem, with selection metrics."""

from __future__ import annotations

from typing import Annotated

import typer

from .options import (
    AllowPickle,
    ChunkSize,
    Compile,
    Dataset,
    Device,
    Dtype,
    Engine,
    Extract,
    GpusPerWorker,
    Inputs,
    MaxBatch,
    MaxLength,
    MaxTokens,
    ModelOpt,
    NoDedup,
    NoPrefix,
    NumWorkers,
    Output,
    QuestionField,
    Quiet,
    RayAddress,
    ResponseField,
    Revision,
    Shaping,
    Split,
    Streams,
    TrustRemote,
    make_config,
    make_runner,
    specs_for,
    write_json,
)


def rerank(
    inputs: Inputs = None,
    output: Output = ...,
    top_k: Annotated[
        int, typer.Option("--top-k", "-k", help="Candidates kept per group (0: all).")
    ] = 1,
    all_rows: Annotated[
        bool, typer.Option("--all", help="Keep every row, ranked (same as --top-k 0).")
    ] = False,
    by: Annotated[
        str, typer.Option("--by", help="Rank by 'reward' (shaped, validity first) or 'score'.")
    ] = "reward",
    group_field: Annotated[
        str | None,
        typer.Option(
            "--group-field", help="Problem id column \\[default: auto, else the question]."
        ),
    ] = None,
    label_field: Annotated[
        str | None,
        typer.Option("--label-field", help="Pass/fail column \\[default: passed/correct/label]."),
    ] = None,
    rescore: Annotated[
        bool, typer.Option("--rescore", help="Score again even if the input has scores.")
    ] = False,
    fail_under: Annotated[
        float | None,
        typer.Option(
            "--fail-under",
            help="Exit 1 if best-of-N accuracy (with labels) or mean reward is below X.",
        ),
    ] = None,
    metrics_json: Annotated[
        str | None, typer.Option("--metrics-json", help="Write metrics as JSON.")
    ] = None,
    question_field: QuestionField = None,
    response_field: ResponseField = None,
    extract: Extract = "auto",
    model: ModelOpt = None,
    revision: Revision = None,
    device: Device = "auto",
    dtype: Dtype = "auto",
    max_length: MaxLength = 4096,
    max_tokens_per_batch: MaxTokens = None,
    streams: Streams = None,
    max_batch_size: MaxBatch = None,
    shaping: Shaping = "softplus",
    no_dedup: NoDedup = False,
    no_prefix_reuse: NoPrefix = False,
    chunk_size: ChunkSize = 50_000,
    dataset: Dataset = None,
    split: Split = "train",
    quiet: Quiet = False,
    trust_remote_code: TrustRemote = False,
    allow_pickle_weights: AllowPickle = False,
    compile: Compile = False,
    engine: Engine = "local",
    ray_address: RayAddress = None,
    num_workers: NumWorkers = None,
    gpus_per_worker: GpusPerWorker = None,
) -> None:
    """Rank candidates within each problem and keep the best K (scores first if needed)."""
    from ..errors import UsageError
    from ..jobs import run_rerank
    from ..progress import RichProgress, print_selection_metrics

    opts = dict(locals())
    if top_k < 0:
        raise UsageError("--top-k must be >= 0")
    specs = specs_for(inputs, dataset, split)
    result = run_rerank(
        specs,
        make_config(output, opts),
        top_k=0 if all_rows else top_k,
        by=by,
        group_field=group_field,
        label_field=label_field,
        rescore=rescore,
        runner=make_runner(opts),
        progress=RichProgress("scoring", quiet=quiet),
    )
    m = result.metrics
    if not quiet:
        print_selection_metrics(m, result.group_field, result.label_field)
    write_json(metrics_json, m.as_dict())
    if fail_under is not None:
        name, value = m.gate_value()
        if value < fail_under:
            typer.echo(
                f"codescaler: {name} {value:.4f} is below --fail-under {fail_under}", err=True
            )
            raise typer.Exit(1)
