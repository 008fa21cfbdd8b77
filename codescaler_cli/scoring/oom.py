"""Out-of-memory backoff: a pass that runs out of memory is halved and each half retried.

No score depends on its batch, so the halves give the same scores; later passes are
planned with the smaller budget, so the error does not repeat. The budget and the pass
counters are shared by every stream, under one lock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from ..errors import ModelError
from .plan import split_batch

if TYPE_CHECKING:
    import torch

T = TypeVar("T")


def is_oom(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def release_memory(device: torch.device) -> None:
    import gc

    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


@dataclass
class ScoreStats:
    batches: int = 0
    oom_retries: int = 0
    real_tokens: int = 0
    padded_tokens: int = 0
    prefix_groups: int = 0
    prefix_tokens_saved: int = 0
    budgets: list[int] = field(default_factory=list)


class Budget:
    """Padded tokens per forward pass, halved on out-of-memory; and the pass counters."""

    def __init__(self, tokens: int, device: torch.device, stats: ScoreStats | None = None) -> None:
        self.initial = tokens
        self.tokens = tokens
        self.device = device
        self.stats = stats if stats is not None else ScoreStats()
        self._lock = threading.Lock()

    def note_oom(self, rows: int, width: int) -> None:
        with self._lock:
            self.stats.oom_retries += 1
            self.tokens = max(width, min(self.tokens, width * rows) // 2)
            self.stats.budgets.append(self.tokens)

    def count(self, rows: int, real: int, width: int) -> None:
        with self._lock:
            self.stats.batches += 1
            self.stats.real_tokens += real
            self.stats.padded_tokens += width * rows

    def run(
        self,
        call: Callable[[list[T]], list[float]],
        items: list[T],
        size: Callable[[T], int],
        context: int = 0,
    ) -> list[float]:
        """``call(items)`` for one batch, halved and retried on out-of-memory."""
        try:
            out = call(items)
        except Exception as exc:
            if not is_oom(exc):
                raise
            release_memory(self.device)
            width = context + max(size(x) for x in items)
            if len(items) < 2:
                raise ModelError(
                    f"out of memory on a single sequence of {width} tokens; "
                    "lower --max-length or use a device with more memory"
                ) from None
            self.note_oom(len(items), width)
            left, right = split_batch(items)
            return self.run(call, left, size, context) + self.run(call, right, size, context)
        lengths = [size(x) for x in items]
        self.count(len(items), sum(lengths), max(lengths))
        return out

    def oom_error(self, what: str, tokens: int) -> ModelError:
        """A pass that cannot be halved (a prompt pass) ran out of memory."""
        release_memory(self.device)
        return ModelError(
            f"out of memory computing {what} ({tokens} tokens); lower "
            "--max-tokens-per-batch or use --no-prefix-reuse"
        )
