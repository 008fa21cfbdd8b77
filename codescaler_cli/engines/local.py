"""The local engine: chunks scored in this process, one chunk prepared ahead.

Reading, extraction and tokenization of the next chunk run in a worker thread while the
forward passes of the current one run here. The model loads on the first chunk that
needs it, so a run whose chunks were all finished earlier never loads it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from ..config import RunOptions
from ..progress import Progress
from ..stages import ChunkResult, PreparedChunk, finish_chunk, model_provenance, prepare_chunk
from .base import Work

if TYPE_CHECKING:
    from ..model.reward_model import RewardModel
    from ..scoring.scorer import Scorer


class LocalEngine:
    reads_ranges = False

    def __init__(self, opts: RunOptions, reward_model: RewardModel | None = None) -> None:
        self.opts = opts
        self.rm = reward_model
        self._scorer: Scorer | None = None

    def session(self, progress: Progress) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def device(self) -> str | None:
        if not self.opts.rows.score:
            return None
        if self.rm is not None:
            return str(self.rm.device)
        from ..model.load import resolve_device

        return str(resolve_device(self.opts.model.device))

    def scorer(self, progress: Progress) -> Scorer | None:
        if not self.opts.rows.score:
            return None
        if self._scorer is None:
            from ..scoring.build import build_scorer

            if self.rm is None:
                progress.stage(f"loading model {self.opts.model.model}")
            self._scorer = build_scorer(self.rm or self.opts.model, self.opts.scoring)
            progress.stage_done()
            self.rm = self._scorer.rm
        return self._scorer

    def score(self, work: Iterator[Work], progress: Progress) -> Iterator[ChunkResult]:
        opts = self.opts

        def step() -> PreparedChunk | None:
            # Runs one chunk ahead in a worker thread.
            item = next(work, None)
            if item is None:
                return None
            chunk = item.ref.read()
            # The model loads on the first row that needs it (rows scored earlier may not).
            return prepare_chunk(
                chunk, item.fields, opts.rows, lambda: self.scorer(progress), opts.on_bad_row
            )

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="codescaler-prep") as pool:
            ahead = pool.submit(step)
            while (prepared := ahead.result()) is not None:
                ahead = pool.submit(step)
                yield finish_chunk(prepared, opts.rows, self._scorer, progress)

    def model_meta(self) -> dict[str, str] | None:
        if self._scorer is None or self.rm is None:
            return None
        return model_provenance(self.rm, self.opts.scoring.max_length)

    @property
    def forward_calls(self) -> int:
        return self.rm.forward_calls if self.rm is not None else 0
