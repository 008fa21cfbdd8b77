"""Shared fixtures: one tiny offline Qwen3 reward model per test session."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# Let plain `pytest` import the package from a checkout that was not pip-installed.
_REPO_ROOT = str(Path(__file__).resolve().parents[1])
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Default tiny reward model (BPE tokenizer, 2 layers, fp32 safetensors) saved on disk."""
    from codescaler_cli.testing import build_tiny_reward_model

    return build_tiny_reward_model(tmp_path_factory.mktemp("tiny_model"))


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir: Path):
    """(tokenizer, model) loaded from ``tiny_model_dir`` through the Auto* classes, fp32, eval."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, dtype=torch.float32)
    return tokenizer, model.eval()
