"""Rows as `codescaler score` writes them (with their provenance), for tests of reranking."""

from __future__ import annotations

import math
from typing import Any

from codescaler_cli.provenance import OUTPUT_COLUMNS, Provenance

SCORED_BY = Provenance(
    version="test",
    model="test-model",
    dtype="float32",
    max_length=64,
    question_field="question",
    response_field="response",
    columns=OUTPUT_COLUMNS,
)


def scored_row(score: float | None, valid: bool = True, **user: Any) -> dict[str, Any]:
    """A scored output row: ``user``'s columns, then codescaler's."""
    reward = math.log1p(math.exp(score)) if valid and score is not None else 0.0
    return {
        "question": "q",
        "response": "def f(): pass",
        **user,
        "code": "def f(): pass",
        "code_valid": valid,
        "extract_method": "unfenced",
        "n_code_blocks": 0,
        "score": score,
        "reward": reward,
        "n_tokens": 10,
        "truncated": False,
        "codescaler": SCORED_BY.as_value(),
    }
