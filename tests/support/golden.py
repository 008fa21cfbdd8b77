"""Golden scores: what the seeded tiny test model gives on fixed candidates, kept in the repo.

tests/test_golden.py recomputes them with the current code, so any change to what a score
is (extraction, the chat rendering, tokenization, shortening over-long questions, the
forward pass, shaping) fails it, even one every path shares and no reference comparison
would see. Regenerate only for a deliberate change, and say why in the commit:

    python tests/support/golden.py
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).with_name("golden_scores.json")
SAMPLE = REPO / "sample_data" / "candidates.jsonl"
# The default, and one that shortens the long questions and leaves some code unscored.
MAX_LENGTHS = (4096, 160)
DTYPES = ("float32", "float64")
COLUMNS = ("code_valid", "extract_method", "n_tokens", "truncated", "score", "reward")
EXACT_COLUMNS = ("code_valid", "extract_method", "n_tokens", "truncated")
BUILD_FILES = ("model.safetensors", "tokenizer.json")


def candidates() -> list[dict[str, str]]:
    """The fixed candidates (stored in the golden file, so later edits here change nothing)."""
    from codescaler_cli.tiny_model.corpus import (
        MODEL_CARD_PROGRAM_CORRECT,
        MODEL_CARD_PROGRAM_WRONG,
        MODEL_CARD_QUESTION,
    )

    rows = [
        {"question": r["question"], "response": r["response"]}
        for r in map(json.loads, SAMPLE.read_text(encoding="utf-8").splitlines())
    ]
    fence = "```python\n{}```"
    long_question = "Return the sum of the even numbers of a list of integers.\n" * 12
    rows += [
        {"question": MODEL_CARD_QUESTION, "response": fence.format(MODEL_CARD_PROGRAM_CORRECT)},
        {"question": MODEL_CARD_QUESTION, "response": fence.format(MODEL_CARD_PROGRAM_WRONG)},
        {
            "question": long_question,
            "response": "def f(xs):\n    return sum(x for x in xs if x % 2 == 0)\n",
        },
        {
            "question": "Add a and b.",
            "response": "<think>\n" + "Maybe a loop? No, just add them.\n" * 20 + "</think>\n"
            "```python\ndef add(a, b):\n    return a + b\n```",
        },
        {"question": "Add a and b.", "response": "I cannot solve this."},
        {"question": "Add a and b.", "response": ""},
    ]
    return rows


def fingerprint(model_dir: str | Path) -> dict[str, str]:
    """The built model's files, so a failure can tell a different build from a different
    computation."""
    return {
        name: hashlib.sha256((Path(model_dir) / name).read_bytes()).hexdigest()
        for name in BUILD_FILES
    }


def compute(model_dir: str | Path, rows: list[dict[str, Any]]) -> dict[str, list[dict]]:
    """Every configuration's outputs for ``rows``, through the public API (fp32, and the
    same weights in float64), keyed ``DTYPE/max_length=N``."""
    from codescaler_cli import score_records
    from codescaler_cli.config import ModelOptions
    from codescaler_cli.model.load import load_reward_model
    from codescaler_cli.model.reward_model import RewardModel

    out: dict[str, list[dict]] = {}
    for dtype in DTYPES:
        rm = load_reward_model(ModelOptions(model=str(model_dir), device="cpu", dtype="float32"))
        if dtype == "float64":
            rm = RewardModel(rm.tokenizer, rm.model.double(), name=rm.name, revision=None)
        for max_length in MAX_LENGTHS:
            got = score_records([dict(r) for r in rows], model=rm, max_length=max_length)
            out[f"{dtype}/max_length={max_length}"] = [{k: r[k] for k in COLUMNS} for r in got]
    return out


def main() -> None:
    import tokenizers
    import torch
    import transformers

    from codescaler_cli.tiny_model import build_tiny_reward_model

    rows = candidates()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_tiny_reward_model(tmp)  # its defaults: the tests' tiny model
        golden = {
            "about": "python tests/support/golden.py wrote this; tests/test_golden.py checks it",
            "versions": {
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "tokenizers": tokenizers.__version__,
            },
            "build": fingerprint(model_dir),
            "candidates": rows,
            "outputs": compute(model_dir, rows),
        }
    GOLDEN.write_text(json.dumps(golden, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {GOLDEN.relative_to(REPO)}")


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
