"""What "exact" means: codescaler's score guarantee per device and dtype, stated once.

The reference is the model card's computation for one candidate alone: its conversation
rendered with the tokenizer's chat template, no padding, no batch, no cache, the logit at
the last token. Every faster path (length-sorted token-budgeted batches, deduplication,
prompt reuse and packing, the final layer run at the scored token only, streams, resumed
chunks, Ray workers, the server's batches) changes only the order of floating-point
operations, so a score differs from the reference by rounding alone, within:

=========  ==========  ====================================================================
dtype      device      guarantee: ``|score - reference| <= bound x max(1, |reference|)``
=========  ==========  ====================================================================
float64    CPU         bound 1e-9: every path is the same arithmetic (what the tests prove
                       on the whole grid of options; the model cast with ``.double()``)
float32    CPU, CUDA   bound 1e-5 (tests on CPU; ``benchmarks/gpu_run.sh`` on CUDA, where
                       torch's default leaves TF32 matrix multiplies off; a process that
                       turns them on gets TF32's rounding instead)
bfloat16,  CUDA        no bound: the model's own rounding in 8 (bf16) or 11 (fp16) bits
float16                differs between batch shapes and attention kernels by up to about
                       0.1 on scores of a few units (docs/benchmarks.md). ``--dtype auto``
                       picks bf16 on CUDA for speed; pass ``--dtype float32`` where scores
                       must be reproducible.
=========  ==========  ====================================================================

The relative form keeps the bound meaningful for large logits (fp32 carries about 7
significant digits) and absolute near zero. MPS is untested: nothing is promised there.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

FLOAT32 = 1e-5
FLOAT64 = 1e-9
# The relative bound of each dtype; None: no bound is promised.
BOUNDS: dict[str, float | None] = {
    "float64": FLOAT64,
    "float32": FLOAT32,
    "bfloat16": None,
    "float16": None,
}


def bound(dtype: Any = "float32") -> float:
    """The relative bound for scores computed in ``dtype`` (a name or a ``torch.dtype``)."""
    name = str(dtype).removeprefix("torch.")
    if name not in BOUNDS:
        raise ValueError(f"unknown dtype {dtype!r}; expected one of {', '.join(BOUNDS)}")
    value = BOUNDS[name]
    if value is None:
        raise ValueError(f"no exactness bound is promised in {name}: score in float32")
    return value


def tolerance(reference: float, dtype: Any = "float32") -> float:
    """The largest difference from ``reference`` a score in ``dtype`` may have."""
    return bound(dtype) * max(1.0, abs(reference))


def error(scores: Sequence[float | None], references: Sequence[float | None]) -> float:
    """The largest ``|score - reference| / max(1, |reference|)`` over aligned lists (0 for
    none); a missing or non-finite score where the other has a number, or lists of
    different lengths, is infinitely wrong."""
    if len(scores) != len(references):
        return float("inf")
    worst = 0.0
    for score, ref in zip(scores, references, strict=True):
        if score is None or ref is None:
            if score is not ref:
                return float("inf")
            continue
        diff = abs(score - ref) / max(1.0, abs(ref))
        if not math.isfinite(diff):  # nan or inf: max() would pass a nan by
            return float("inf")
        worst = max(worst, diff)
    return worst


def exact(
    scores: Sequence[float | None], references: Sequence[float | None], dtype: Any = "float32"
) -> bool:
    """Whether every score is within the guarantee of its reference."""
    return error(scores, references) <= bound(dtype)
