"""A random Qwen3 reward model with a Qwen3-style tokenizer, saved like a real checkpoint."""

from __future__ import annotations

import json
import os
import pathlib
from typing import TYPE_CHECKING, Literal

from .template import QWEN3_CHAT_TEMPLATE, QWEN3_CONFIG_VOCAB_SIZE
from .tokenizer import build_tokenizer

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

# Std of the score head's weights times sqrt(hidden): the final RMSNorm makes the pooled hidden
# state ~unit scale per dimension, so this gives logits of a few units, like a trained reward model.
_SCORE_HEAD_GAIN = 4.0
# Larger than transformers' 0.02 so a random 2-layer model mixes context into the last token (whose
# id is always the template's closing "\n"); with 0.02 all candidates would score almost the same.
_INITIALIZER_RANGE = 0.1
_ARTIFACTS = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "vocab.json",
    "merges.txt",
)


def build_tiny_reward_model(
    out_dir: str | os.PathLike,
    *,
    tokenizer: str | PreTrainedTokenizerBase = "bpe",
    hidden_size: int = 64,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    num_key_value_heads: int = 2,
    head_dim: int | None = None,
    intermediate_size: int = 128,
    vocab_size: int | None = None,
    max_position_embeddings: int = 8192,
    seed: int = 0,
    num_labels: int = 1,
    chat_template: str | None = QWEN3_CHAT_TEMPLATE,
    pad_token_id: int | Literal["auto"] | None = "auto",
    safetensors: bool = True,
    torch_dtype: str = "float32",
    initializer_range: float = _INITIALIZER_RANGE,
    score_gain: float = _SCORE_HEAD_GAIN,
) -> pathlib.Path:
    """Save a random ``Qwen3ForSequenceClassification`` + tokenizer into ``out_dir``; return it.

    tokenizer: "bpe" / "qwen" (see ``build_tokenizer``) or a ready tokenizer object.
    vocab_size: embedding rows; default: tokenizer length rounded up to a multiple of 64 ("bpe"),
        151936 like Qwen3 ("qwen").
    pad_token_id: "auto" -> the tokenizer's pad id (as in the real model); None -> no pad id in
        config.json (batches > 1 then fail in transformers); an int -> that id (mismatch tests).
    num_labels: 1 like CodeScaler; 2 builds a wrong-head model for error tests.
    chat_template: None saves a tokenizer without any chat template (error tests).
    safetensors: False writes only ``pytorch_model.bin`` (a pickle), for the refuse-pickle test.
    torch_dtype: dtype of the saved weights ("float32", "bfloat16", ...).
    initializer_range / score_gain: init std of all weights / scale of the score head; the
        defaults give scores a spread of a few units across different programs.
    Weights come from ``seed`` only (global RNG untouched): same arguments, same checkpoint.
    """
    import torch
    from transformers import Qwen3Config, Qwen3ForSequenceClassification

    out = pathlib.Path(out_dir)
    if isinstance(tokenizer, str):
        tok = build_tokenizer(tokenizer, chat_template=chat_template)
    else:
        tok = tokenizer
        if chat_template is not None:
            tok.chat_template = chat_template
        elif getattr(tok, "chat_template", None) is not None:
            raise ValueError("chat_template=None with a tokenizer object that has one")
    if vocab_size is None:
        # Round up like Qwen3 does (151,669 tokenizer entries, 151,936 embedding rows).
        qwen = isinstance(tokenizer, str) and tokenizer == "qwen"
        vocab_size = QWEN3_CONFIG_VOCAB_SIZE if qwen else -(-len(tok) // 64) * 64
    if vocab_size < len(tok):
        raise ValueError(f"vocab_size {vocab_size} < tokenizer length {len(tok)}")
    if head_dim is None:
        head_dim = hidden_size // num_attention_heads
    pad_id = tok.pad_token_id if pad_token_id == "auto" else pad_token_id
    dtype = getattr(torch, torch_dtype)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"unknown torch_dtype {torch_dtype!r}")

    config = Qwen3Config(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads,
        head_dim=head_dim,
        hidden_act="silu",
        max_position_embeddings=max_position_embeddings,
        initializer_range=initializer_range,
        rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
        tie_word_embeddings=False,
        use_sliding_window=False,
        attention_bias=False,
        pad_token_id=pad_id,
        bos_token_id=None,
        eos_token_id=tok.eos_token_id,
        num_labels=num_labels,
    )
    if num_labels == 1:
        config.id2label = {0: "LABEL_0"}
        config.label2id = {"LABEL_0": 0}

    with torch.random.fork_rng(devices=[]):  # seed the init without touching the caller's RNG
        torch.manual_seed(seed)
        model = Qwen3ForSequenceClassification(config)
    with torch.no_grad():
        # Re-draw the score head from its own generator so its scale doesn't depend on the init
        # scheme of the installed transformers version.
        gen = torch.Generator().manual_seed(seed + 1)
        weight = torch.randn(model.score.weight.shape, generator=gen)
        model.score.weight.copy_(weight * (score_gain / hidden_size**0.5))
    model = model.to(dtype).eval()

    out.mkdir(parents=True, exist_ok=True)
    for name in _ARTIFACTS:  # a rebuild into the same dir must not keep e.g. an old template
        (out / name).unlink(missing_ok=True)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no "Writing model shards" bars in test/benchmark output
    model.save_pretrained(out)
    tok.save_pretrained(out)
    if pad_id is None:
        # save_pretrained writes "pad_token_id": null; drop the key so it is really missing.
        config_path = out / "config.json"
        saved = json.loads(config_path.read_text(encoding="utf-8"))
        saved.pop("pad_token_id", None)
        config_path.write_text(json.dumps(saved, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    if not safetensors:
        # transformers 5 removed safe_serialization=False: write the pickle checkpoint ourselves.
        state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
        torch.save(state, out / "pytorch_model.bin")
        for name in ("model.safetensors", "model.safetensors.index.json"):
            (out / name).unlink(missing_ok=True)
    return out
