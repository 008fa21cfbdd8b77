"""The model card's scoring code: the project's ground truth in tests and benchmarks.

How close a score must come to it is codescaler_cli/exactness.py's guarantee, stated once:
:func:`assert_exact` applies it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from codescaler_cli import exactness
from codescaler_cli.tiny_model.corpus import (
    MODEL_CARD_PROGRAM_CORRECT,
    MODEL_CARD_PROGRAM_WRONG,
    MODEL_CARD_QUESTION,
)

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

MODEL_CARD_PAIRS: tuple[tuple[str, str], ...] = (
    (MODEL_CARD_QUESTION, MODEL_CARD_PROGRAM_CORRECT),
    (MODEL_CARD_QUESTION, MODEL_CARD_PROGRAM_WRONG),
)


def assert_exact(
    scores: Sequence[float | None],
    references: Sequence[float | None],
    dtype: Any = "float32",
    what: str = "scores",
) -> None:
    """Every score within the guarantee for ``dtype`` of its reference (None matches None)."""
    err = exactness.error(scores, references)
    limit = exactness.bound(dtype)
    assert err <= limit, f"{what}: off the reference by {err:.3g} x max(1, |ref|) > {limit:g}"


def _load(model_dir: str | os.PathLike, device: str) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=torch.float32)
    return tokenizer, model.to(device).eval()


def model_card_scores(
    model_dir_or_model: str | os.PathLike | PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase | None = None,
    pairs: Sequence[tuple[str, str]] = MODEL_CARD_PAIRS,
    *,
    max_length: int = 2048,
    device: str = "cpu",
    batch: bool = False,
) -> list[float]:
    """Score (question, program) pairs the way the model card does; the project's ground truth.

    A directory is loaded with ``AutoTokenizer`` + ``AutoModelForSequenceClassification`` in fp32;
    a model object needs ``tokenizer``. ``batch=False`` runs each pair alone (no padding at all),
    ``batch=True`` runs all pairs as one right-padded batch exactly like the card.
    """
    import torch

    if isinstance(model_dir_or_model, (str, os.PathLike)):
        loaded_tok, model = _load(model_dir_or_model, device)
        tokenizer = tokenizer or loaded_tok
    else:
        model = model_dir_or_model
        if tokenizer is None:
            raise ValueError("pass the tokenizer together with a model object")
    if model.config.num_labels != 1:
        raise ValueError(f"not a one-label reward model: num_labels={model.config.num_labels}")
    if not pairs:
        return []
    convs = [
        [{"role": "user", "content": question}, {"role": "assistant", "content": program}]
        for question, program in pairs
    ]
    texts = [tokenizer.apply_chat_template(conv, tokenize=False) for conv in convs]
    groups = [texts] if batch else [[t] for t in texts]
    scores: list[float] = []
    with torch.no_grad():
        for group in groups:
            toks = tokenizer(
                group,
                truncation=True,
                padding=True,
                max_length=max_length,
                return_tensors="pt",
            )
            outputs = model(
                input_ids=toks["input_ids"].to(device),
                attention_mask=toks["attention_mask"].to(device),
            )
            # As the card: the logits as they are (float64 models keep their precision).
            scores.extend(float(s) for s in outputs.logits.squeeze(-1).cpu().tolist())
    return scores
