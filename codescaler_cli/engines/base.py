"""What an engine is: where chunks are scored, behind the one resumable loop (loop.py)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ..fields import Fields
from ..io.source import ChunkRef

if TYPE_CHECKING:
    from ..progress import Progress
    from ..stages import ChunkResult


@dataclass
class Work:
    """One chunk to score: where its rows are, and its input's fields (None: no readable row)."""

    ref: ChunkRef
    fields: Fields | None


class Engine(Protocol):
    """Scores chunks. The loop reads, detects fields, checkpoints, merges and reports;
    an engine only turns each :class:`Work` into a ``ChunkResult``, in any order."""

    # True: the loop hands over file ranges, read where the chunk is scored.
    reads_ranges: bool

    def session(self, progress: Progress) -> AbstractContextManager[None]:
        """Resources held for the run (a cluster connection), released even on Ctrl-C."""
        ...

    def device(self) -> str | None:
        """Where scores are computed (``cpu``, ``cuda``...), for the resume fingerprint."""
        ...

    def score(self, work: Iterator[Work], progress: Progress) -> Iterator[ChunkResult]:
        """Results of ``work``, each as soon as it is done; advances ``progress``."""
        ...

    def model_meta(self) -> dict[str, str] | None:
        """Provenance of the model that scored (None: nothing scored in this run)."""
        ...

    @property
    def forward_calls(self) -> int: ...
