"""Length-sorted, token-budgeted batch planning (pure).

A batch costs ``len(batch) * max_len(batch)`` padded tokens; sorting by length keeps
the padding small and a token budget keeps peak memory flat whatever the lengths.
Batches come out longest first so an out-of-memory error shows up on the first batch
instead of after an hour of work.
"""

from __future__ import annotations

from collections.abc import Sequence


def plan_batches(
    lengths: Sequence[int],
    max_tokens: int,
    max_batch_size: int | None = None,
    max_padding: float | None = None,
    context: int = 0,
) -> list[list[int]]:
    """Group item indices into batches whose padded size stays within ``max_tokens``.

    Items are taken longest first; an item longer than the budget gets a batch of its
    own (it still has to be scored). With ``max_padding`` a batch is also closed before
    its padding would exceed that fraction of its tokens (useful where small batches
    cost little, as on CPU). ``context`` tokens per item (e.g. a cached prompt every row
    attends to) count against the budget but not as padding. Every index appears in
    exactly one batch.
    """
    if max_tokens < 1:
        raise ValueError("max_tokens must be >= 1")
    if max_batch_size is not None and max_batch_size < 1:
        raise ValueError("max_batch_size must be >= 1")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    current_max = current_real = 0
    for i in order:
        n = max(int(lengths[i]), 1)
        width = max(current_max, n)
        size = width * (len(current) + 1)
        full = max_batch_size is not None and len(current) >= max_batch_size
        padded = max_padding is not None and size - current_real - n > max_padding * size
        if current and ((width + context) * (len(current) + 1) > max_tokens or full or padded):
            batches.append(current)
            current, width, current_real = [], n, 0
        current.append(i)
        current_max = width
        current_real += n
    if current:
        batches.append(current)
    return batches


def padding_stats(lengths: Sequence[int], batches: Sequence[Sequence[int]]) -> tuple[int, int]:
    """Return (real tokens, padded tokens processed) for a plan."""
    real = sum(int(lengths[i]) for b in batches for i in b)
    padded = sum(len(b) * max(int(lengths[i]) for i in b) for b in batches if b)
    return real, padded


def split_batch(batch: Sequence[int]) -> tuple[list[int], list[int]]:
    """Halve a batch (for out-of-memory backoff); a single item cannot be split."""
    if len(batch) < 2:
        raise ValueError("cannot split a batch of one")
    mid = len(batch) // 2
    return list(batch[:mid]), list(batch[mid:])
