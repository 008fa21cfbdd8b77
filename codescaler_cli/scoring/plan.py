"""Planning forward passes (pure): length-sorted token-budgeted batches, and prefix groups.

A batch costs ``len(batch) * max_len(batch)`` padded tokens; sorting by length keeps
the padding small and a token budget keeps peak memory flat whatever the lengths.
Batches come out longest first so an out-of-memory error shows up on the first batch
instead of after an hour of work.

A prefix group is the candidates of one question: its prompt (the longest token prefix
they all share) runs once, then every candidate runs only its own tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

# A batch is closed before padding exceeds this share of its tokens. With many candidates the
# budget fills with similar lengths anyway; with few, padding to the longest would be waste.
MAX_PADDING = 0.1
# Answer rows sharing one prompt pass's cached states (gathered per answer pass, so memory
# stays per pass; this bounds the bookkeeping).
MAX_PROMPT_ROWS = 4096


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


def split_batch(batch: Sequence[T]) -> tuple[list[T], list[T]]:
    """Halve a batch (for out-of-memory backoff); a single item cannot be split."""
    if len(batch) < 2:
        raise ValueError("cannot split a batch of one")
    mid = len(batch) // 2
    return list(batch[:mid]), list(batch[mid:])


def common_prefix_len(seqs: Sequence[Sequence[int]]) -> int:
    first = seqs[0]
    n = min(len(s) for s in seqs)
    for s in seqs[1:]:
        i = 0
        while i < n and s[i] == first[i]:
            i += 1
        n = i
        if n == 0:
            break
    return n


@dataclass
class Group:
    """Candidates scored against their shared prompt."""

    members: list[int]  # indices into the unique pairs
    prefix: list[int]
    suffixes: list[list[int]]


def prefix_groups(
    seqs: Sequence[Sequence[int] | None],
    questions: Sequence[str],
    todo: Sequence[int],
    min_prefix: int,
) -> tuple[list[Group], list[int]]:
    """Best-of-N groups to score against their shared prompt, and the items left over."""
    by_question: dict[str, list[int]] = {}
    for i in todo:
        by_question.setdefault(questions[i], []).append(i)
    rest: list[int] = []
    groups: list[Group] = []
    for members in by_question.values():
        if len(members) < 2:
            rest.extend(members)
            continue
        ids = [seqs[i] for i in members]
        # Keep at least one token per candidate to read the score from.
        p = min(common_prefix_len(ids), min(len(s) for s in ids) - 1)
        if p < min_prefix:
            rest.extend(members)
            continue
        groups.append(Group(members, list(ids[0][:p]), [list(s[p:]) for s in ids]))
    return groups, rest


def plan_groups(groups: list[Group], budget: int, pack: bool) -> list[list[Group]]:
    """Pack whole groups (similar prompt lengths together) into one prompt pass each.

    The prompt pass costs groups x longest prompt; the answers then run in as many
    passes as the budget needs, all reading the same cached prompt states.
    """
    groups = sorted(groups, key=lambda g: -len(g.prefix))
    if not pack:
        return [[g] for g in groups]
    plans: list[list[Group]] = []
    cur: list[Group] = []
    pmax = rows = 0
    for g in groups:
        width = max(pmax, len(g.prefix))
        if cur and ((len(cur) + 1) * width > budget or rows + len(g.suffixes) > MAX_PROMPT_ROWS):
            plans.append(cur)
            cur, pmax, rows = [], 0, 0
        cur.append(g)
        pmax = max(pmax, len(g.prefix))
        rows += len(g.suffixes)
    if cur:
        plans.append(cur)
    return plans
