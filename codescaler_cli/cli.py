"""The `codescaler` command line: thin commands over the library.

Data goes to stdout (only with ``-o -``); progress, summaries and errors go to stderr.
Every user-fixable problem is a :class:`CodescalerError`, printed as one line with its
exit code; ``CODESCALER_DEBUG=1`` shows tracebacks.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer

from ._version import __version__
from .errors import CodescalerError

app = typer.Typer(
    name="codescaler",
    help="Score code candidates with the CodeScaler execution-free reward model.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

F = TypeVar("F", bound=Callable[..., Any])


def _err(message: str) -> None:
    typer.echo(f"codescaler: error: {message}", err=True)


def handle_errors(func: F) -> F:
    """The one place errors become messages and exit codes."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        debug = os.environ.get("CODESCALER_DEBUG") == "1"
        try:
            return func(*args, **kwargs)
        except typer.Exit:
            raise
        except CodescalerError as exc:
            if debug:
                raise
            _err(str(exc))
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            _err("interrupted; rerun the same command to resume from the last finished chunk")
            raise typer.Exit(130) from None
        except BrokenPipeError:
            # The reader of stdout went away (e.g. `| head`): not an error of ours.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            raise typer.Exit(0) from None
        except Exception as exc:
            if debug:
                raise
            text = (str(exc).strip() or type(exc).__name__).splitlines()[0][:300]
            _err(f"unexpected {type(exc).__name__}: {text} (set CODESCALER_DEBUG=1 for a traceback)")
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"codescaler {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit."),
    ] = False,
) -> None:
    """Score code candidates with the CodeScaler execution-free reward model."""


# ---------------------------------------------------------------- shared options

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
    typer.Option("--output", "-o", help="Output .parquet or .jsonl path, or '-' for JSONL on stdout."),
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
        help="Hub id or local directory [default: $CODESCALER_MODEL or LARK-Lab/CodeScaler-1.7B].",
        show_default=False,
    ),
]
Revision = Annotated[str | None, typer.Option("--revision", help="Model revision (branch, tag, commit).")]
Device = Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps.")]
Dtype = Annotated[
    str, typer.Option("--dtype", help="auto (bf16 on CUDA, fp32 otherwise), float32, bfloat16, float16.")
]
MaxLength = Annotated[int, typer.Option("--max-length", help="Max tokens per candidate (question shortened first).")]
MaxTokens = Annotated[
    int | None,
    typer.Option("--max-tokens-per-batch", help="Padded-token budget per forward pass [default: per device]."),
]
MaxBatch = Annotated[int | None, typer.Option("--max-batch-size", help="Cap on candidates per forward pass.")]
Shaping = Annotated[
    str, typer.Option("--shaping", help="Reward shaping for valid code: softplus (paper), sigmoid or raw.")
]
NoDedup = Annotated[bool, typer.Option("--no-dedup", help="Score identical (question, code) pairs separately.")]
NoPrefix = Annotated[
    bool, typer.Option("--no-prefix-reuse", help="Do not reuse a problem's prompt across its candidates.")
]
ChunkSize = Annotated[int, typer.Option("--chunk-size", help="Rows read, sorted and checkpointed together.")]
Resume = Annotated[str, typer.Option("--resume", help="auto: continue an interrupted run; never: start over.")]
OnBadRow = Annotated[
    str, typer.Option("--on-bad-row", help="error: stop at the first bad row; skip: set it aside and go on.")
]
Rejected = Annotated[
    str | None, typer.Option("--rejected", help="Where skipped rows go [default: OUTPUT.rejected.jsonl].")
]
Dataset = Annotated[str | None, typer.Option("--dataset", help="Hugging Face dataset name to read.")]
Split = Annotated[str, typer.Option("--split", help="Dataset split for --dataset / hf:// inputs.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or summary.")]
SummaryJson = Annotated[str | None, typer.Option("--summary-json", help="Also write the run summary as JSON.")]
TrustRemote = Annotated[
    bool, typer.Option("--trust-remote-code", help="Allow model repos to run their own Python code.")
]
AllowPickle = Annotated[
    bool, typer.Option("--allow-pickle-weights", help="Allow loading non-safetensors (pickle) weights.")
]


def _specs(inputs: list[str] | None, dataset: str | None, split: str) -> list:
    from .io import resolve_inputs

    if not inputs and not dataset:
        from .errors import UsageError

        raise UsageError("give an INPUT (file, glob, directory, '-' or hf://datasets/NAME) or --dataset")
    return resolve_inputs(inputs or [], dataset=dataset, split=split)


def _write_summary_json(path: str | None, data: dict[str, Any]) -> None:
    if not path:
        return
    from .io import atomic_path

    fd, tmp = atomic_path(path)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
        fh.write("\n")
    os.replace(tmp, path)


# ---------------------------------------------------------------- commands


@app.command()
@handle_errors
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
) -> None:
    """Extract code from each response and score it with the reward model."""
    from .model import ModelOptions, default_model
    from .pipeline import PipelineOptions
    from .progress import RichProgress, print_summary
    from .runner import RunConfig, run_job
    from .scoring import ScoringOptions

    specs = _specs(inputs, dataset, split)
    cfg = RunConfig(
        output=output,
        pipeline=PipelineOptions(
            question_field=question_field,
            response_field=response_field,
            extract_mode=extract,
            shaping=shaping,
            max_length=max_length,
        ),
        model=ModelOptions(
            model=model or default_model(),
            revision=revision,
            device=device,
            dtype=dtype,
            trust_remote_code=trust_remote_code,
            allow_pickle_weights=allow_pickle_weights,
        ),
        scoring=ScoringOptions(
            max_length=max_length,
            max_tokens_per_batch=max_tokens_per_batch,
            max_batch_size=max_batch_size,
            dedup=not no_dedup,
            prefix_reuse=not no_prefix_reuse,
        ),
        chunk_size=chunk_size,
        resume=resume,
        on_bad_row=on_bad_row,
        rejected_path=rejected,
    )
    summary = run_job(specs, cfg, progress=RichProgress("scoring", quiet=quiet))
    if not quiet:
        print_summary(summary, "codescaler score")
    _write_summary_json(summary_json, summary.as_dict())


@app.command("extract")
@handle_errors
def extract_cmd(
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
    """Extract code only (no model): adds code, code_valid, extract_method, n_code_blocks."""
    from .pipeline import PipelineOptions
    from .progress import RichProgress, print_summary
    from .runner import RunConfig, run_job

    specs = _specs(inputs, dataset, split)
    cfg = RunConfig(
        output=output,
        pipeline=PipelineOptions(
            question_field=question_field,
            response_field=response_field,
            extract_mode=extract,
            score=False,
        ),
        chunk_size=chunk_size,
        resume=resume,
        on_bad_row=on_bad_row,
        rejected_path=rejected,
    )
    summary = run_job(specs, cfg, progress=RichProgress("extracting", quiet=quiet))
    if not quiet:
        print_summary(summary, "codescaler extract")
    _write_summary_json(summary_json, summary.as_dict())


def main() -> None:
    app()


if __name__ == "__main__":
    main()
