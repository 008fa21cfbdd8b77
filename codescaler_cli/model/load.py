"""Load a one-label reward model with every check up front; devices, dtypes, budgets."""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import DEVICES_HELP, Dtype, ModelOptions
from ..errors import ModelError, UsageError, describe_error
from .reward_model import RewardModel, encode, render

if TYPE_CHECKING:
    import torch

DTYPES = tuple(d.value for d in Dtype)


def resolve_device(spec: str) -> torch.device:
    import torch

    spec = str(spec or "auto").strip().lower()
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ModelError("--device mps requested but MPS is not available on this machine")
        return torch.device("mps")
    if spec == "cuda" or spec.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ModelError(
                f"--device {spec} requested but CUDA is not available "
                "(no GPU, or a CPU-only torch build); use --device cpu"
            )
        dev = torch.device(spec)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ModelError(
                f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) present"
            )
        return dev
    raise UsageError(f"--device {spec!r}: expected {DEVICES_HELP}")


def resolve_dtype(spec: str, device: torch.device) -> torch.dtype:
    import torch

    # auto: bf16 on CUDA as the weights ship; fp32 on CPU, where bf16 is ~8x slower.
    return getattr(torch, dtype_for(spec, device.type))


def default_token_budget(device: torch.device) -> int:
    """Padded tokens per forward pass: small on CPU (cache-friendly), large on GPUs."""
    if device.type == "cuda":
        import torch

        total = torch.cuda.get_device_properties(device).total_memory
        # ~64k tokens on a 80 GB card for a 1.7B model; scales with memory.
        return int(max(8192, min(131072, total / (80 * 2**30) * 65536)))
    # CPU: small passes stay in cache. On the 8-layer benchmark model with two streams,
    # 512-1024 ran 0-3.5% faster than 2048 (and never slower), 2048 faster than 4k-16k.
    return 1024


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


# ---------------------------------------------------------------- loading


def _flash_attn_available() -> bool:
    try:
        import flash_attn  # noqa: F401
    except Exception:
        return False
    return True


def _friendly_load_error(name: str, exc: BaseException) -> ModelError:
    full = str(exc)
    text = describe_error(exc)
    if "trust_remote_code" in full:
        return ModelError(
            f"{name} needs its own Python code to load (custom model or tokenizer classes); "
            "rerun with --trust-remote-code if you trust its authors"
        )
    local = os.path.isdir(name)
    if local:
        return ModelError(f"cannot load model from directory {name}: {text}")
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    where = (
        "HF_HUB_OFFLINE=1 and it is not in the local cache"
        if offline
        else "not found on the Hugging Face Hub or no network"
    )
    return ModelError(
        f"cannot load model {name!r} ({where}: {text}); download it where the Hub is reachable "
        "(e.g. `hf download LARK-Lab/CodeScaler-1.7B --local-dir DIR`) and pass --model DIR"
    )


def _mismatch_error(name: str, load: dict[str, Any]) -> ModelError:
    """Which weights disagree with the config, for the one-line error (transformers puts its
    report in a log this tool silences)."""
    from transformers import AutoModelForSequenceClassification

    detail = ""
    try:
        _, info = AutoModelForSequenceClassification.from_pretrained(
            name, ignore_mismatched_sizes=True, **load
        )
        key, got, want = next(iter(info.get("mismatched_keys", [])))
        more = len(info["mismatched_keys"]) - 1
        detail = f": {key} is {tuple(got)} in the weights but {tuple(want)} for the config"
        detail += f" (and {more} more)" if more else ""
    except Exception:
        pass
    return ModelError(
        f"cannot load model {name}: its weights do not fit its config.json{detail}; "
        "the checkpoint and its config disagree"
    )


def _check_weights_format(name: str, allow_pickle: bool) -> None:
    """Refuse pickle-only checkpoints unless asked: unpickling can run arbitrary code."""
    if allow_pickle or not os.path.isdir(name):
        return
    files = {p.name for p in Path(name).iterdir()}
    has_safe = any(f.endswith(".safetensors") or f == "model.safetensors.index.json" for f in files)
    has_pickle = any(f.endswith((".bin", ".pt", ".pth", ".ckpt")) for f in files)
    if has_pickle and not has_safe:
        raise ModelError(
            f"{name}: only pickle weights (e.g. pytorch_model.bin) found; they can run code when "
            "loaded. Convert them to safetensors, or pass --allow-pickle-weights if you trust them"
        )


@dataclass
class ModelText:
    """What turns text into token ids: the config and tokenizer, checked, without weights."""

    name: str
    revision: str | None
    config: Any
    tokenizer: Any
    pad_id: int
    common: dict[str, Any]

    def render(self, question: str, code: str) -> str:
        return render(self.tokenizer, question, code)

    def encode(self, texts: list[str]) -> list[list[int]]:
        return encode(self.tokenizer, texts)


def _quiet_transformers() -> None:
    import transformers

    transformers.logging.set_verbosity_error()
    try:  # the Hub client logs each network retry; our one-line error says it better
        from huggingface_hub.utils import logging as hub_logging

        hub_logging.set_verbosity_error()
    except ImportError:  # pragma: no cover - huggingface_hub ships with transformers
        pass
    transformers.logging.disable_progress_bar()  # our own progress display owns stderr


def load_text(options: ModelOptions) -> ModelText:
    """Config and tokenizer with every check that needs no weights (enough to tokenize)."""
    from transformers import AutoConfig, AutoTokenizer

    _quiet_transformers()
    name = options.model
    _check_weights_format(name, options.allow_pickle_weights)
    common = {"revision": options.revision, "trust_remote_code": options.trust_remote_code}
    try:
        config = AutoConfig.from_pretrained(name, **common)
    except Exception as exc:
        raise _friendly_load_error(name, exc) from None
    archs = list(getattr(config, "architectures", None) or [])
    if archs and not any(a.endswith("ForSequenceClassification") for a in archs):
        raise ModelError(
            f"{name} is not a reward model: architecture {', '.join(archs)} has no trained "
            "score head (expected *ForSequenceClassification)"
        )
    if getattr(config, "num_labels", 1) != 1:
        raise ModelError(
            f"{name} has num_labels={config.num_labels}; a reward model must have exactly one label"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, **common)
    except Exception as exc:
        raise _friendly_load_error(name, exc) from None
    if not getattr(tokenizer, "chat_template", None):
        raise ModelError(
            f"{name}: the tokenizer has no chat template; scores are defined on the model's own "
            "chat template, so a model without one cannot be used"
        )
    tok_pad = tokenizer.pad_token_id
    cfg_pad = getattr(config, "pad_token_id", None)
    if cfg_pad is None and tok_pad is None:
        raise ModelError(f"{name}: neither the config nor the tokenizer defines a pad token")
    if cfg_pad is not None and tok_pad is not None and int(cfg_pad) != int(tok_pad):
        raise ModelError(
            f"{name}: config.pad_token_id={cfg_pad} but the tokenizer's pad id is {tok_pad}; "
            "the model would pool a padding position. Fix the model's config"
        )
    pad = int(cfg_pad if cfg_pad is not None else tok_pad)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token_id = pad
    return ModelText(name, options.revision, config, tokenizer, pad, common)


def load_weights(
    options: ModelOptions, text: ModelText, target: Target | None = None
) -> RewardModel:
    """The weights of the model ``text`` was loaded from, on ``target``'s device, dtype and
    attention (default: :func:`resolve_target`; the score cache keys on the same target,
    so what loads is what the stored scores name)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    _quiet_transformers()
    name = options.model
    target = target or resolve_target(options)
    device = torch.device(target.device)
    load = {
        "config": text.config,
        "dtype": getattr(torch, target.dtype),
        "attn_implementation": target.attn,
        "use_safetensors": None if options.allow_pickle_weights else True,
        "output_loading_info": True,
        **text.common,
    }
    try:
        model, info = AutoModelForSequenceClassification.from_pretrained(name, **load)
    except Exception as exc:
        if "ignore_mismatched_sizes" in str(exc):  # its report went to the silenced log
            raise _mismatch_error(name, load) from None
        raise _friendly_load_error(name, exc) from None
    missing = [k for k in info.get("missing_keys", []) if "score" in k]
    if missing:
        raise ModelError(
            f"{name}: checkpoint has no score head ({', '.join(missing)}); not a reward model"
        )
    model.config.pad_token_id = text.pad_id
    model.to(device)
    model.eval()
    rm = RewardModel(text.tokenizer, model, name=name, revision=options.revision)
    rm.commit = rm.commit or model_commit(name, options.revision)
    if options.compile:
        rm.compile()
    return rm


def load_reward_model(options: ModelOptions) -> RewardModel:
    """Load tokenizer + one-label sequence-classification model, with every check up front."""
    # Device errors (no CUDA, say) come before any file is read.
    resolve_dtype(options.dtype, resolve_device(options.device))
    return load_weights(options, load_text(options))


# ---------------------------------------------------------------- without torch

_SNAPSHOT = re.compile(r"[/\\]snapshots[/\\]([0-9a-f]{40})(?:[/\\]|$)")


def model_commit(name: str, revision: str | None) -> str | None:
    """The Hub commit a model was loaded from: its snapshot directory's name (a local
    directory outside the Hub's cache has none). Reads the local cache only."""
    path: Any = None
    if os.path.isdir(name):
        path = os.path.realpath(name)
    else:
        try:
            from huggingface_hub import try_to_load_from_cache

            path = try_to_load_from_cache(name, "config.json", revision=revision)
        except Exception:
            path = None
    match = _SNAPSHOT.search(path) if isinstance(path, str) else None
    return match.group(1) if match else None


@dataclass(frozen=True)
class Target:
    """Where and in what precision a model runs, by name (torch is not needed to know)."""

    device: str  # as str(torch.device): cpu, cuda, cuda:1, mps
    dtype: str  # float32, bfloat16, float16
    attn: str  # the attention implementation the load asks for
    compiled: bool

    @property
    def device_type(self) -> str:
        return self.device.split(":")[0]


def _torch_is_cpu_only() -> bool:
    """Whether the installed torch is a CPU-only build, read from its version file (importing
    torch takes seconds, which a run answered from the cache should not pay)."""
    import importlib.util

    if sys.platform == "darwin":  # MPS
        return False
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return False
    path = Path(next(iter(spec.submodule_search_locations)), "version.py")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return False
    found = dict(re.findall(r"^(cuda|hip|xpu)\b[^=\n]*=\s*(.+)$", text, re.M))
    return set(found) >= {"cuda", "hip"} and all(v.strip() == "None" for v in found.values())


def dtype_for(spec: str, device_type: str) -> str:
    """The dtype a load uses, by name (see resolve_dtype)."""
    spec = str(spec or "auto").lower()
    if spec == "auto":
        return "bfloat16" if device_type == "cuda" else "float32"
    names = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
    spec = names.get(spec, spec)
    if spec not in ("float32", "bfloat16", "float16"):
        raise UsageError(f"--dtype {spec!r}: expected one of {', '.join(DTYPES)}")
    return spec


def resolve_target(options: ModelOptions) -> Target:
    """Device, dtype and attention of a load; without importing torch where that is certain
    (``--device cpu``, or ``auto`` with a CPU-only torch), else as the load resolves them."""
    spec = str(options.device or "auto").strip().lower()
    if spec == "cpu" or (spec == "auto" and _torch_is_cpu_only()):
        device = "cpu"
    else:
        device = str(resolve_device(spec))
    kind = device.split(":")[0]
    dtype = dtype_for(options.dtype, kind)
    attn = options.attn_implementation
    if attn is None:
        usable = kind == "cuda" and dtype in ("float16", "bfloat16")
        attn = "flash_attention_2" if usable and _flash_attn_available() else "sdpa"
    return Target(device, dtype, attn, bool(options.compile))
