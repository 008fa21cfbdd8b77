"""codescaler: batch-score code candidates with the CodeScaler reward model.

The public API (what the README documents): :func:`score_records`, :func:`load_model`
and :func:`rerank`. The package imports nothing heavy; torch and transformers load on
first use.
"""

from __future__ import annotations

from typing import Any

from ._version import __version__

__all__ = ["__version__", "load_model", "rerank", "score_records"]


def __getattr__(name: str) -> Any:
    # Lazy so `import codescaler_cli` (and `codescaler --help`) stays instant.
    if name in ("score_records", "load_model", "rerank"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'codescaler_cli' has no attribute {name!r}")
