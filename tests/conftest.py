"""Shared fixtures: a tiny offline Qwen3 reward model (built once per session) and its scores."""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

# Let plain `pytest` import the package from a checkout that was not pip-installed.
_REPO_ROOT = str(Path(__file__).resolve().parents[1])
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

# What the tests make (saved datasets' caches, transformers' dynamic modules) goes to a
# temporary directory, never the user's home cache. Set before datasets/transformers are
# imported: they read these once. The hub cache is left alone (tests never download; the
# real-model test looks for weights there).
_CACHE = tempfile.mkdtemp(prefix="codescaler-tests-")
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
os.environ["HF_DATASETS_CACHE"] = os.path.join(_CACHE, "datasets")
os.environ["HF_MODULES_CACHE"] = os.path.join(_CACHE, "modules")


@pytest.fixture(autouse=True)
def _score_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Each test its own score cache (never the user's ~/.cache; no hits from another test).
    Subprocesses started by the test inherit it."""
    directory = tmp_path_factory.mktemp("score-cache")
    monkeypatch.setenv("CODESCALER_CACHE_DIR", str(directory))
    monkeypatch.delenv("CODESCALER_CACHE_MAX_SIZE", raising=False)
    return directory


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Default tiny reward model (BPE tokenizer, 2 layers, fp32 safetensors) saved on disk."""
    from codescaler_cli.tiny_model import build_tiny_reward_model

    return build_tiny_reward_model(tmp_path_factory.mktemp("tiny_model"))


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir: Path):
    """(tokenizer, model) loaded from ``tiny_model_dir`` through the Auto* classes, fp32, eval."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, dtype=torch.float32)
    return tokenizer, model.eval()


@pytest.fixture(scope="session")
def tok(tiny_model_dir: Path):
    """The tiny model's tokenizer (for models built in memory around it)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def rm(tiny_model_dir: Path):
    """The tiny model loaded through the CLI's own loader: fp32, CPU."""
    from codescaler_cli.config import ModelOptions
    from codescaler_cli.model.load import load_reward_model

    return load_reward_model(ModelOptions(model=str(tiny_model_dir), device="cpu", dtype="float32"))


@pytest.fixture(scope="module")
def reference(tiny_model_dir: Path) -> list[float]:
    """The model card's path on each of fixtures_scoring's candidates alone, fp32."""
    from support.reference import model_card_scores
    from support.scoring import scoring_pairs

    return model_card_scores(
        str(tiny_model_dir), pairs=scoring_pairs(), batch=False, max_length=4096
    )


@pytest.fixture
def hf_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Hugging Face libraries offline. They read the variables once, at import (which an
    earlier test may have done), so their copies are patched too; otherwise a lookup goes
    online and retries for ~20 s before it fails."""
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
