"""What a cached score is keyed by, and how its value is checked (pure; no torch).

A key is ``sha256(namespace || model input)[:16]``:

* the **namespace** covers everything besides the input that decides the number: the
  model by content (weights, config, tokenizer and chat template: digest.py), the dtype,
  the device kind, the attention kernels, torch.compile, ``--max-length`` (which decides
  truncation), the versions of the libraries that turn text into token ids and run the
  model (transformers, tokenizers, jinja2, torch), and :data:`KEY_VERSION` (bumped whenever
  codescaler's own encoding or scoring changes a number);
* the **model input** is the extracted ``(question, code)`` pair, or the whole text for
  raw-text scoring. Given the namespace it decides the token ids exactly (rendering with
  the template and fitting to the max length are pure functions of them), so a lookup
  needs no tokenizer, no torch and no chat template: a run whose rows all hit loads
  nothing. Extraction mode and reward shaping are not in the key: the value is the raw
  score of that exact input, and rows are shaped from it as from a fresh score.

Options that only change how candidates are batched (token budgets, streams, prefix
reuse, packing, trimming the last layer) are left out on purpose: every such path gives
the candidate's own score within 1e-5 x max(1, |score|) in fp32, tested, so an earlier
run's score is as good as a new one and every path shares them.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import NamedTuple

# Bump when codescaler's encoding (rendering, truncation) or scoring changes any number.
KEY_VERSION = 1
KEY_BYTES = 16
# Libraries whose versions are part of the namespace: they tokenize or run the model.
LIBRARIES = ("torch", "transformers", "tokenizers", "jinja2")


class Entry(NamedTuple):
    """A stored result: the raw score (None: the code alone does not fit the max length),
    the tokens the model saw (or the conversation's full length when it did not fit), and
    whether the question was shortened."""

    score: float | None
    n_tokens: int
    truncated: bool


@dataclass(frozen=True)
class Namespace:
    """Everything besides the model input that decides a score."""

    model_digest: str  # content digest of the model's files (digest.py)
    dtype: str  # float32, bfloat16, float16
    device: str  # cpu, cuda, mps (the kind: every GPU of a kind computes alike)
    attn: str  # attention implementation (sdpa, flash_attention_2, eager ...)
    compiled: bool
    max_length: int
    libraries: tuple[tuple[str, str], ...]
    version: int = KEY_VERSION

    def digest(self) -> bytes:
        text = json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).digest()[:KEY_BYTES]


def library_versions() -> tuple[tuple[str, str], ...]:
    """Installed versions of :data:`LIBRARIES`, read from their metadata (no import)."""
    from importlib import metadata

    out = []
    for name in LIBRARIES:
        try:
            out.append((name, metadata.version(name)))
        except metadata.PackageNotFoundError:
            out.append((name, ""))
    return tuple(out)


def _text(value: str) -> bytes:
    # surrogatepass: a lone surrogate still hashes (to itself), never raises.
    return value.encode("utf-8", "surrogatepass")


def pair_keys(namespace: bytes, questions: Sequence[str], codes: Sequence[str]) -> list[bytes]:
    """Keys of (question, code) conversations. Each question is hashed once: the hash state
    after it is copied for each of its candidates."""
    base = hashlib.sha256(namespace + b"pair")
    states: dict[str, hashlib._Hash] = {}
    out = []
    for q, c in zip(questions, codes, strict=True):
        state = states.get(q)
        if state is None:
            qb = _text(q)
            state = base.copy()
            state.update(len(qb).to_bytes(8, "little") + qb)
            states[q] = state
        h = state.copy()
        h.update(_text(c))
        out.append(h.digest()[:KEY_BYTES])
    return out


def text_keys(namespace: bytes, texts: Sequence[str]) -> list[bytes]:
    """Keys of whole model inputs scored as given (no chat template)."""
    base = hashlib.sha256(namespace + b"text")
    out = []
    for t in texts:
        h = base.copy()
        h.update(_text(t))
        out.append(h.digest()[:KEY_BYTES])
    return out


_VALUE = struct.Struct("<dqB?")


def check(key: bytes, entry: Entry) -> int:
    """A CRC-32 of a stored row's key and value: a damaged row (a flipped bit the file
    format does not notice) is a miss, never a wrong score."""
    return check_row(key, entry.score, entry.n_tokens, entry.truncated)


def check_row(key: bytes, score: float | None, n_tokens: int, truncated: bool | int) -> int:
    """:func:`check` of a row as SQLite returns it."""
    packed = _VALUE.pack(0.0 if score is None else score, n_tokens, truncated, score is None)
    return zlib.crc32(key + packed)


def storable(entry: Entry) -> bool:
    """NaN cannot be stored (SQLite reads it back as NULL, which means "too long")."""
    return entry.score is None or math.isfinite(entry.score)
