"""A run's options, typed and defined once, with one ``validate()`` run before any work.

Every default lives here; the command line, the Python API, the engines and the server
read them from these classes. ``validate()`` needs no torch, so bad values stop a run
before a model loads or a file is written.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

from .errors import UsageError

DEFAULT_MODEL = "LARK-Lab/CodeScaler-1.7B"
DEFAULT_MAX_LENGTH = 4096
DEFAULT_CHUNK_SIZE = 50_000
MIN_MAX_LENGTH = 8  # a chat template's own tokens need a few
DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
DEVICES_HELP = "auto|cpu|cuda|cuda:N|mps"


JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
PARQUET_SUFFIXES = (".parquet", ".pq")


def output_format(path: str) -> str:
    """``jsonl`` or ``parquet`` for an output path (``-`` is JSON Lines on stdout)."""
    if path == "-":
        return "jsonl"
    lower = path.lower()
    if lower.endswith(JSONL_SUFFIXES):
        return "jsonl"
    if lower.endswith(PARQUET_SUFFIXES):
        return "parquet"
    raise UsageError(f"{path}: unknown output format (use .parquet, .jsonl, or '-' for stdout)")


class Choice(str, Enum):
    """A fixed-choice option: compares equal to its value and prints as it."""

    def __str__(self) -> str:
        return self.value


class ExtractMode(Choice):
    auto = "auto"
    paper = "paper"
    last = "last"
    none = "none"


class Shaping(Choice):
    softplus = "softplus"
    sigmoid = "sigmoid"
    raw = "raw"


class Dtype(Choice):
    auto = "auto"
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


class ResumeMode(Choice):
    auto = "auto"
    never = "never"


class OnBadRow(Choice):
    error = "error"
    skip = "skip"


class EngineKind(Choice):
    local = "local"
    ray = "ray"


class RankBy(Choice):
    reward = "reward"
    score = "score"


def default_model() -> str:
    return os.environ.get("CODESCALER_MODEL") or DEFAULT_MODEL


# A Hugging Face repo id: NAME or OWNER/NAME (letters, digits, '-', '_', '.').
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]*[A-Za-z0-9])?")


def looks_like_path(model: str) -> bool:
    """A --model that cannot be a Hub id (./dir, /abs/dir, a/b/c, ~/dir): a local path."""
    return not HUB_ID.fullmatch(model) or model.startswith((".", "~"))


def _at_least(name: str, value: int | float | None, low: int | float) -> None:
    if value is not None and value < low:
        raise UsageError(f"{name} must be at least {low:g}, got {value:g}")


@dataclass(frozen=True)
class ModelOptions:
    """Which model, where, in what precision."""

    model: str = field(default_factory=default_model)  # $CODESCALER_MODEL, like the CLI
    revision: str | None = None
    device: str = "auto"  # auto, cpu, cuda, cuda:N or mps
    dtype: Dtype = Dtype.auto
    trust_remote_code: bool = False
    allow_pickle_weights: bool = False
    attn_implementation: str | None = None  # None: flash_attention_2 when usable, else sdpa
    compile: bool = False  # torch.compile the transformer (fuses elementwise ops; slow first batch)

    def validate(self) -> None:
        if not self.model:
            raise UsageError("--model must not be empty")
        if looks_like_path(self.model) and not os.path.exists(os.path.expanduser(self.model)):
            raise UsageError(f"--model {self.model}: no such directory")
        if not DEVICE_PATTERN.fullmatch((self.device or "").strip().lower()):
            raise UsageError(f"--device {self.device!r}: expected one of {DEVICES_HELP}")


@dataclass(frozen=True)
class ScoringOptions:
    """How candidates are batched and run; none of these changes a score."""

    max_length: int = DEFAULT_MAX_LENGTH
    max_tokens_per_batch: int | None = None  # None: the device's default
    max_batch_size: int | None = None
    dedup: bool = True
    prefix_reuse: bool = True
    min_prefix_tokens: int = 16
    # Score several problems' candidates in one forward pass (needs a padding mask over the
    # cached prompts). None: on accelerators, where bigger batches pay; off on CPU, where the
    # mask-free path is faster.
    pack_groups: bool | None = None
    # Right padding makes the mask unnecessary for last-token pooling (exact either way).
    # None: leave it out, except for float32 on CUDA, where the masked kernel is faster.
    attention_mask: bool | None = None
    # Run the final layer at the scored token only (exact; see model/last_layer.py).
    trim_last_layer: bool = True
    # CPU answer passes: leave out the key blocks the causal mask hides from all of a run of
    # queries (see model/answer_attention.py).
    skip_hidden_blocks: bool = True
    # Forward passes run at once, each with an equal share of torch's threads. None: 2 on
    # CPUs with 2+ threads (small passes leave cores idle between and inside their ops;
    # two streams fill them), else 1.
    streams: int | None = None

    def validate(self) -> None:
        _at_least("--max-length", self.max_length, MIN_MAX_LENGTH)
        _at_least("--max-tokens-per-batch", self.max_tokens_per_batch, 1)
        _at_least("--max-batch-size", self.max_batch_size, 1)
        _at_least("--streams", self.streams, 1)
        _at_least("min_prefix_tokens", self.min_prefix_tokens, 1)


@dataclass(frozen=True)
class RowOptions:
    """What decides the rows written (besides the model): fields, extraction, shaping."""

    question_field: str | None = None
    response_field: str | None = None
    extract: ExtractMode = ExtractMode.auto
    shaping: Shaping = Shaping.softplus
    score: bool = True  # False: extraction only, no model
    # Rows scored earlier by this scorer (provenance.Provenance.scorer()) keep their scores
    # (rerank of scored files); None: every row is scored.
    reuse: tuple[Any, ...] | None = None

    def validate(self) -> None:
        ExtractMode(self.extract)
        Shaping(self.shaping)


# ---------------------------------------------------------------- the score cache

DEFAULT_CACHE_MAX_SIZE = 2 << 30  # about 20 million scores
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", re.IGNORECASE)


def parse_size(text: str | int, name: str = "--max-size") -> int:
    """Bytes from ``500M``, ``2G``, ``1.5GiB``, ``1048576`` (powers of 1024)."""
    if isinstance(text, int):
        return text
    match = _SIZE.fullmatch(str(text))
    if not match:
        raise UsageError(f"{name} {text!r}: expected a size such as 500M, 2G or 1048576")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])


def default_cache_dir() -> str:
    """$CODESCALER_CACHE_DIR, else $XDG_CACHE_HOME/codescaler, else ~/.cache/codescaler."""
    explicit = os.environ.get("CODESCALER_CACHE_DIR")
    if explicit:
        return os.path.abspath(os.path.expanduser(explicit))
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(os.path.abspath(base), "codescaler")


@dataclass(frozen=True)
class CacheOptions:
    """The persistent score cache (see codescaler_cli/cache/): where, whether, how big."""

    enabled: bool = True
    cache_dir: str | None = None  # None: default_cache_dir()
    # Least recently used scores are dropped beyond this many bytes; None: $CODESCALER_CACHE_MAX_SIZE,
    # else DEFAULT_CACHE_MAX_SIZE.
    max_size: int | None = None

    def directory(self) -> str:
        if self.cache_dir:
            return os.path.abspath(os.path.expanduser(self.cache_dir))
        return default_cache_dir()

    def size_limit(self) -> int:
        if self.max_size is not None:
            return self.max_size
        env = os.environ.get("CODESCALER_CACHE_MAX_SIZE")
        return parse_size(env, "CODESCALER_CACHE_MAX_SIZE") if env else DEFAULT_CACHE_MAX_SIZE

    def validate(self) -> None:
        if self.cache_dir is not None and not self.cache_dir.strip():
            raise UsageError("--cache-dir must not be empty")
        if self.size_limit() < 1 << 20:
            raise UsageError(f"the cache's size limit must be at least 1M, got {self.size_limit()}")


@dataclass(frozen=True)
class RunOptions:
    """One run over files: where rows go, and the options of every stage."""

    output: str
    rows: RowOptions = field(default_factory=RowOptions)
    model: ModelOptions = field(default_factory=ModelOptions)
    scoring: ScoringOptions = field(default_factory=ScoringOptions)
    chunk_size: int = DEFAULT_CHUNK_SIZE
    resume: ResumeMode = ResumeMode.auto
    on_bad_row: OnBadRow = OnBadRow.error
    rejected: str | None = None  # None: OUTPUT.rejected.jsonl
    # The persistent score cache. Not in fingerprint(): it never changes the rows written.
    cache: CacheOptions = field(default_factory=CacheOptions)

    def validate(self) -> None:
        """Every check that needs no model and no input: exit 2 before any work."""
        _at_least("--chunk-size", self.chunk_size, 1)
        ResumeMode(self.resume)
        OnBadRow(self.on_bad_row)
        self.rows.validate()
        if self.rows.score:
            self.model.validate()
            self.scoring.validate()
            if self.cache.enabled:
                self.cache.validate()
        # "": a task that only reports metrics; "DIR/": a directory of Parquet parts.
        if self.output and not self.output.endswith(("/", os.sep)):
            output_format(self.output)

    def fingerprint(self) -> dict[str, Any]:
        """The options that decide the rows written (a resumed run must share them)."""
        fp = {
            "rows": _plain(asdict(self.rows)),
            "chunk_size": self.chunk_size,
            "on_bad_row": str(self.on_bad_row),
        }
        if self.rows.score:
            fp["scoring"] = _plain(asdict(self.scoring))  # batching changes the last bits
        return fp


@dataclass(frozen=True)
class RerankOptions:
    """``rerank``: how candidates are grouped, ranked and kept."""

    top_k: int = 1  # kept per group; 0: all, ranked
    by: RankBy = RankBy.reward
    group_field: str | None = None  # None: problem_id, task_id..., else the question
    label_field: str | None = None  # None: passed, correct, label...
    group_as_text: bool = False  # 1 and "1" in one group
    rescore: bool = False  # score again even rows scored by the ranking's scorer


@dataclass(frozen=True)
class RayOptions:
    """How to run on Ray; ``None`` fields are chosen from the cluster's resources."""

    address: str | None = None  # None: $RAY_ADDRESS, else a local cluster started for the run
    num_workers: int | None = None  # None: one per GPU (gpus / gpus_per_worker), else 1 CPU actor
    gpus_per_worker: float | None = None  # None: 1 when the cluster has GPUs, else 0
    cpus_per_worker: float | None = None  # None: 1 per GPU actor; CPU actors share all but 1 CPU
    show_progress: bool = False  # Ray's own progress bars and logs
    actor_start_timeout_s: int = 900  # all workers must be up by then (autoscaling included)

    def validate(self) -> None:
        _at_least("--num-workers", self.num_workers, 1)
        _at_least("--gpus-per-worker", self.gpus_per_worker, 0)
        if self.cpus_per_worker is not None and self.cpus_per_worker <= 0:
            raise UsageError("--cpus-per-worker must be > 0")
        address = self.address or os.environ.get("RAY_ADDRESS") or ""
        if address.startswith("ray://"):
            raise UsageError(
                "Ray Client addresses (ray://) are not supported: run the command on the "
                "cluster, e.g. with `ray job submit`"
            )


def _plain(value: Any) -> Any:
    """Enums as their values, for JSON fingerprints."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, Enum):
        return value.value
    return value


@dataclass(frozen=True)
class ServeOptions:
    """``codescaler serve``: where it listens, how it batches, what it refuses."""

    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None  # None: $CODESCALER_API_KEY, else no authentication
    # /classify: how the assistant turn is read; "none" scores the text as given, like vLLM.
    classify_extract: ExtractMode = ExtractMode.auto
    served_model_name: str | None = None  # None: the model's name
    batch_window_ms: float = 5.0  # how long a batch waits for more requests after the first
    batch_tokens: int = 65_536  # about this many tokens of candidates close a batch
    max_queue: int = 4096  # candidates waiting; over it, 503 with Retry-After
    max_request_bytes: int = 16 << 20
    max_items: int = 1024  # candidates per request
    request_timeout_s: float = 600.0
    header_timeout_s: float = 10.0  # from a request's first byte to the end of its headers
    body_timeout_s: float = 60.0  # from the end of the headers to the end of the body
    shutdown_timeout_s: float = 30.0  # after SIGTERM, at most this long to finish, then exit

    def validate(self) -> None:
        _at_least("--port", self.port, 0)
        if self.port > 65535:
            raise UsageError(f"--port must be at most 65535, got {self.port}")
        ExtractMode(self.classify_extract)
        _at_least("--batch-window-ms", self.batch_window_ms, 0)
        for name, value in (
            ("--batch-tokens", self.batch_tokens),
            ("--max-queue", self.max_queue),
            ("--max-request-bytes", self.max_request_bytes),
            ("--max-items", self.max_items),
        ):
            _at_least(name, value, 1)
        for name, seconds in (
            ("--request-timeout", self.request_timeout_s),
            ("--header-timeout", self.header_timeout_s),
            ("--body-timeout", self.body_timeout_s),
            ("--shutdown-timeout", self.shutdown_timeout_s),
        ):
            if not 0 < seconds < float("inf"):  # NaN too
                raise UsageError(f"{name} must be a number of seconds > 0, got {seconds}")
        self.key()  # an empty key is refused before the model loads

    def key(self) -> str | None:
        """The API key: ``api_key``, else $CODESCALER_API_KEY, else None (no authentication).
        An empty or blank one is a usage error, never "no authentication": an unset
        variable in a launch script must not open the server."""
        if self.api_key is not None:
            if not self.api_key.strip():
                raise UsageError("--api-key is empty; give a key, or leave the option out")
            return self.api_key.strip()
        env = os.environ.get("CODESCALER_API_KEY")
        if env is not None and not env.strip():
            raise UsageError(
                "CODESCALER_API_KEY is set but empty; give a key, or unset it to serve "
                "without authentication"
            )
        return env.strip() if env is not None else None
