"""Every command-line option, declared once, and the groups that build typed options from them.

A group is a function whose parameters are options (``Annotated`` with their help, panel
and default from config.py) and whose result is a typed object. :func:`uses` splices a
group's options into a command's signature and hands the command the built object, so
no command lists an option twice and none sees an untyped dict. Groups validate what
they build, before any work.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import typer

from ..config import (
    Dtype,
    EngineKind,
    ExtractMode,
    ModelOptions,
    OnBadRow,
    RayOptions,
    ResumeMode,
    RowOptions,
    RunOptions,
    ScoringOptions,
    Shaping,
    default_model,
)
from ..errors import UsageError

INPUT, OUTPUT, MODEL, SPEED, ROBUST, SCALE = (
    "Input",
    "Output",
    "Model",
    "Speed",
    "Robustness",
    "Scale-out",
)

F = TypeVar("F", bound=Callable[..., Any])


def option(*names: str, help: str, panel: str, metavar: str | None = None, **kw: Any) -> Any:
    return typer.Option(*names, help=help, rich_help_panel=panel, metavar=metavar, **kw)


def flag(*names: str, help: str, panel: str) -> Any:
    # No metavar: a flag takes no value, so its help shows none.
    return typer.Option(*names, help=help, rich_help_panel=panel, metavar="")


# ---------------------------------------------------------------- options, once each

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
    option(
        "--output",
        "-o",
        help="Output .parquet or .jsonl path, '-' for JSONL on stdout, or DIR/ for Parquet parts.",
        panel=OUTPUT,
        metavar="PATH",
    ),
]
Dataset = Annotated[
    str | None,
    option("--dataset", help="Hugging Face dataset name to read.", panel=INPUT, metavar="NAME"),
]
Split = Annotated[
    str,
    option(
        "--split", help="Dataset split for --dataset / hf:// inputs.", panel=INPUT, metavar="NAME"
    ),
]
QuestionField = Annotated[
    str | None,
    option(
        "--question-field",
        help="Question column \\[default: auto-detect].",
        panel=INPUT,
        metavar="NAME",
    ),
]
ResponseField = Annotated[
    str | None,
    option(
        "--response-field",
        help="Response column \\[default: auto-detect].",
        panel=INPUT,
        metavar="NAME",
    ),
]
Extract = Annotated[
    ExtractMode, option("--extract", help="How code is taken from a response.", panel=INPUT)
]
Shaping_ = Annotated[
    Shaping,
    option(
        "--shaping",
        help="Reward for valid code: softplus (the paper's), sigmoid or raw.",
        panel=OUTPUT,
    ),
]
Quiet = Annotated[bool, flag("--quiet", "-q", help="No progress bar or summary.", panel=OUTPUT)]
SummaryJson = Annotated[
    str | None,
    option(
        "--summary-json", help="Also write the run summary as JSON.", panel=OUTPUT, metavar="PATH"
    ),
]
MetricsJson = Annotated[
    str | None,
    option("--metrics-json", help="Write the metrics as JSON.", panel=OUTPUT, metavar="PATH"),
]
ModelName = Annotated[
    str | None,
    option(
        "--model",
        "-m",
        help="Hub id or local directory \\[default: $CODESCALER_MODEL, else "
        "LARK-Lab/CodeScaler-1.7B].",
        panel=MODEL,
        metavar="ID|DIR",
        show_default=False,
    ),
]
Revision = Annotated[
    str | None,
    option("--revision", help="Model revision (branch, tag, commit).", panel=MODEL, metavar="REV"),
]
Device = Annotated[
    str,
    option("--device", help="auto, cpu, cuda, cuda:N or mps.", panel=MODEL, metavar="DEVICE"),
]
Dtype_ = Annotated[
    Dtype,
    option(
        "--dtype",
        help="auto (bf16 on CUDA, fp32 elsewhere), float32, bfloat16 or float16.",
        panel=MODEL,
        metavar="DTYPE",
    ),
]
TrustRemote = Annotated[
    bool,
    flag(
        "--trust-remote-code", help="Allow model repos to run their own Python code.", panel=MODEL
    ),
]
AllowPickle = Annotated[
    bool,
    flag(
        "--allow-pickle-weights",
        help="Allow loading non-safetensors (pickle) weights.",
        panel=MODEL,
    ),
]
MaxLength = Annotated[
    int,
    option(
        "--max-length",
        help="Max tokens per candidate (the question is shortened first).",
        panel=MODEL,
        metavar="N",
    ),
]
MaxTokens = Annotated[
    int | None,
    option(
        "--max-tokens-per-batch",
        help="Padded-token budget per forward pass \\[default: per device].",
        panel=SPEED,
        metavar="N",
    ),
]
Streams = Annotated[
    int | None,
    option(
        "--streams",
        help="Forward passes run at once, each with a share of torch's threads "
        "\\[default: 2 on a CPU with 2+ threads, else 1].",
        panel=SPEED,
        metavar="N",
        show_default=False,
    ),
]
MaxBatch = Annotated[
    int | None,
    option(
        "--max-batch-size", help="Cap on candidates per forward pass.", panel=SPEED, metavar="N"
    ),
]
NoDedup = Annotated[
    bool, flag("--no-dedup", help="Score identical (question, code) pairs separately.", panel=SPEED)
]
NoPrefix = Annotated[
    bool,
    flag(
        "--no-prefix-reuse",
        help="Do not reuse a problem's prompt across its candidates.",
        panel=SPEED,
    ),
]
Compile = Annotated[
    bool,
    flag(
        "--compile",
        help="torch.compile the model: faster on GPUs for big runs; the first batches compile (minutes).",
        panel=SPEED,
    ),
]
ChunkSize = Annotated[
    int,
    option(
        "--chunk-size",
        help="Rows read, sorted and checkpointed together.",
        panel=ROBUST,
        metavar="N",
    ),
]
Resume = Annotated[
    ResumeMode,
    option("--resume", help="auto: continue an interrupted run; never: start over.", panel=ROBUST),
]
OnBadRow_ = Annotated[
    OnBadRow,
    option(
        "--on-bad-row",
        help="error: stop at the first bad row; skip: set it aside and go on.",
        panel=ROBUST,
    ),
]
Rejected = Annotated[
    str | None,
    option(
        "--rejected",
        help="Where skipped rows go \\[default: OUTPUT.rejected.jsonl].",
        panel=ROBUST,
        metavar="PATH",
    ),
]
Engine_ = Annotated[
    EngineKind, option("--engine", help="local, or ray to run on a Ray cluster.", panel=SCALE)
]
RayAddress = Annotated[
    str | None,
    option(
        "--ray-address",
        help="Ray cluster address \\[default: $RAY_ADDRESS or a local cluster].",
        panel=SCALE,
        metavar="ADDR",
    ),
]
NumWorkers = Annotated[
    int | None,
    option(
        "--num-workers",
        help="Ray scorer actors \\[default: one per GPU].",
        panel=SCALE,
        metavar="N",
    ),
]
GpusPerWorker = Annotated[
    float | None,
    option(
        "--gpus-per-worker",
        help="GPUs per Ray actor \\[default: 1 on GPU clusters].",
        panel=SCALE,
        metavar="X",
    ),
]


# ---------------------------------------------------------------- groups


@dataclass(frozen=True)
class Source:
    inputs: list[str]
    dataset: str | None
    split: str

    def specs(self, exclude: tuple[str, ...] = ()) -> list[Any]:
        from ..io.inputs import resolve_inputs

        if not self.inputs and not self.dataset:
            raise UsageError(
                "give an INPUT (file, glob, directory, '-' or hf://datasets/NAME) or --dataset"
            )
        return resolve_inputs(self.inputs, dataset=self.dataset, split=self.split, exclude=exclude)


def sources(inputs: Inputs = None, dataset: Dataset = None, split: Split = "train") -> Source:
    return Source(inputs or [], dataset, split)


def row_options(
    question_field: QuestionField = None,
    response_field: ResponseField = None,
    extract: Extract = RowOptions.extract,
    shaping: Shaping_ = RowOptions.shaping,
) -> RowOptions:
    return RowOptions(question_field, response_field, extract, shaping)


def pair_row_options(
    question_field: QuestionField = None, extract: Extract = RowOptions.extract
) -> RowOptions:
    return RowOptions(question_field=question_field, extract=extract)


def extract_row_options(
    question_field: QuestionField = None,
    response_field: ResponseField = None,
    extract: Extract = RowOptions.extract,
) -> RowOptions:
    return RowOptions(question_field, response_field, extract, score=False)


def model_options(
    model: ModelName = None,
    revision: Revision = None,
    device: Device = ModelOptions.device,
    dtype: Dtype_ = ModelOptions.dtype,
    trust_remote_code: TrustRemote = False,
    allow_pickle_weights: AllowPickle = False,
    compile: Compile = False,
) -> ModelOptions:
    opts = ModelOptions(
        model=model or default_model(),
        revision=revision,
        device=device,
        dtype=dtype,
        trust_remote_code=trust_remote_code,
        allow_pickle_weights=allow_pickle_weights,
        compile=compile,
    )
    opts.validate()
    return opts


def scoring_options(
    max_length: MaxLength = ScoringOptions.max_length,
    max_tokens_per_batch: MaxTokens = None,
    streams: Streams = None,
    max_batch_size: MaxBatch = None,
    no_dedup: NoDedup = False,
    no_prefix_reuse: NoPrefix = False,
) -> ScoringOptions:
    opts = ScoringOptions(
        max_length=max_length,
        max_tokens_per_batch=max_tokens_per_batch,
        max_batch_size=max_batch_size,
        dedup=not no_dedup,
        prefix_reuse=not no_prefix_reuse,
        streams=streams,
    )
    opts.validate()
    return opts


@dataclass(frozen=True)
class Robustness:
    chunk_size: int
    resume: ResumeMode
    on_bad_row: OnBadRow
    rejected: str | None

    def run_options(
        self,
        output: str,
        rows: RowOptions,
        model: ModelOptions | None = None,
        scoring: ScoringOptions | None = None,
    ) -> RunOptions:
        opts = RunOptions(
            output,
            rows,
            model or ModelOptions(),
            scoring or ScoringOptions(),
            self.chunk_size,
            self.resume,
            self.on_bad_row,
            self.rejected,
        )
        opts.validate()
        return opts


def robustness(
    chunk_size: ChunkSize = RunOptions.chunk_size,
    resume: Resume = RunOptions.resume,
    on_bad_row: OnBadRow_ = RunOptions.on_bad_row,
    rejected: Rejected = None,
) -> Robustness:
    if chunk_size < 1:
        raise UsageError(f"--chunk-size must be at least 1, got {chunk_size}")
    return Robustness(chunk_size, resume, on_bad_row, rejected)


@dataclass(frozen=True)
class EngineChoice:
    kind: EngineKind
    ray: RayOptions

    def factory(self) -> Callable[[RunOptions], Any] | None:
        """How to build the engine for a run (None: the local engine)."""
        if self.kind == EngineKind.local:
            return None
        from ..engines.ray.engine import RayEngine

        return lambda opts: RayEngine(opts, self.ray)


def engine_options(
    engine: Engine_ = EngineKind.local,
    ray_address: RayAddress = None,
    num_workers: NumWorkers = None,
    gpus_per_worker: GpusPerWorker = None,
) -> EngineChoice:
    ray = RayOptions(address=ray_address, num_workers=num_workers, gpus_per_worker=gpus_per_worker)
    if engine == EngineKind.local:
        for name, value in (
            ("--ray-address", ray_address),
            ("--num-workers", num_workers),
            ("--gpus-per-worker", gpus_per_worker),
        ):
            if value is not None:
                raise UsageError(f"{name} needs --engine ray")
    else:
        ray.validate()
    return EngineChoice(engine, ray)


# ---------------------------------------------------------------- wiring


def uses(**groups: Callable[..., Any]) -> Callable[[F], F]:
    """Give a command the objects built by ``groups`` (name -> group function): the group's
    options replace the command's parameter of that name on the command line."""

    def decorate(func: F) -> F:
        own = inspect.signature(func)
        hints = typing.get_type_hints(func, include_extras=True)
        params: list[inspect.Parameter] = []
        spliced: dict[str, list[str]] = {}
        for p in own.parameters.values():
            group = groups.get(p.name)
            if group is None:
                params.append(p.replace(annotation=hints.get(p.name, p.annotation)))
                continue
            group_hints = typing.get_type_hints(group, include_extras=True)
            inner = list(inspect.signature(group).parameters.values())
            spliced[p.name] = [q.name for q in inner]
            params += [q.replace(annotation=group_hints[q.name]) for q in inner]

        @functools.wraps(func)
        def command(**kwargs: Any) -> Any:
            for name, group in groups.items():
                kwargs[name] = group(**{k: kwargs.pop(k) for k in spliced[name]})
            return func(**kwargs)

        command.__signature__ = inspect.Signature(params, __validate_parameters__=False)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        return command  # type: ignore[return-value]

    return decorate
