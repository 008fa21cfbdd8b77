"""Every command-line option, declared once: its flags, help, panel and value type.

Defaults come from config.py where the option is a field of a typed option class;
groups.py builds those classes from these options.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from ..config import Dtype, EngineKind, ExtractMode, OnBadRow, ResumeMode, Shaping

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
