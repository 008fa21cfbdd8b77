"""The local engine: chunks scored in this process, one chunk prepared ahead.

Reading, extraction and tokenization of the next chunk run in a worker thread while the
forward passes of the current one run here. The model loads in steps, each on first need
(model/lazy.py): a run whose chunks were all finished earlier, or whose rows are all in
the score cache, loads no weights (nor torch).
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
    from ..model.lazy import LazyRewardModel
    from ..model.reward_model import RewardModel
    from ..scoring.scorer import Scorer


class LocalEngine:
    reads_ranges = False

    def __init__(
        self, opts: RunOptions, reward_model: RewardModel | LazyRewardModel | None = None
    ) -> None:
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
        from ..model.load import resolve_target

        # Without torch where that is certain: a run answered from the cache never imports it.
        return resolve_target(self.opts.model).device

    def scorer(self, progress: Progress) -> Scorer | None:
        if not self.opts.rows.score:
            return None
        if self._scorer is None:
            from ..scoring.build import build_scorer

            # Each loading step (tokenizer, weights) is shown as it happens: with the cache
            # the weights load at the first forward pass, or never.
            self._scorer = build_scorer(
                self.rm or self.opts.model, self.opts.scoring, self.opts.cache, progress=progress
            )
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
