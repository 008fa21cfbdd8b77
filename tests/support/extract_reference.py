"""The extractor as it was before extraction was made linear, kept verbatim as the
specification: tests/test_extract.py checks that the package returns exactly what this
returns on random fence soups (inputs small enough for its quadratic steps).

Do not edit it to follow a change of behaviour; a deliberate change of the rules
updates the fixtures in extract_cases.py and this file together.
"""

from __future__ import annotations

import ast
import itertools
import re
import textwrap
import threading
import warnings
from dataclasses import dataclass
from typing import Any

__all__ = ["EXTRACT_MODES", "Extraction", "extract_code", "is_valid_python"]

EXTRACT_MODES: tuple[str, ...] = ("auto", "paper", "last", "none")


@dataclass(frozen=True, slots=True)
class Extraction:
    """Result of :func:`extract_code`.

    ``code`` is ``""`` when no code was found; ``method`` is one of
    ``fence:python``, ``fence:untagged``, ``fence:<tag>`` (``paper``/``last``
    only), ``unfenced``, ``span``, ``verbatim`` or ``none``. ``n_blocks`` counts
    fenced blocks of every language (after reasoning was removed in ``auto``;
    regex matches in ``paper``/``last``; 0 in ``none``). ``flags`` are short
    machine-readable notes such as ``think_removed`` or ``unclosed_fence``.
    """

    code: str
    valid: bool
    method: str
    n_blocks: int
    flags: tuple[str, ...] = ()


# --------------------------------------------------------------------------- parser

_parser: Any = None
# Guards lazy creation and parse(): one tree-sitter parser must not run two parses at
# once if callers use threads, and an uncontended lock costs far less than a parse.
_parser_lock = threading.Lock()


def _parse(data: bytes) -> Any:
    """Parse UTF-8 bytes with the single module-level tree-sitter parser."""
    global _parser
    with _parser_lock:
        if _parser is None:
            # Imported here so importing this module stays cheap.
            import tree_sitter
            import tree_sitter_python

            _parser = tree_sitter.Parser(tree_sitter.Language(tree_sitter_python.language()))
        return _parser.parse(data)


def _encode(code: str) -> tuple[bytes, bool]:
    """UTF-8 bytes for tree-sitter, and whether Python could compile this text.

    Python's compiler rejects lone surrogates (they cannot be UTF-8 encoded) and
    NUL bytes, so both make code invalid whatever tree-sitter says.
    """
    try:
        return code.encode("utf-8"), "\0" not in code
    except UnicodeEncodeError:
        return code.encode("utf-8", "surrogatepass"), False


def is_valid_python(code: str) -> bool:
    """True if ``code`` is non-empty and parses with no ERROR / MISSING node."""
    if not code.strip():
        return False
    data, ok = _encode(code)
    return ok and not _parse(data).root_node.has_error


# ------------------------------------------------------------------ code analysis

# Statement levels, used to tell a solution from a usage example or sample output.
_INERT, _USAGE, _PROGRAM, _DEFINES = 0, 1, 2, 3

_DEF_TYPES = frozenset({"function_definition", "class_definition", "decorated_definition"})
_PROGRAM_TYPES = frozenset(
    {
        "import_statement",
        "import_from_statement",
        "future_import_statement",
        "if_statement",
        "for_statement",
        "while_statement",
        "try_statement",
        "with_statement",
        "match_statement",
        "global_statement",
        "nonlocal_statement",
        "delete_statement",
        "raise_statement",
        "return_statement",
        "type_alias_statement",
    }
)
# Statements that exercise code rather than define it.
_USAGE_TYPES = frozenset({"assert_statement", "print_statement", "exec_statement"})


def _expression_level(node: Any) -> int:
    level = _INERT
    for child in node.named_children:
        kind = child.type
        if kind == "assignment":
            # "Output: 3" is an annotation-only assignment: prose, not code.
            if child.child_by_field_name("right") is not None:
                return _PROGRAM
        elif kind == "augmented_assignment":
            return _PROGRAM
        elif kind in ("call", "await", "yield"):
            level = _USAGE
    return level


def _statement_level(node: Any) -> int:
    kind = node.type
    if kind in _DEF_TYPES:
        return _DEFINES
    if kind in _PROGRAM_TYPES:
        return _PROGRAM
    if kind == "expression_statement":
        return _expression_level(node)
    if kind in _USAGE_TYPES:
        return _USAGE
    return _INERT  # comments, pass, ERROR, ...


def _defined_name(node: Any) -> str | None:
    if node.type == "decorated_definition":
        node = node.child_by_field_name("definition")
        if node is None:
            return None
    name = node.child_by_field_name("name")
    return None if name is None else name.text.decode("utf-8", "replace")


@dataclass(slots=True)
class _Info:
    valid: bool
    level: int
    defs: frozenset[str]
    size: int  # bytes of defining/program statements (whole code for lower levels)


def _analyze_tree(root: Any, valid: bool, total: int) -> _Info:
    level = _INERT
    size = 0
    # Size counts each name's last definition once, so a model looping on the same
    # function does not look like a bigger program.
    defs: dict[str, int] = {}
    for node in root.children:
        if node.type == "ERROR":
            # Broken code still tells us what it was trying to be.
            lv = max((_statement_level(c) for c in node.children), default=_INERT)
        else:
            lv = _statement_level(node)
            if lv == _DEFINES:
                name = _defined_name(node)
                if name:
                    defs[name] = node.end_byte - node.start_byte
                    level = lv
                    continue
        if lv >= _PROGRAM:
            size += node.end_byte - node.start_byte
        level = max(level, lv)
    size += sum(defs.values())
    return _Info(valid, level, frozenset(defs), size if level >= _PROGRAM else total)


def _parse_analyze(code: str) -> tuple[Any, _Info]:
    """Parse non-empty ``code`` once: its syntax tree and what it holds."""
    data, ok = _encode(code)
    root = _parse(data).root_node
    return root, _analyze_tree(root, ok and not root.has_error, len(data))


def _analyze(code: str) -> _Info:
    if not code:
        return _Info(False, _INERT, frozenset(), 0)
    return _parse_analyze(code)[1]


# ----------------------------------------------------------------- text handling

_LEADING_BLANK_LINES = re.compile(r"\A(?:[ \t]*\n)+")


def _tidy(content: str) -> str:
    """Drop leading blank lines and trailing whitespace; dedent uniformly indented code.

    Unlike ``str.strip`` this keeps the first line's indentation relative to the
    rest, so an indented snippet stays parseable after dedenting.
    """
    content = _LEADING_BLANK_LINES.sub("", content).rstrip()
    if content[:1] in (" ", "\t"):
        content = textwrap.dedent(content)
    return content


def _normalise_newlines(text: str, flags: list[str]) -> str:
    if "\r" in text:
        flags.append("crlf")
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


_FENCE_LINE = re.compile(r"([ \t]*)(`{3,}|~{3,})([^\n]*)")


def _fence_lines(text: str, end: int | None = None) -> list[tuple[int, int, str, str, str]]:
    """(line start, line end, indent, marker, info) for every line opening with ``` or ~~~.

    Found with ``str.find`` (memchr speed) rather than a multiline regex, which would
    try a match at every character of long prose.
    """
    end = len(text) if end is None else end
    found = []
    for marker in ("```", "~~~"):
        k = text.find(marker, 0, end)
        while k >= 0:
            line_start = text.rfind("\n", 0, k) + 1
            line_end = text.find("\n", k)
            if line_end < 0:
                line_end = len(text)
            if not text[line_start:k].strip(" \t"):
                m = _FENCE_LINE.match(text, line_start, line_end)
                if m is not None:
                    found.append((line_start, line_end, m.group(1), m.group(2), m.group(3)))
            k = text.find(marker, line_end, end)
    found.sort()
    return found


_THINK_OPEN = re.compile(r"\s*<(think|thinking)>")
# A bare "</think>" (the opening tag lives in the chat template) ends reasoning,
# unless it sits in a string literal such as split("</think>").
_THINK_ORPHAN_CLOSE = re.compile(r"(?<![\"'`{\\])</(?:think|thinking)>")


def _strip_reasoning(text: str, flags: list[str]) -> str:
    """Remove leading ``<think>`` blocks (an unclosed one swallows everything)."""
    if "think" not in text:
        return text
    removed = False
    m = _THINK_OPEN.match(text)
    while m:
        close = f"</{m.group(1)}>"
        end = text.find(close, m.end())
        if not removed:
            flags.append("think_removed")
            removed = True
        if end < 0:
            flags.append("unclosed_think")
            return ""
        text = text[end + len(close) :]
        m = _THINK_OPEN.match(text)
    if not removed:
        m = _THINK_ORPHAN_CLOSE.search(text)
        # An odd number of fence lines before it means it is inside a code block.
        if m and len(_fence_lines(text, m.start())) % 2 == 0:
            flags.append("think_removed")
            text = text[m.end() :]
    return text


# ------------------------------------------------------------------------ fences

_TAG = re.compile(r"[\s{.]*([^\s{}.,:;=()\[\]'\"`]*)")
_PYTHON_TAG = re.compile(r"(?:i?python|py)(?:[-_]?[23](?:\.\d+)*)?")
_CANDIDATE_TAGS = ("python", "")


def _normalise_tag(info: str) -> str:
    """``Python``/``py3``/``{.python}``/``python:main.py`` -> ``python``; "" if untagged."""
    m = _TAG.match(info)
    tag = m.group(1).lower() if m else ""
    return "python" if _PYTHON_TAG.fullmatch(tag) else tag


def _indent_width(indent: str) -> int:
    return len(indent.expandtabs(4))


@dataclass(slots=True)
class _Block:
    tag: str
    code: str
    closed: bool
    info: _Info | None = None


def _block_content(text: str, start: int, end: int, indent: str) -> str:
    content = text[start:end]
    if indent:
        # CommonMark: remove up to the opening fence's indentation from each line.
        content = re.sub(rf"(?m)^[ \t]{{1,{len(indent)}}}", "", content)
    return _tidy(content)


def _scan_fences(text: str, flags: list[str]) -> list[_Block]:
    """Find fenced blocks the CommonMark way, looking only at fence lines.

    Closing fences use the opening character, are at least as long, carry no
    info string and are indented at most 3 columns deeper than the opener (so a
    fence inside an indented docstring does not close the block). Openers may
    be indented any amount (list items). An unclosed last fence runs to the end.
    """
    fences = _fence_lines(text)
    blocks: list[_Block] = []
    i, n = 0, len(fences)
    while i < n:
        _, end, indent, marker, info = fences[i]
        if marker[0] == "`" and "`" in info:
            i += 1  # CommonMark: an inline code span, not a fence
            continue
        width = _indent_width(indent)
        closers = (
            j
            for j in range(i + 1, n)
            if fences[j][3][0] == marker[0]
            and len(fences[j][3]) >= len(marker)
            and not fences[j][4].strip()
            and _indent_width(fences[j][2]) <= width + 3
        )
        tag = _normalise_tag(info)
        start = min(end + 1, len(text))
        close = next(closers, None)
        if close is None:
            code = _block_content(text, start, len(text), indent)
            if code:
                blocks.append(_Block(tag, code, closed=False))
                flags.append("unclosed_fence")  # the response was probably cut off
            else:
                flags.append("stray_fence")  # e.g. a dangling ``` after the answer
            break
        block = _Block(tag, _block_content(text, start, fences[close][0], indent), closed=True)
        if tag in _CANDIDATE_TAGS and block.code:
            block.info = _analyze(block.code)
            if not block.info.valid:
                # A fence line inside a string literal closes the block early in
                # Markdown; accept a later closer if that makes the code parse.
                for later in itertools.islice(closers, 2):
                    code = _block_content(text, start, fences[later][0], indent)
                    info = _analyze(code)
                    if info.valid:
                        block.code, block.info, close = code, info, later
                        flags.append("fence_in_string")
                        break
        blocks.append(block)
        i = close + 1
    return blocks


_CALL_NAME = r"(?<![\w.])(?:{})\s*\("


def _demote_dependents(cands: list[_Block]) -> None:
    """A block calling a function that only another block defines is a usage example."""
    all_defs = [b.info.defs for b in cands if b.info is not None]
    if len(all_defs) < 2 or not any(all_defs):
        return
    for b in cands:
        info = b.info
        if info is None or info.level <= _USAGE:
            continue
        others = set().union(*(o.info.defs for o in cands if o is not b and o.info)) - info.defs
        if others:
            names = "|".join(re.escape(name) for name in sorted(others))
            if re.search(_CALL_NAME.format(names), b.code):
                info.level = _USAGE
                info.size = len(b.code)


def _rank(index_block: tuple[int, _Block]) -> tuple[bool, bool, bool, int, int, bool, int]:
    index, block = index_block
    info = block.info
    assert info is not None
    substantive = info.level >= _PROGRAM
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


def _from_fences(blocks: list[_Block], flags: list[str]) -> Extraction:
    n_blocks = len(blocks)
    cands = [b for b in blocks if b.tag in _CANDIDATE_TAGS and b.code]
    other_languages = any(b.tag not in _CANDIDATE_TAGS for b in blocks)
    if not cands:
        if other_languages:
            flags.append("non_python_only")
        else:
            flags.append("empty_block")
        return Extraction("", False, "none", n_blocks, tuple(flags))
    for b in cands:
        if b.info is None:
            b.info = _analyze(b.code)
    _demote_dependents(cands)
    best = max(enumerate(cands), key=_rank)[1]
    assert best.info is not None
    if len(cands) > 1:
        flags.append("multiple_blocks")
    if best.info.level <= _USAGE and other_languages:
        # Only a usage line or sample output next to, say, a JavaScript answer:
        # never score that as the Python solution.
        flags.append("non_python_only")
        return Extraction("", False, "none", n_blocks, tuple(flags))
    method = "fence:python" if best.tag == "python" else "fence:untagged"
    return Extraction(best.code, best.info.valid, method, n_blocks, tuple(flags))


# ------------------------------------------------------------------ unfenced text


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
    ends. Candidates are verified with one re-parse each, best first, at most 3.
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
        levels = [_statement_level(nd) for nd in nodes]
        if max(levels) == _INERT:
            continue
        # Keep comments and docstrings at the edges, drop prose parsed as bare names.
        keep = [k for k, nd in enumerate(nodes) if levels[k] > _INERT or not _is_prose_like(nd)]
        first, last = nodes[keep[0]], nodes[keep[-1]]
        size = last.end_byte - first.start_byte
        scored.append((max(levels) >= _PROGRAM, size, first.start_point.row, last.end_point.row))
    if not scored:
        return ""
    lines = code.split("\n")
    for _, _, row0, row1 in sorted(scored, reverse=True)[:3]:
        span = _tidy("\n".join(lines[row0 : row1 + 1]))
        if is_valid_python(span):
            return span
    return ""


def _unfenced(text: str, flags: list[str]) -> Extraction:
    code = _tidy(text)
    if not code:
        return Extraction("", False, "none", 0, tuple(flags))
    root, info = _parse_analyze(code)
    if info.valid and info.level > _INERT:
        return Extraction(code, True, "unfenced", 0, tuple(flags))
    span = _largest_span(code, root)
    if span:
        return Extraction(span, True, "span", 0, tuple(flags))
    return Extraction("", False, "none", 0, tuple(flags))


def _auto(text: str, flags: list[str]) -> Extraction:
    if text.startswith("\ufeff"):
        text = text[1:]
    text = _strip_reasoning(text, flags)
    blocks = _scan_fences(text, flags) if ("```" in text or "~~~" in text) else []
    if blocks:
        return _from_fences(blocks, flags)
    return _unfenced(text, flags)


# ------------------------------------------------------------- authors' extractors

# The authors' pattern, verbatim semantics: three backticks, optional word tag,
# newline, lazy match to the next three backticks (tag captured for `method`).
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
    return "fence:" + (_normalise_tag(tag) or "untagged")


def _paper(text: str, flags: list[str]) -> Extraction:
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


def _last(text: str, flags: list[str]) -> Extraction:
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


def _verbatim(text: str, flags: list[str]) -> Extraction:
    if not text.strip():
        return Extraction("", False, "none", 0, tuple(flags))
    return Extraction(text, is_valid_python(text), "verbatim", 0, tuple(flags))


_MODES = {"auto": _auto, "paper": _paper, "last": _last, "none": _verbatim}
# Modes that read line endings as LF; paper and none take the response as it is.
_NORMALISED = ("auto", "last")


def extract_code(response: str, mode: str = "auto") -> Extraction:
    """Extract the code to score from a raw model response.

    Never raises for a ``str`` (raises ``ValueError`` for an unknown ``mode``).

    In ``auto`` mode, fenced blocks tagged with another language (javascript,
    bash, text, json, output, ...) are never returned as Python. Among
    Python-tagged and untagged blocks the winner is, in order: a valid block
    that defines functions/classes, a valid complete program, a *broken*
    solution (returned with ``valid=False`` so it can be audited and scores as
    invalid), then usage/test blocks (asserts, ``print(f(3))``, anything calling
    a function only another block defines), then sample output; ties go to the
    largest, then the later block. Blocks are never concatenated. If the best
    Python candidate is only usage or output while other-language blocks exist,
    the result is no code (``non_python_only``). Prose-only responses give
    ``code == ""`` with method ``none``.
    """
    handler = _MODES.get(mode)
    if handler is None:
        raise ValueError(
            f"unknown extract mode {mode!r}; expected one of {', '.join(EXTRACT_MODES)}"
        )
    flags: list[str] = []
    if mode in _NORMALISED:
        response = _normalise_newlines(response, flags)
    return handler(response, flags)
