"""Text handling before any parsing: line endings, reasoning blocks, fence lines, tidying.

Everything here is one pass (or a constant number of passes) over the text: no
search restarts from each fence or each tag, and no slicing inside a loop.
"""

from __future__ import annotations

import re
import textwrap

_LEADING_BLANK_LINES = re.compile(r"\A(?:[ \t]*\n)+")


def tidy(content: str) -> str:
    """Drop leading blank lines and trailing whitespace; dedent uniformly indented code.

    Unlike ``str.strip`` this keeps the first line's indentation relative to the
    rest, so an indented snippet stays parseable after dedenting.
    """
    if not content or content.isspace():
        return ""
    if content[0] in " \t\n":
        content = _LEADING_BLANK_LINES.sub("", content)
    content = content.rstrip()
    if content[:1] in (" ", "\t"):
        content = textwrap.dedent(content)
    return content


def normalise_newlines(text: str, flags: list[str]) -> str:
    if "\r" in text:
        flags.append("crlf")
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


# A line whose first non-blank characters are ``` or ~~~: (indent, marker, info). In
# MULTILINE mode "^" fails at once away from line starts: one pass costs ~10 ns per
# character, and each fence line is read once.
FENCE_LINE = re.compile(r"^([ \t]*)(`{3,}|~{3,})([^\n]*)", re.MULTILINE)


def _count_fence_lines(text: str, end: int) -> int:
    """Fence lines whose marker's first three characters lie before ``end``."""
    return len(FENCE_LINE.findall(text, 0, end))


_THINK_OPEN = re.compile(r"\s*<(think|thinking)>")
# A bare "</think>" (the opening tag lives in the chat template) ends reasoning,
# unless it sits in a string literal such as split("</think>").
_THINK_ORPHAN_CLOSE = re.compile(r"(?<![\"'`{\\])</(?:think|thinking)>")


def strip_reasoning(text: str, flags: list[str]) -> str:
    """Remove leading ``<think>`` blocks (an unclosed one swallows everything)."""
    if "think" not in text:
        return text
    pos = 0  # where the answer starts; the text is sliced once, at the end
    m = _THINK_OPEN.match(text)
    if m:
        flags.append("think_removed")
    while m:
        close = f"</{m.group(1)}>"
        end = text.find(close, m.end())
        if end < 0:
            flags.append("unclosed_think")
            return ""
        pos = end + len(close)
        m = _THINK_OPEN.match(text, pos)
    if pos:
        return text[pos:]
    m = _THINK_ORPHAN_CLOSE.search(text)
    # An odd number of fence lines before it means it is inside a code block.
    if m and _count_fence_lines(text, m.start()) % 2 == 0:
        flags.append("think_removed")
        text = text[m.end() :]
    return text
