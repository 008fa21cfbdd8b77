"""What the batcher takes and gives (pure data), and how it refuses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

CHARS_PER_TOKEN = 3.5  # to size a batch before tokenizing it


def tokens_of(c: Candidate) -> float:
    """Estimated tokens of a candidate, before tokenizing it."""
    return (len(c.question) + len(c.code)) / CHARS_PER_TOKEN


class QueueFull(Exception):
    """More candidates are waiting than the queue holds: try again later (503)."""


class Closed(Exception):
    """The server is shutting down."""


class Abandoned(Exception):
    """Raised between forward passes to stop a batch nobody waits for any more."""


@dataclass
class Candidate:
    question: str
    code: str  # the extracted code; with ``raw``, the whole model input
    raw: bool = False  # score ``code`` as the text it is (no chat template, no extraction)


@dataclass
class Scored:
    score: float | None
    n_tokens: int | None
    truncated: bool
    too_long: bool


@dataclass
class BatchReport:
    """What one batch did, for the metrics."""

    requests: int
    candidates: int
    unique: int  # candidates the model ran
    dedup_hits: int  # candidates answered by an identical one in the batch
    tokens: int
    prefix_tokens_saved: int  # prompt tokens not recomputed (prompt reuse)


class Ticket:
    """A request on its way to the batcher (being read, parsed, extracted): a forming batch
    waits for it, up to the window. Withdrawn once: when it is queued, or on an error."""

    def __init__(self, batcher: Any) -> None:  # a Batcher, or None for other requests
        self.batcher = batcher
        if batcher is not None:
            batcher.coming(+1)

    def leave(self) -> None:
        batcher, self.batcher = self.batcher, None
        if batcher is not None:
            batcher.coming(-1)
