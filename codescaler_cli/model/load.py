"""Load a one-label reward model with every check up front; devices, dtypes, budgets."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import DEVICES_HELP, ModelOptions
from ..errors import ModelError, UsageError
from .reward_model import RewardModel

if TYPE_CHECKING:
    import torch

DTYPES = ("auto", "float32", "bfloat16", "float16")


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

    spec = str(spec or "auto").lower()
    if spec == "auto":
        # bf16 on CUDA as the weights ship; fp32 on CPU, where bf16 is ~8x slower.
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    table = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
        "float16": torch.float16,
        "fp16": torch.float16,
    }
    if spec not in table:
        raise UsageError(f"--dtype {spec!r}: expected one of {', '.join(DTYPES)}")
    return table[spec]


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
    text = (full.strip() or type(exc).__name__).splitlines()[0][:300]
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


def load_reward_model(options: ModelOptions) -> RewardModel:
    """Load tokenizer + one-label sequence-classification model, with every check up front."""
    import torch
    import transformers
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    transformers.logging.set_verbosity_error()
    try:  # the Hub client logs each network retry; our one-line error says it better
        from huggingface_hub.utils import logging as hub_logging

        hub_logging.set_verbosity_error()
    except ImportError:  # pragma: no cover - huggingface_hub ships with transformers
        pass
    transformers.logging.disable_progress_bar()  # our own progress display owns stderr
    name = options.model
    device = resolve_device(options.device)
    dtype = resolve_dtype(options.dtype, device)
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
    attn = options.attn_implementation
    if attn is None:
        usable = device.type == "cuda" and dtype in (torch.float16, torch.bfloat16)
        attn = "flash_attention_2" if usable and _flash_attn_available() else "sdpa"
    load = {
        "config": config,
        "dtype": dtype,
        "attn_implementation": attn,
        "use_safetensors": None if options.allow_pickle_weights else True,
        "output_loading_info": True,
        **common,
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
    model.config.pad_token_id = pad
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token_id = pad
    model.to(device)
    model.eval()
    rm = RewardModel(tokenizer, model, name=name, revision=options.revision)
    if options.compile:
        rm.compile()
    return rm
