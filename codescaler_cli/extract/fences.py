"""Markdown fenced blocks, found the CommonMark way from the fence lines alone."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from itertools import accumulate
from operator import itemgetter, methodcaller, not_

from .analysis import Budget, Info
from .text import FENCE_LINE, tidy

_TAG = re.compile(r"[\s{.]*([^\s{}.,:;=()\[\]'\"`]*)")
_PYTHON_TAG = re.compile(r"(?:i?python|py)(?:[-_]?[23](?:\.\d+)*)?")
CANDIDATE_TAGS = ("python", "")


def normalise_tag(info: str) -> str:
    """``Python``/``py3``/``{.python}``/``python:main.py`` -> ``python``; "" if untagged."""
    m = _TAG.match(info)
    tag = m.group(1).lower() if m else ""
    return "python" if _PYTHON_TAG.fullmatch(tag) else tag


@dataclass(slots=True)
class Block:
    tag: str
    code: str
    closed: bool
    info: Info | None = None


@dataclass(slots=True)
class Blocks:
    """The fenced blocks of a response: the Python/untagged ones with code, in order,
    and what the others add up to (they are counted, never chosen)."""

    cands: list[Block] = field(default_factory=list)
    n_blocks: int = 0
    other_languages: bool = False


def _block_content(text: str, start: int, end: int, indent: str, seen: dict) -> str:
    """The code between two fence lines (``seen``: the same text tidied before)."""
    if start >= end:
        return ""
    content = text[start:end]
    code = seen.get((content, indent))
    if code is None:
        code = content
        if indent:
            # CommonMark: remove up to the opening fence's indentation from each line.
            code = re.sub(rf"(?m)^[ \t]{{1,{len(indent)}}}", "", code)
        code = seen[content, indent] = tidy(code)
    return code


# Up to this many ``` and ~~~ in a response, fence lines are found with str.find (memchr
# speed) and read one by one; past it, by one regex split, which costs ~10 ns per
# character but does the work per fence in C (a response can hold hundreds of thousands).
_FEW_MARKERS = 64


def _found_fence_lines(text: str) -> list[tuple[int, int, str, str, str]]:
    """(line start, line end, indent, marker, info) of every line opening with ``` or ~~~."""
    found = []
    for marker in ("```", "~~~"):
        k = text.find(marker)
        while k >= 0:
            line_start = text.rfind("\n", 0, k) + 1
            line_end = text.find("\n", k)
            if line_end < 0:
                line_end = len(text)
            if not text[line_start:k].strip(" \t"):
                m = FENCE_LINE.match(text, line_start, line_end)
                if m is not None:
                    found.append((line_start, line_end, *m.groups()))
            k = text.find(marker, line_end)
    found.sort()
    return found


class _Fences:
    """Every fence line of a text as parallel lists."""

    def __init__(self, text: str) -> None:
        markers: list[str]
        if text.count("```") + text.count("~~~") <= _FEW_MARKERS:
            lines = _found_fence_lines(text)
            self.n = len(lines)
            self.start, self.end, self.indent, markers, self.info = (
                [line[k] for line in lines] for k in range(5)
            )
        else:
            parts = FENCE_LINE.split(text)  # text, (indent, marker, info, text) per fence
            offsets = list(accumulate(map(len, parts), initial=0))
            self.n = (len(parts) - 1) // 4
            self.start = offsets[1::4][: self.n]  # the line's first character
            self.end = offsets[4::4]  # its "\n" (or the end of the text)
            self.indent = parts[1::4]
            markers = parts[2::4]
            self.info = parts[3::4]
        self.char = list(map(itemgetter(0), markers))
        self.length = list(map(len, markers))
        self.bare = list(map(not_, map(methodcaller("strip"), self.info)))
        self.width = list(map(len, map(methodcaller("expandtabs", 4), self.indent)))

    def closer(self, opener: int, j: int, stop: int) -> int:
        """The first fence line among ``j..stop-1`` that closes ``opener``, else -1: the
        same character, at least as long, no info string, indented at most 3 more."""
        char, length, width = self.char[opener], self.length[opener], self.width[opener] + 3
        chars, lengths, bare, widths = self.char, self.length, self.bare, self.width
        for k in range(j, stop):
            if chars[k] == char and lengths[k] >= length and bare[k] and widths[k] <= width:
                return k
        return -1


def scan_fences(text: str, flags: list[str], budget: Budget) -> Blocks:
    """Find fenced blocks the CommonMark way, looking only at fence lines.

    Closing fences use the opening character, are at least as long, carry no
    info string and are indented at most 3 columns deeper than the opener (so a
    fence inside an indented docstring does not close the block). Openers may
    be indented any amount (list items). An unclosed last fence runs to the end.

    Each fence line is read once on the way to its block's closer (blocks are
    consumed left to right); only the re-reads to a later closer, for a fence
    inside a string literal, look further ahead, within ``budget``.
    """
    fences = _Fences(text)
    n, size = fences.n, len(text)
    budget.retry_fences += 2 * n
    found = Blocks()
    seen = budget.contents
    tags: dict[str, str] = {}
    # Locals: this loop runs once per block, and a response can hold 100,000 blocks.
    infos, chars, lengths, bare, widths = (
        fences.info,
        fences.char,
        fences.length,
        fences.bare,
        fences.width,
    )
    i = 0
    while i < n:
        info, char = infos[i], chars[i]
        if char == "`" and "`" in info:
            i += 1  # CommonMark: an inline code span, not a fence
            continue
        tag = tags.get(info)
        if tag is None:
            tag = tags[info] = normalise_tag(info)  # the same few info strings, many blocks
        start = min(fences.end[i] + 1, size)
        close = i + 1  # most often the very next fence line closes the block
        if not (
            close < n
            and chars[close] == char
            and lengths[close] >= lengths[i]
            and bare[close]
            and widths[close] <= widths[i] + 3
        ):
            close = fences.closer(i, close, n)
        candidate = tag in CANDIDATE_TAGS
        if close < 0:
            code = _block_content(text, start, size, fences.indent[i], seen)
            if not code:
                flags.append("stray_fence")  # e.g. a dangling ``` after the answer
                break
            found.n_blocks += 1
            found.other_languages |= not candidate
            if candidate:
                found.cands.append(Block(tag, code, closed=False))
            flags.append("unclosed_fence")  # the response was probably cut off
            break
        found.n_blocks += 1
        if not candidate:
            found.other_languages = True
        elif code := _block_content(text, start, fences.start[close], fences.indent[i], seen):
            block = Block(tag, code, closed=True, info=budget.analyze(code))
            if block.info is not None and not block.info.valid:
                close = _retry(text, fences, i, close, block, budget, flags)
            found.cands.append(block)
        i = close + 1
    return found


def _retry(
    text: str,
    fences: _Fences,
    opener: int,
    close: int,
    block: Block,
    budget: Budget,
    flags: list[str],
) -> int:
    """A fence line inside a string literal closes the block early in Markdown: accept
    one of the next two closers if that makes the code parse. Returns the closer used.

    Once the budget is spent, no block is re-read any more (a re-read to a far closer
    slices and tidies that much text even before it is parsed)."""
    if budget.exceeded:
        return close
    start = min(fences.end[opener] + 1, len(text))
    later = close
    for _ in range(2):
        stop = min(fences.n, later + 1 + max(budget.retry_fences, 0))
        found = fences.closer(opener, later + 1, stop)
        if found < 0:
            budget.exceeded |= stop < fences.n  # the look-ahead was cut short
            return close
        budget.retry_fences -= found - later
        later = found
        code = _block_content(
            text, start, fences.start[later], fences.indent[opener], budget.contents
        )
        info = budget.analyze(code, retry=True)
        if info is None:
            return close
        if info.valid:
            block.code, block.info = code, info
            flags.append("fence_in_string")
            return later
    return close
