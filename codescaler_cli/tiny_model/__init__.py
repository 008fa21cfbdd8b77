"""Tiny, fully offline Qwen3 reward models, to try codescaler or test a pipeline without weights.

The real scorer is ``LARK-Lab/CodeScaler-1.7B`` (a ``Qwen3ForSequenceClassification`` with
one label). This package builds look-alikes: same architecture class, same tokenizer class
(``Qwen2Tokenizer``), same chat template and special tokens, saved with ``save_pretrained``
so they load through ``AutoTokenizer`` and ``AutoModelForSequenceClassification`` exactly
as the real checkpoint does. Random weights: the scores mean nothing, the code paths are
real. ``codescaler make-test-model DIR`` runs it; the scoring code never imports it.

torch / transformers / tokenizers are imported inside functions: importing this stays cheap.
"""

from __future__ import annotations

from .build import build_tiny_reward_model
from .tokenizer import build_tokenizer, qwen_tiktoken_path

__all__ = ["build_tiny_reward_model", "build_tokenizer", "qwen_tiktoken_path"]
