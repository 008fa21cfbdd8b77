"""Code in a response without fences: the whole text, or its largest clean run."""

from __future__ import annotations

from typing import Any

from .analysis import INERT, PROGRAM, parse_analyze, statement_level
from .parser import is_valid_python
from .result import Extraction
from .text import tidy


def _is_prose_like(node: Any) -> bool:
    """An inert statement that is not a comment or a string: "Solution", "Output: 3"."""
    if node.type == "comment":
        return False
    if node.type == "expression_statement":
        children = node.named_children
        return not (len(children) == 1 and children[0].type in ("string", "concatenated_string"))
    return True


def _largest_span(code: str, root: Any) -> str:
    """Largest contiguous run of clean top-level statements, from the one parse.

    Rows touched by an ERROR node (or a statement containing one) split runs;
    comments and inert statements (a stray word of prose) are trimmed from the
    ends. Candidates are verified with one re-parse each, best first, at most 3
    (the runs share no row, so together they re-parse at most the text once).
    """
    runs: list[list[Any]] = []
    run: list[Any] = []
    last_bad_row = -1
    for node in root.children:
        if node.has_error or node.is_missing:
            first_bad = node.start_point.row
            while run and run[-1].end_point.row >= first_bad:
                run.pop()
            if run:
                runs.append(run)
            run = []
            last_bad_row = max(last_bad_row, node.end_point.row)
        elif node.start_point.row > last_bad_row:
            run.append(node)
    if run:
        runs.append(run)

    scored: list[tuple[bool, int, int, int]] = []
    for nodes in runs:
        levels = [statement_level(nd) for nd in nodes]
        if max(levels) == INERT:
            continue
        # Keep comments and docstrings at the edges, drop prose parsed as bare names.
        keep = [k for k, nd in enumerate(nodes) if levels[k] > INERT or not _is_prose_like(nd)]
        first, last = nodes[keep[0]], nodes[keep[-1]]
        size = last.end_byte - first.start_byte
        scored.append((max(levels) >= PROGRAM, size, first.start_point.row, last.end_point.row))
    if not scored:
        return ""
    lines = code.split("\n")
    for _, _, row0, row1 in sorted(scored, reverse=True)[:3]:
        span = tidy("\n".join(lines[row0 : row1 + 1]))
        if is_valid_python(span):
            return span
    return ""


def unfenced(text: str, flags: list[str]) -> Extraction:
    code = tidy(text)
    if not code:
        return Extraction("", False, "none", 0, tuple(flags))
    root, info = parse_analyze(code)
    if info.valid and info.level > INERT:
        return Extraction(code, True, "unfenced", 0, tuple(flags))
    span = _largest_span(code, root)
    if span:
        return Extraction(span, True, "span", 0, tuple(flags))
    return Extraction("", False, "none", 0, tuple(flags))
