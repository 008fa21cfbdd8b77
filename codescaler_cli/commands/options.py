"""Options shared by several commands, declared once, and the config builders behind them."""

from __future__ import annotations

import json
import os
from typing import Annotated, Any

import typer

Inputs = Annotated[
    list[str] | None,
    typer.Argument(
        metavar="INPUT...",
        help="JSONL/JSON/Parquet files, globs, directories, '-' for JSONL on stdin, "
        "or hf://datasets/NAME.",
        show_default=False,
    ),
]
Output = Annotated[
    str,
    typer.Option(
        "--output", "-o", help="Output .parquet or .jsonl path, or '-' for JSONL on stdout."
    ),
]
QuestionField = Annotated[
    str | None, typer.Option("--question-field", help="Question column (default: auto-detect).")
]
ResponseField = Annotated[
    str | None, typer.Option("--response-field", help="Response column (default: auto-detect).")
]
Extract = Annotated[
    str, typer.Option("--extract", help="Code extraction mode: auto, paper, last or none.")
]
ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="Hub id or local directory \\[default: $CODESCALER_MODEL or LARK-Lab/CodeScaler-1.7B].",
        show_default=False,
    ),
]
Revision = Annotated[
    str | None, typer.Option("--revision", help="Model revision (branch, tag, commit).")
]
Device = Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps.")]
Dtype = Annotated[
    str,
    typer.Option(
        "--dtype", help="auto (bf16 on CUDA, fp32 otherwise), float32, bfloat16, float16."
    ),
]
MaxLength = Annotated[
    int, typer.Option("--max-length", help="Max tokens per candidate (question shortened first).")
]
MaxTokens = Annotated[
    int | None,
    typer.Option(
        "--max-tokens-per-batch",
        help="Padded-token budget per forward pass \\[default: per device].",
    ),
]
Streams = Annotated[
    int | None,
    typer.Option(
        "--streams",
        min=1,
        help="Forward passes run at once, each with an equal share of torch's threads "
        "\\[default: 2 on a CPU with 2+ threads, else 1].",
        show_default=False,
    ),
]
MaxBatch = Annotated[
    int | None, typer.Option("--max-batch-size", help="Cap on candidates per forward pass.")
]
Shaping = Annotated[
    str,
    typer.Option(
        "--shaping", help="Reward shaping for valid code: softplus (paper), sigmoid or raw."
    ),
]
NoDedup = Annotated[
    bool, typer.Option("--no-dedup", help="Score identical (question, code) pairs separately.")
]
NoPrefix = Annotated[
    bool,
    typer.Option(
        "--no-prefix-reuse", help="Do not reuse a problem's prompt across its candidates."
    ),
]
ChunkSize = Annotated[
    int, typer.Option("--chunk-size", help="Rows read, sorted and checkpointed together.")
]
Resume = Annotated[
    str, typer.Option("--resume", help="auto: continue an interrupted run; never: start over.")
]
OnBadRow = Annotated[
    str,
    typer.Option(
        "--on-bad-row", help="error: stop at the first bad row; skip: set it aside and go on."
    ),
]
Rejected = Annotated[
    str | None,
    typer.Option("--rejected", help="Where skipped rows go \\[default: OUTPUT.rejected.jsonl]."),
]
Dataset = Annotated[
    str | None, typer.Option("--dataset", help="Hugging Face dataset name to read.")
]
Split = Annotated[str, typer.Option("--split", help="Dataset split for --dataset / hf:// inputs.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or summary.")]
SummaryJson = Annotated[
    str | None, typer.Option("--summary-json", help="Also write the run summary as JSON.")
]
TrustRemote = Annotated[
    bool,
    typer.Option("--trust-remote-code", help="Allow model repos to run their own Python code."),
]
AllowPickle = Annotated[
    bool,
    typer.Option("--allow-pickle-weights", help="Allow loading non-safetensors (pickle) weights."),
]


Compile = Annotated[
    bool,
    typer.Option(
        "--compile",
        help="torch.compile the model: faster on GPUs for big runs; the first batches compile (minutes).",
    ),
]
Engine = Annotated[str, typer.Option("--engine", help="local, or ray to run on a Ray cluster.")]
RayAddress = Annotated[
    str | None,
    typer.Option(
        "--ray-address", help="Ray cluster address \\[default: $RAY_ADDRESS or a local cluster]."
    ),
]
NumWorkers = Annotated[
    int | None, typer.Option("--num-workers", help="Ray scorer actors \\[default: one per GPU].")
]
GpusPerWorker = Annotated[
    float | None,
    typer.Option("--gpus-per-worker", help="GPUs per Ray actor \\[default: 1 on GPU clusters]."),
]


def make_config(output: str, opts: dict[str, Any], *, score: bool = True) -> Any:
    """Build a RunConfig from a command's keyword arguments (their names are the flags')."""
    from ..model import ModelOptions, default_model
    from ..pipeline import PipelineOptions
    from ..runner import RunConfig
    from ..scoring import ScoringOptions

    max_length = opts.get("max_length", 4096)
    return RunConfig(
        output=output,
        pipeline=PipelineOptions(
            question_field=opts.get("question_field"),
            response_field=opts.get("response_field"),
            extract_mode=opts.get("extract", "auto"),
            shaping=opts.get("shaping", "softplus"),
            max_length=max_length,
            score=score,
        ),
        model=ModelOptions(
            model=opts.get("model") or default_model(),
            revision=opts.get("revision"),
            device=opts.get("device", "auto"),
            dtype=opts.get("dtype", "auto"),
            trust_remote_code=opts.get("trust_remote_code", False),
            allow_pickle_weights=opts.get("allow_pickle_weights", False),
            compile=opts.get("compile", False),
        ),
        scoring=ScoringOptions(
            max_length=max_length,
            max_tokens_per_batch=opts.get("max_tokens_per_batch"),
            max_batch_size=opts.get("max_batch_size"),
            dedup=not opts.get("no_dedup", False),
            prefix_reuse=not opts.get("no_prefix_reuse", False),
            streams=opts.get("streams"),
        ),
        chunk_size=opts.get("chunk_size", 50_000),
        resume=opts.get("resume", "auto"),
        on_bad_row=opts.get("on_bad_row", "error"),
        rejected_path=opts.get("rejected"),
    )


def make_runner(opts: dict[str, Any]) -> Any:
    """The scoring run for --engine: the local engine, or Ray Data actors."""
    from ..errors import UsageError
    from ..runner import run_job

    engine = opts.get("engine", "local")
    if engine == "local":
        for flag in ("ray_address", "num_workers", "gpus_per_worker"):
            if opts.get(flag) is not None:
                raise UsageError(f"--{flag.replace('_', '-')} needs --engine ray")
        return run_job
    if engine != "ray":
        raise UsageError("--engine must be 'local' or 'ray'")
    from ..ray_engine import RayOptions, run_ray_job

    ray_opts = RayOptions(
        address=opts.get("ray_address"),
        num_workers=opts.get("num_workers"),
        gpus_per_worker=opts.get("gpus_per_worker"),
    )

    def runner(specs: Any, cfg: Any, *, progress: Any = None, stdin: Any = None, **_: Any) -> Any:
        return run_ray_job(specs, cfg, ray_opts, progress=progress, stdin=stdin)

    return runner


def specs_for(inputs: list[str] | None, dataset: str | None, split: str) -> list[Any]:
    from ..errors import UsageError
    from ..io import resolve_inputs

    if not inputs and not dataset:
        raise UsageError(
            "give an INPUT (file, glob, directory, '-' or hf://datasets/NAME) or --dataset"
        )
    return resolve_inputs(inputs or [], dataset=dataset, split=split)


def write_json(path: str | None, data: dict[str, Any]) -> None:
    """Write a small JSON report atomically (--summary-json, --metrics-json)."""
    if not path:
        return
    from ..io import atomic_path

    fd, tmp = atomic_path(path)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=True, default=str)
        fh.write("\n")
    os.replace(tmp, path)
