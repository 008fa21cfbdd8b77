"""Pairs to token ids: dedup, render with the model's chat template, fit to the max length.

An over-long conversation is fitted by cutting the question's tail, never the code or the
template's closing tokens (the score is read at the last token): the model card's right
truncation would read the score from the middle of the code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..cache.keys import Entry
    from ..model.lazy import LazyRewardModel

# Rounds of cutting the question before giving up on fitting a conversation.
FIT_ROUNDS = 12
# Normalisation (NFC) may merge a few characters into one before tokenizing: margin for the
# bound on what can ever fit.
NORMALISATION_MARGIN = 4


@dataclass
class Encoded:
    ids: list[int] | None  # None: does not fit even with an empty question
    truncated: bool
    full_length: int


@dataclass
class Prepared:
    """Deduplicated pairs, looked up in the score cache, the misses tokenized."""

    owner: list[int]  # per input row: index into the unique pairs, -1 for no code
    questions: list[str]  # of the unique pairs ("" for whole texts)
    encoded: list[Encoded | None]  # None: answered from the cache (see hits)
    codes: list[str] | None = None  # of the unique pairs (whole texts with ``texts``)
    keys: list[bytes] | None = None  # cache keys of the unique pairs (None: no cache)
    hits: list[Entry | None] | None = None  # stored results of the unique pairs
    texts: bool = False  # whole model inputs, scored as given
    version: object = None  # the store's state when looked up (store.ScoreStore.version)


def dedup(
    questions: Sequence[str], codes: Sequence[str], enabled: bool = True
) -> tuple[list[int], list[str], list[str]]:
    """Each row's unique (question, code) slot (-1: no code), and the unique pairs (pure)."""
    slot_of: dict[tuple[str, str], int] = {}
    uq: list[str] = []
    uc: list[str] = []
    owner = [-1] * len(questions)
    for i, (q, c) in enumerate(zip(questions, codes, strict=True)):
        if not c:
            continue
        slot = slot_of.get((q, c)) if enabled else None
        if slot is None:
            slot = len(uq)
            if enabled:
                slot_of[(q, c)] = slot
            uq.append(q)
            uc.append(c)
        owner[i] = slot
    return owner, uq, uc


class Encoder:
    """Token ids of (question, code) conversations within ``max_length`` tokens."""

    def __init__(self, rm: LazyRewardModel, max_length: int) -> None:
        self.rm = rm
        self.max_length = max_length
        self._longest: int | None = None

    @property
    def longest_token(self) -> int:
        """The vocabulary's longest entry, in characters (loads the tokenizer)."""
        if self._longest is None:
            self._longest = max(max((len(t) for t in self.rm.tokenizer.get_vocab()), default=1), 1)
        return self._longest

    def max_chars(self, longest_token: int | None = None) -> int:
        """More characters than this can never fit in ``max_length`` tokens: no token of the
        vocabulary covers more than its longest entry. Checked before extracting or
        tokenizing, so a response of megabytes costs nothing."""
        return self.max_length * (longest_token or self.longest_token) * NORMALISATION_MARGIN

    def encode_pairs(self, questions: Sequence[str], codes: Sequence[str]) -> list[Encoded]:
        texts = [self.rm.render(q, c) for q, c in zip(questions, codes, strict=True)]
        out: list[Encoded] = []
        for q, c, ids in zip(questions, codes, self.rm.encode(texts), strict=True):
            if len(ids) <= self.max_length:
                out.append(Encoded(ids, False, len(ids)))
            else:
                out.append(self.shorten(q, c, len(ids)))
        return out

    def shorten(self, question: str, code: str, full: int) -> Encoded:
        """Cut the question's tail until the conversation fits; the code and the template's
        closing tokens (where the score is read) are never cut."""
        limit = self.max_length
        tok = self.rm.tokenizer
        try:
            enc = tok(question, add_special_tokens=False, return_offsets_mapping=True)
            offsets = [end for _, end in enc["offset_mapping"]]
        except (NotImplementedError, TypeError, KeyError):
            offsets = None
        n_q = len(offsets) if offsets is not None else len(question)
        keep = n_q - (full - limit) - 1
        for _ in range(FIT_ROUNDS):
            if keep <= 0:
                text = ""
            else:
                text = question[: offsets[keep - 1]] if offsets is not None else question[:keep]
            ids = self.rm.encode([self.rm.render(text, code)])[0]
            if len(ids) <= limit:
                return Encoded(ids, True, full)
            if keep <= 0:
                return Encoded(None, True, full)
            over = len(ids) - limit
            keep -= over if offsets is not None else max(over * 2, 1)
        return Encoded(None, True, full)

    def encode_texts(self, texts: Sequence[str]) -> list[Encoded]:
        """Whole model inputs, tokenized as given (no chat template): they fit or are too
        long; there is no question to shorten."""
        return [
            Encoded(ids, False, len(ids))
            if len(ids) <= self.max_length
            else Encoded(None, True, len(ids))
            for ids in self.rm.encode(list(texts))
        ]
