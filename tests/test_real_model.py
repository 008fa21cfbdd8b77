"""The model card's published example, on the real weights (skipped unless they are here).

Run with the weights in the local Hugging Face cache or a directory:
    CODESCALER_REAL_MODEL=1 python -m pytest -m real_model
    CODESCALER_MODEL=/path/to/CodeScaler-1.7B python -m pytest -m real_model
"""

from __future__ import annotations

import os

import pytest

from codescaler_cli.config import DEFAULT_MODEL
from codescaler_cli.tiny_model.corpus import (
    MODEL_CARD_PROGRAM_CORRECT,
    MODEL_CARD_PROGRAM_WRONG,
    MODEL_CARD_QUESTION,
)


def _real_model() -> str | None:
    name = os.environ.get("CODESCALER_MODEL") or DEFAULT_MODEL
    if os.path.isdir(name) and os.path.exists(os.path.join(name, "config.json")):
        return name
    if os.environ.get("CODESCALER_REAL_MODEL") == "1":
        return name
    try:  # already in the local cache?
        from huggingface_hub import try_to_load_from_cache

        if isinstance(try_to_load_from_cache(name, "config.json"), str):
            return name
    except Exception:
        pass
    return None


@pytest.mark.real_model
@pytest.mark.skipif(_real_model() is None, reason="real CodeScaler weights not available locally")
def test_model_card_example_scores():
    from codescaler_cli import score_records

    rows = [
        {"question": MODEL_CARD_QUESTION, "response": program}
        for program in (MODEL_CARD_PROGRAM_CORRECT, MODEL_CARD_PROGRAM_WRONG)
    ]
    # Programs verbatim (--extract none), fp32, as the card computed them.
    out = score_records(rows, model=_real_model(), extract="none", dtype="float32")
    correct, wrong = (r["score"] for r in out)
    assert correct == pytest.approx(12.51, abs=0.05)
    assert wrong == pytest.approx(-0.47, abs=0.05)
