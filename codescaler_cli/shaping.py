"""Reward shaping (pure).

The authors' validity-preserving shaping: a program that was extracted and parses gets
``softplus(score) = log(1 + e^score)``, which is always > 0; anything else gets 0.0.
So every valid program outranks every invalid one while the order among valid
programs is the model's.
"""

from __future__ import annotations

import math

from .config import Shaping

SHAPINGS: tuple[str, ...] = tuple(s.value for s in Shaping)


def softplus(x: float) -> float:
    """Numerically stable ``log(1 + e^x)``: exact for large |x| where the naive form overflows."""
    if x > 0:
        return x + math.log1p(math.exp(-x))
    return math.log1p(math.exp(x))


def sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def shape_reward(score: float | None, valid: bool, shaping: str = "softplus") -> float:
    """Shaped reward for one candidate; 0.0 when there is no valid code or no score.

    ``softplus`` is the paper's rule. ``raw`` returns the logit itself for valid code
    (it can be negative, so it does not preserve validity ordering); ``sigmoid`` maps
    valid code to (0, 1) like vLLM's default one-label pooling.
    """
    if not valid or score is None or math.isnan(score):
        return 0.0
    if shaping == "softplus":
        return softplus(score)
    if shaping == "sigmoid":
        return sigmoid(score)
    if shaping == "raw":
        return float(score)
    raise ValueError(f"unknown shaping {shaping!r}; choose one of {', '.join(SHAPINGS)}")
