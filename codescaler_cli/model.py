"""Load a one-label reward model, render conversations, and run forward passes.

The score is what the model card computes: the conversation
``[user: question, assistant: code]`` rendered with the tokenizer's own chat template,
tokenized with the tokenizer's defaults, and the single logit at the last real token.
Batches are right-padded: with a causal model the last real token never attends to a
pad position, so no attention mask is needed for an exact score (tested).
"""

from __future__ import annotations

import inspect
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ModelError, UsageError

if TYPE_CHECKING:
    import torch

DEFAULT_MODEL = "LARK-Lab/CodeScaler-1.7B"
DEFAULT_MAX_LENGTH = 4096
DEVICES_HELP = "auto, cpu, cuda, cuda:N or mps"
DTYPES = ("auto", "float32", "bfloat16", "float16")


def default_model() -> str:
    return os.environ.get("CODESCALER_MODEL") or DEFAULT_MODEL


def resolve_device(spec: str) -> torch.device:
    import torch

    spec = (spec or "auto").strip().lower()
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

    spec = (spec or "auto").lower()
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


@dataclass(frozen=True)
class ModelOptions:
    model: str = DEFAULT_MODEL
    revision: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    trust_remote_code: bool = False
    allow_pickle_weights: bool = False
    attn_implementation: str | None = None  # None: flash_attention_2 when usable, else sdpa
    compile: bool = False  # torch.compile the transformer (fuses elementwise ops; slow first batch)


@dataclass
class PrefixStates:
    """Cached key/value states of a batch of shared prompts (right-padded)."""

    kv: list[tuple[Any, Any]]
    lengths: list[int]
    lengths_t: Any  # the same lengths as a tensor


class RewardModel:
    """A loaded reward model with the exact scoring path and counters for audits."""

    def __init__(self, tokenizer: Any, model: Any, *, name: str, revision: str | None) -> None:

        self.tokenizer = tokenizer
        self.model = model
        self.name = name
        self.revision = revision
        self.commit = getattr(model.config, "_commit_hash", None)
        self.device: torch.device = next(model.parameters()).device
        self.dtype: torch.dtype = next(model.parameters()).dtype
        self.pad_id: int = int(model.config.pad_token_id)
        self.forward_calls = 0
        self.forward_tokens = 0
        self._counter_lock = threading.Lock()  # passes may run in several threads
        self._base = getattr(model, getattr(model, "base_model_prefix", "model"), None)
        self._head = getattr(model, "score", None)
        params = inspect.signature(self._base.forward).parameters if self._base is not None else {}
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        self._last = None
        self._answer_attention = False
        if self._base is not None and self._head is not None:
            from . import answer_attention
            from .last_layer import LastLayer

            self._last = LastLayer.find(self._base)
            self._answer_attention = answer_attention.install(model)

    # ------------------------------------------------------------ text -> ids

    def render(self, question: str, code: str) -> str:
        conv = [{"role": "user", "content": question}, {"role": "assistant", "content": code}]
        return self.tokenizer.apply_chat_template(conv, tokenize=False)

    def encode(self, texts: list[str]) -> list[list[int]]:
        if not texts:
            return []
        # Same call as the model card (tokenizer defaults), minus truncation: over-long
        # inputs are shortened on purpose by the caller, never cut from the right.
        return self.tokenizer(texts)["input_ids"]

    # ------------------------------------------------------------ forward passes

    def _pad(self, seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        import numpy as np
        import torch

        lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
        width = int(lengths.max())
        arr = np.full((len(seqs), width), self.pad_id, dtype=np.int64)
        for i, s in enumerate(seqs):
            arr[i, : len(s)] = s
        ids = torch.from_numpy(arr)
        lens = torch.from_numpy(lengths)
        if self.device.type == "cuda":
            ids = ids.pin_memory().to(self.device, non_blocking=True)
            lens = lens.pin_memory().to(self.device, non_blocking=True)
        else:
            ids, lens = ids.to(self.device), lens.to(self.device)
        return ids, lens

    def compile(self) -> None:
        """torch.compile the decoder stack (the first batches of each shape compile)."""
        # Dynamic shapes: batches differ in size and length, and must not recompile each time.
        self._base.compile(dynamic=True)

    @property
    def compiled(self) -> bool:
        return getattr(self._base, "_compiled_call_impl", None) is not None

    @property
    def can_trim_last_layer(self) -> bool:
        """Whether the final layer can run at the scored token only (see last_layer.py).
        Not under torch.compile: the early stop is a Python exception, a graph break."""
        return self._last is not None and not self.compiled

    def _count(self, ids: torch.Tensor) -> None:
        with self._counter_lock:
            self.forward_calls += 1
            self.forward_tokens += int(ids.numel())

    def score_ids(
        self, seqs: list[list[int]], *, attention_mask: bool = False, trim: bool = True
    ) -> list[float]:
        """Score right-padded sequences; the logit is read at each sequence's last token."""
        import torch

        ids, lens = self._pad(seqs)
        self._count(ids)
        with torch.inference_mode():
            mask = None
            if attention_mask:
                mask = (
                    torch.arange(ids.shape[1], device=ids.device)[None, :] < lens[:, None]
                ).long()
            if self._base is None or self._head is None:
                out = self.model(input_ids=ids, attention_mask=mask)
                return out.logits[:, 0].double().cpu().tolist()
            if trim and self.can_trim_last_layer:
                return self._score_trimmed(
                    lambda: self._base(input_ids=ids, attention_mask=mask, use_cache=False), lens
                )
            hidden = self._base(
                input_ids=ids, attention_mask=mask, use_cache=False
            ).last_hidden_state
            final = hidden[torch.arange(ids.shape[0], device=ids.device), lens - 1]
            return self._head(final)[:, 0].double().cpu().tolist()

    def prefix_states(self, prefixes: list[list[int]], *, trim: bool = True) -> PrefixStates:
        """Key/value states of shared prompts, computed once per problem (batched, right-padded:
        a real position never attends to a pad slot, so its states are exact)."""
        import torch
        from transformers import DynamicCache

        ids, lens = self._pad(prefixes)
        self._count(ids)
        # Every layer keeps every prompt position, sliding-window layers too (a cache built
        # from the config would keep only their window): the answer passes read the cache
        # without a config, and their masks apply the windows.
        cache = DynamicCache()

        def forward():
            return self._base(input_ids=ids, use_cache=True, **{self._cache_kw: cache})

        with torch.inference_mode():
            if trim and self.can_trim_last_layer:
                # The final layer of a prompt is only ever read as keys and values.
                last = self._last
                hidden, kw = last.run_to_input(forward)
                _, k, v = last.keys_values(hidden, kw["position_embeddings"])
                n = len(self._base.layers)
                kv = [(layer.keys, layer.values) for layer in cache.layers[: n - 1]] + [(k, v)]
            else:
                forward()
                kv = [(layer.keys, layer.values) for layer in cache.layers]
        return PrefixStates(kv, [len(p) for p in prefixes], lens)

    def score_suffixes(
        self,
        states: PrefixStates,
        rows: list[tuple[int, list[int]]],
        *,
        trim: bool = True,
        skip_blocks: bool = True,
    ) -> list[float]:
        """Score ``prefix[g] + suffix`` for each ``(g, suffix)`` row against cached prefix states.

        Exact for causal models: the prefix states do not depend on what follows; a suffix
        token sees its own prefix (padding slots of shorter prefixes are masked) and the
        real suffix tokens before it; positions continue from the row's own prefix length.
        ``skip_blocks``: on CPU, leave out the key blocks no query of a run sees
        (answer_attention.py).
        """
        import torch
        from transformers import DynamicCache

        from .answer_attention import ANSWER_PASS, AnswerPass

        ids, lens = self._pad([s for _, s in rows])
        b, width = ids.shape
        dev = ids.device
        groups = torch.tensor([g for g, _ in rows], dtype=torch.long, device=dev)
        plen = states.lengths_t.to(dev)[groups]
        self._count(ids)
        with torch.inference_mode():
            single = len(set(g for g, _ in rows)) == 1
            if single:
                g0 = rows[0][0]
                kv = [
                    (k[g0 : g0 + 1].expand(b, -1, -1, -1), v[g0 : g0 + 1].expand(b, -1, -1, -1))
                    for k, v in states.kv
                ]
            else:
                kv = [(k.index_select(0, groups), v.index_select(0, groups)) for k, v in states.kv]
            pmax = kv[0][0].shape[2]
            # Each row sees its own prompt slots (all of them when none is padded) ...
            seen = plen[:, None] > torch.arange(pmax, device=dev)[None, :]
            mask = None
            if not (single and states.lengths[rows[0][0]] == pmax):
                # ... and every answer slot (causality hides the later ones).
                mask = torch.cat([seen, seen.new_ones(b, width)], dim=1)
            pos = plen[:, None] + torch.arange(width, device=dev)[None, :]
            trimmed = trim and self.can_trim_last_layer
            # A trimmed pass stops before the final layer: its cached prompt is read directly.
            cache = DynamicCache(kv[:-1] if trimmed else kv)
            extra = {self._cache_kw: cache}
            if skip_blocks and self._answer_attention and not self.compiled:
                extra[ANSWER_PASS] = AnswerPass(start=pmax)

            def forward():
                return self._base(
                    input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, **extra
                )

            if trimmed:
                return self._score_trimmed(forward, lens, kv[-1], seen)
            out = forward()
            final = out.last_hidden_state[torch.arange(b, device=dev), lens - 1]
            return self._head(final)[:, 0].double().cpu().tolist()

    def _score_trimmed(
        self,
        forward: Any,
        lens: torch.Tensor,
        prompt_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
        prompt_seen: torch.Tensor | None = None,
    ) -> list[float]:
        """Run ``forward`` (a call of the decoder stack) up to its final layer, then finish
        that layer at each row's last token. ``prompt_kv``: the final layer's cached prompt
        keys/values, ``prompt_seen``: which of their slots each row may see."""
        import torch

        last = self._last
        hidden, kw = last.run_to_input(forward)
        pe = kw["position_embeddings"]
        normed, keys, values = last.keys_values(hidden, pe)
        # The scored token sees its own tokens, not the padding after them.
        key_mask = torch.arange(hidden.shape[1], device=hidden.device)[None, :] < lens[:, None]
        if prompt_kv is not None:
            keys = torch.cat([prompt_kv[0], keys], dim=2)
            values = torch.cat([prompt_kv[1], values], dim=2)
            key_mask = torch.cat([prompt_seen, key_mask], dim=1)
        final = last.pooled(hidden, normed, lens - 1, pe, keys, values, key_mask)
        return self._head(final)[:, 0].double().cpu().tolist()

    @property
    def supports_prefix_reuse(self) -> bool:
        return self._base is not None and self._head is not None


# ---------------------------------------------------------------- loading


def _flash_attn_available() -> bool:
    try:
        import flash_attn  # noqa: F401
    except Exception:
        return False
    return True


def _friendly_load_error(name: str, exc: BaseException) -> ModelError:
    text = (str(exc).strip() or type(exc).__name__).splitlines()[0][:300]
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
    try:
        model, info = AutoModelForSequenceClassification.from_pretrained(
            name,
            config=config,
            dtype=dtype,
            attn_implementation=attn,
            use_safetensors=None if options.allow_pickle_weights else True,
            output_loading_info=True,
            **common,
        )
    except Exception as exc:
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
