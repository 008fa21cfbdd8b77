"""The authors' extractors, rule for rule: ``paper`` (training) and ``last`` (evaluation)."""

from __future__ import annotations

import ast
import re
import warnings

from .fences import normalise_tag
from .parser import is_valid_python
from .result import Extraction

# The authors' pattern, verbatim semantics: three backticks, optional word tag,
# newline, lazy match to the next three backticks (tag captured for `method`).
# Linear: a match attempt starts only at "```"; one that fails at the tag or newline
# stops there, and the lazy body always ends at the next "```" (only an opener after
# the last "```" scans to the end, once).
_PAPER_FENCE = re.compile(r"```(\w+)?\n(.*?)```", re.DOTALL)


def _ast_ok(code: str) -> bool:
    """The authors' check: ``ast.parse`` succeeds (they catch every exception)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. invalid escapes must not turn into errors
            ast.parse(code)
    except Exception:  # SyntaxError, ValueError, RecursionError, MemoryError, ...
        return False
    return True


def _fence_method(tag: str) -> str:
    return "fence:" + (normalise_tag(tag) or "untagged")


def paper(text: str, flags: list[str]) -> Extraction:
    found = _PAPER_FENCE.findall(text)
    if len(found) != 1:
        flags.append("no_block" if not found else "multiple_blocks")
        return Extraction("", False, "none", len(found), tuple(flags))
    tag, body = found[0]
    code = body.strip()
    if not _ast_ok(code):
        flags.append("syntax_error")
        return Extraction("", False, "none", 1, tuple(flags))
    if not code:
        flags.append("empty_block")  # the authors treat "" as no code (reward 0)
        return Extraction("", False, "none", 1, tuple(flags))
    return Extraction(code, True, _fence_method(tag), 1, tuple(flags))


def last(text: str, flags: list[str]) -> Extraction:
    found = _PAPER_FENCE.findall(text)
    if not found:
        flags.append("no_block")
        return Extraction("", False, "none", 0, tuple(flags))
    tag, body = found[-1]
    code = body.strip()
    if not code:
        flags.append("empty_block")
        return Extraction("", False, "none", len(found), tuple(flags))
    return Extraction(code, is_valid_python(code), _fence_method(tag), len(found), tuple(flags))
