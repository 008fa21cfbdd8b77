"""Where a run reports progress and its summary. The library itself prints nothing: the
command line plugs in a rich bar (cli/display.py)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


class Progress:
    """Progress sink; every method may be left as is."""

    def start(self, total: int | None) -> None:
        pass

    def stage(self, text: str) -> None:
        """A step before candidates are scored (e.g. loading the model) begins."""

    def stage_done(self) -> None:
        """The step begun by :meth:`stage` ended (a display stops its clock there)."""

    def advance(self, rows: int, tokens: int = 0) -> None:
        pass

    def message(self, text: str) -> None:
        pass

    def stop(self) -> None:
        pass


@dataclass
class RunSummary:
    rows_read: int = 0
    rows_written: int = 0
    scored: int = 0
    unique_scored: int = 0
    deduplicated: int = 0
    invalid: int = 0
    truncated: int = 0
    too_long: int = 0
    cached: int = 0  # rows whose scores came from the score cache
    rejected: int = 0
    chunks: int = 0
    chunks_resumed: int = 0
    forward_calls: int = 0
    seconds: float = 0.0
    output: str | None = None
    rejected_path: str | None = None
    methods: dict[str, int] = field(default_factory=dict)

    @property
    def rows_per_second(self) -> float:
        return self.rows_read / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["rows_per_second"] = round(self.rows_per_second, 3)
        d["seconds"] = round(self.seconds, 3)
        return d
