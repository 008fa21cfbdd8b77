"""Every command-line option, declared once: its flags, help, panel and value type.

Defaults are never written here or in groups.py: :func:`default_of` reads them from the
option classes of config.py (whose fields groups.py fills), and a choice option's values
and help come from its Enum (:func:`choices`), so neither can drift from the library.
"""

from __future__ import annotations

import dataclasses
import inspect
from enum import Enum
from typing import Annotated, Any

import typer

from ..config import (
    DEFAULT_MODEL,
    DEVICES_HELP,
    Dtype,
    EngineKind,
    ExtractMode,
    OnBadRow,
    ResumeMode,
    Shaping,
)

INPUT, OUTPUT, MODEL, SPEED, ROBUST, SCALE = (
    "Input",
    "Output",
    "Model",
    "Speed",
    "Robustness",
    "Scale-out",
)


def option(*names: str, help: str, panel: str, metavar: str | None = None, **kw: Any) -> Any:
    return typer.Option(*names, help=help, rich_help_panel=panel, metavar=metavar, **kw)


def flag(*names: str, help: str, panel: str) -> Any:
    # No metavar: a flag takes no value, so its help shows none.
    return typer.Option(*names, help=help, rich_help_panel=panel, metavar="")


def default_of(owner: Any, name: str) -> Any:
    """The default of field ``name`` of a dataclass (a ``default_factory``'s value), or of
    parameter ``name`` of a function: the one place a CLI default is read from."""
    if dataclasses.is_dataclass(owner):
        found = {f.name: f for f in dataclasses.fields(owner)}[name]
        if found.default_factory is not dataclasses.MISSING:
            return found.default_factory()
        default = found.default
    else:
        default = inspect.signature(owner).parameters[name].default
    if default is dataclasses.MISSING or default is inspect.Parameter.empty:
        raise ValueError(f"{getattr(owner, '__name__', owner)}.{name} has no default")
    return default


def choices(enum: type[Enum], **meaning: str) -> str:
    """Every value of ``enum`` in order, for a help text, each with its meaning if given:
    ``auto (bf16 on CUDA, fp32 elsewhere), float32, bfloat16 or float16``."""
    unknown = set(meaning) - {m.name for m in enum}
    if unknown:
        raise ValueError(f"{enum.__name__} has no value {', '.join(sorted(unknown))}")
    items = [f"{m.value} ({meaning[m.name]})" if m.name in meaning else m.value for m in enum]
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} or {items[-1]}"


# ---------------------------------------------------------------- options, once each

PAPERS = "the paper's"

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
    str | None,
    option(
        "--split",
        help="Dataset split: for --dataset / hf:// inputs (default: train), and needed for a "
        "saved DatasetDict folder with several splits.",
        panel=INPUT,
        metavar="NAME",
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
    ExtractMode,
    option(
        "--extract",
        help=f"How code is taken from a response: {choices(ExtractMode)}.",
        panel=INPUT,
        metavar="MODE",
    ),
]
Shaping_ = Annotated[
    Shaping,
    option(
        "--shaping",
        help=f"Reward for valid code: {choices(Shaping, softplus=PAPERS)}.",
        panel=OUTPUT,
        metavar="NAME",
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
        help=f"Hub id or local directory \\[default: {DEFAULT_MODEL}, or $CODESCALER_MODEL if set].",
        panel=MODEL,
        metavar="ID|DIR",
        show_default=False,
    ),
]
Revision = Annotated[
    str | None,
    option("--revision", help="Branch, tag or commit of the model.", panel=MODEL, metavar="REV"),
]
Device = Annotated[
    str,
    option("--device", help=f"One of {DEVICES_HELP}.", panel=MODEL, metavar="DEVICE"),
]
Dtype_ = Annotated[
    Dtype,
    option(
        "--dtype",
        help=f"{choices(Dtype, auto='bf16 on CUDA, fp32 elsewhere')}.",
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
    bool,
    flag("--no-dedup", help="Score each copy of a repeated (question, code) pair.", panel=SPEED),
]
NoPrefix = Annotated[
    bool,
    flag(
        "--no-prefix-reuse",
        help="Run each candidate's prompt again, not once per problem.",
        panel=SPEED,
    ),
]
Compile = Annotated[
    bool,
    flag(
        "--compile",
        help="torch.compile the model: slow first batches, faster big runs on GPUs.",
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
    option(
        "--resume",
        help=f"After an interruption: {choices(ResumeMode, auto='resume', never='start over')}.",
        panel=ROBUST,
        metavar="MODE",
    ),
]
OnBadRow_ = Annotated[
    OnBadRow,
    option(
        "--on-bad-row",
        help=f"{choices(OnBadRow, error='stop at the first bad row', skip='set it aside and go on')}.",
        panel=ROBUST,
        metavar="WHAT",
    ),
]
Rejected = Annotated[
    str | None,
    option(
        "--rejected",
        help="Where skipped rows go \\[default: OUTPUT.rejected.jsonl beside OUTPUT].",
        panel=ROBUST,
        metavar="PATH",
    ),
]
Engine_ = Annotated[
    EngineKind,
    option(
        "--engine",
        help=f"{choices(EngineKind, ray='on a Ray cluster')}.",
        panel=SCALE,
        metavar="NAME",
    ),
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
        help="GPUs per Ray actor \\[default: 1 when the cluster has GPUs, else 0].",
        panel=SCALE,
        metavar="X",
    ),
]
NoCache = Annotated[
    bool,
    flag(
        "--no-cache",
        help="Neither look up nor store scores in the score cache (see `codescaler cache`).",
        panel=SPEED,
    ),
]
CacheDir = Annotated[
    str | None,
    option(
        "--cache-dir",
        help="The score cache's directory \\[default: $CODESCALER_CACHE_DIR, else "
        "codescaler/ in $XDG_CACHE_HOME or ~/.cache].",
        panel=SPEED,
        metavar="DIR",
        show_default=False,
    ),
]
