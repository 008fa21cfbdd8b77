"""Choosing the solution among fenced Python/untagged blocks, by content."""

from __future__ import annotations

import re
from collections.abc import Iterable

from .analysis import PROGRAM, USAGE, Budget, Info
from .fences import Block, Blocks
from .result import Extraction

# A call of NAME: not part of a longer name or an attribute, then optional space and "(".
_CALL_NAME = r"(?<![\w.])(?:{})\s*\("
# Every word followed by "(" that no word character or "." precedes, read backwards from
# each "(" in the reversed code: one pass finds all calls of names made of word
# characters (all real identifiers), and starting at a literal "(" it skips the rest fast.
_CALLED_WORD_REVERSED = re.compile(r"\(\s*(\w+)(?![\w.])")
_WORD = re.compile(r"\w+")
_WORD_OR_DOT = re.compile(r"[\w.]")
# A run of characters that cannot end a name's call (no space, no "("), then the call.
_CALLED_RUN = re.compile(r"(?<![^\s(])([^\s(]+)\s*\(")


class _CallFinder:
    """Which of ``names`` a piece of code calls, as ``_CALL_NAME`` would find them, in time
    linear in the code (one alternation of every name would cost code x names)."""

    def __init__(self, names: Iterable[str]) -> None:
        self.words: set[str] = set()  # reversed, as the reversed code shows them
        self.odd: dict[int, set[str]] = {}  # names with other characters, by length
        self.odd_chars: set[str] = set()
        self.rare: list[str] = []  # names holding a space or "(": never identifiers
        self._seen: dict[str, set[str]] = {}  # a repeated block is searched once
        for name in names:
            if _WORD.fullmatch(name):
                self.words.add(name[::-1])
            elif any(c.isspace() or c == "(" for c in name):
                self.rare.append(name)
            else:
                self.odd.setdefault(len(name), set()).add(name)
                self.odd_chars.update(c for c in name if not _WORD.match(c))

    def called(self, code: str) -> set[str]:
        found = self._seen.get(code)
        if found is None:
            found = self._seen[code] = self._find(code)
        return found

    def _find(self, code: str) -> set[str]:
        reversed_words = self.words.intersection(_CALLED_WORD_REVERSED.findall(code[::-1]))
        found = {word[::-1] for word in reversed_words}
        if self.odd:
            # A name with a non-word character (a combining mark, say) ends a run of
            # non-space characters right before the call: try each length at each run.
            for m in _CALLED_RUN.finditer(code):
                run = m.group(1)
                if self.odd_chars.isdisjoint(run):
                    continue
                for size, names in self.odd.items():
                    begin = len(run) - size
                    if begin < 0 or run[begin:] not in names:
                        continue
                    at = m.start(1) + begin
                    if at == 0 or not _WORD_OR_DOT.match(code, at - 1):
                        found.add(run[begin:])
        found.update(n for n in self.rare if re.search(_CALL_NAME.format(re.escape(n)), code))
        return found


def _demote_dependents(cands: list[Block]) -> None:
    """A block calling a function that only another block defines is a usage example."""
    all_defs = [b.info.defs for b in cands if b.info is not None]
    if len(all_defs) < 2 or not any(all_defs):
        return
    finder = _CallFinder(frozenset().union(*all_defs))
    for b in cands:
        info = b.info
        if info is None or info.level <= USAGE:
            continue
        # The names other blocks define are all names less this block's own.
        if any(name not in info.defs for name in finder.called(b.code)):
            b.info = Info(info.valid, USAGE, info.defs, len(b.code))


def _rank(index_block: tuple[int, Block]) -> tuple[bool, bool, bool, int, int, bool, int]:
    index, block = index_block
    info = block.info
    assert info is not None
    substantive = info.level >= PROGRAM
    # Valid solutions, then broken solutions, then usage/test blocks, then sample
    # output; within a class the largest, then a closed block over a truncated
    # one, then the later (the "final" answer).
    return (
        substantive and info.valid,
        substantive,
        info.valid,
        info.level,
        info.size,
        block.closed,
        index,
    )


def from_fences(blocks: Blocks, flags: list[str], budget: Budget) -> Extraction:
    n_blocks, cands, other_languages = blocks.n_blocks, blocks.cands, blocks.other_languages
    if not cands:
        if other_languages:
            flags.append("non_python_only")
        else:
            flags.append("empty_block")
        return Extraction("", False, "none", n_blocks, tuple(flags))
    several = len(cands) > 1
    for b in cands:
        if b.info is None:
            b.info = budget.analyze(b.code)
    # Past the budget, blocks never analysed cannot win (the first always is).
    cands = [b for b in cands if b.info is not None]
    if budget.exceeded:
        flags.append("parse_budget")
    _demote_dependents(cands)
    best = max(enumerate(cands), key=_rank)[1]
    assert best.info is not None
    if several:
        flags.append("multiple_blocks")
    if best.info.level <= USAGE and other_languages:
        # Only a usage line or sample output next to, say, a JavaScript answer:
        # never score that as the Python solution.
        flags.append("non_python_only")
        return Extraction("", False, "none", n_blocks, tuple(flags))
    method = "fence:python" if best.tag == "python" else "fence:untagged"
    return Extraction(best.code, best.info.valid, method, n_blocks, tuple(flags))
