"""`codescaler score`: extract code from each response and score it."""

from __future__ import annotations

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
    OnBadRow,
    Output,
    QuestionField,
    Quiet,
    RayAddress,
    Rejected,
    ResponseField,
    Resume,
    Revision,
    Shaping,
    Split,
    Streams,
    SummaryJson,
    TrustRemote,
    make_config,
    make_runner,
    specs_for,
    write_json,
)


def score(
    inputs: Inputs = None,
    output: Output = ...,
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
    resume: Resume = "auto",
    on_bad_row: OnBadRow = "error",
    rejected: Rejected = None,
    dataset: Dataset = None,
    split: Split = "train",
    quiet: Quiet = False,
    summary_json: SummaryJson = None,
    trust_remote_code: TrustRemote = False,
    allow_pickle_weights: AllowPickle = False,
    compile: Compile = False,
    engine: Engine = "local",
    ray_address: RayAddress = None,
    num_workers: NumWorkers = None,
    gpus_per_worker: GpusPerWorker = None,
) -> None:
    """Extract code from each response and score it with the reward model."""
    from ..progress import RichProgress, print_summary

    opts = dict(locals())
    specs = specs_for(inputs, dataset, split)
    runner = make_runner(opts)
    summary = runner(
        specs, make_config(output, opts), progress=RichProgress("scoring", quiet=quiet)
    )
    if not quiet:
        print_summary(summary, "codescaler score")
    write_json(summary_json, summary.as_dict())
