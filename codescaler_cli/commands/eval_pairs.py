"""`codescaler eval-pairs`: pairwise preference accuracy on (question, chosen, rejected) rows."""

from __future__ import annotations

from typing import Annotated

import typer

from .options import (
    AllowPickle,
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
    NumWorkers,
    QuestionField,
    Quiet,
    RayAddress,
    Revision,
    Split,
    Streams,
    TrustRemote,
    make_config,
    make_runner,
    specs_for,
    write_json,
)


def eval_pairs(
    inputs: Inputs = None,
    output: Annotated[
        str | None,
        typer.Option("--output", "-o", help="Per-pair scores (.parquet, .jsonl or '-')."),
    ] = None,
    chosen_field: Annotated[
        str | None,
        typer.Option("--chosen-field", help="Preferred program \\[default: code_pos/chosen]."),
    ] = None,
    rejected_field: Annotated[
        str | None,
        typer.Option(
            "--rejected-field", help="Dispreferred program \\[default: code_neg/rejected]."
        ),
    ] = None,
    metrics_json: Annotated[
        str | None, typer.Option("--metrics-json", help="Write metrics as JSON.")
    ] = None,
    fail_under: Annotated[
        float | None, typer.Option("--fail-under", help="Exit 1 if pair accuracy is below X.")
    ] = None,
    question_field: QuestionField = None,
    extract: Extract = "auto",
    model: ModelOpt = None,
    revision: Revision = None,
    device: Device = "auto",
    dtype: Dtype = "auto",
    max_length: MaxLength = 4096,
    max_tokens_per_batch: MaxTokens = None,
    streams: Streams = None,
    max_batch_size: MaxBatch = None,
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
    """Score both programs of each pair; report how often the chosen one scores higher."""
    from ..jobs import run_eval_pairs
    from ..progress import RichProgress, print_pair_metrics

    opts = dict(locals())
    specs = specs_for(inputs, dataset, split)
    result = run_eval_pairs(
        specs,
        make_config(output or "", opts),
        chosen_field=chosen_field,
        rejected_field=rejected_field,
        runner=make_runner(opts),
        progress=RichProgress("scoring pairs", quiet=quiet),
    )
    if not quiet:
        print_pair_metrics(result.metrics)
    write_json(metrics_json, result.metrics.as_dict())
    if fail_under is not None and result.metrics.accuracy < fail_under:
        typer.echo(
            f"codescaler: pair accuracy {result.metrics.accuracy:.4f} is below --fail-under {fail_under}",
            err=True,
        )
        raise typer.Exit(1)
