"""What a piece of code holds (definitions, a program, usage, output), from one parse, and
the per-response budget that keeps ``auto`` linear in the response size."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .parser import encode, parse

# Statement levels, used to tell a solution from a usage example or sample output.
INERT, USAGE, PROGRAM, DEFINES = 0, 1, 2, 3

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
    level = INERT
    for child in node.named_children:
        kind = child.type
        if kind == "assignment":
            # "Output: 3" is an annotation-only assignment: prose, not code.
            if child.child_by_field_name("right") is not None:
                return PROGRAM
        elif kind == "augmented_assignment":
            return PROGRAM
        elif kind in ("call", "await", "yield"):
            level = USAGE
    return level


def statement_level(node: Any) -> int:
    kind = node.type
    if kind in _DEF_TYPES:
        return DEFINES
    if kind in _PROGRAM_TYPES:
        return PROGRAM
    if kind == "expression_statement":
        return _expression_level(node)
    if kind in _USAGE_TYPES:
        return USAGE
    return INERT  # comments, pass, ERROR, ...


def _defined_name(node: Any) -> str | None:
    if node.type == "decorated_definition":
        node = node.child_by_field_name("definition")
        if node is None:
            return None
    name = node.child_by_field_name("name")
    return None if name is None else name.text.decode("utf-8", "replace")


@dataclass(frozen=True, slots=True)
class Info:
    valid: bool
    level: int
    defs: frozenset[str]
    size: int  # bytes of defining/program statements (whole code for lower levels)


_EMPTY = Info(False, INERT, frozenset(), 0)


def _analyze_tree(root: Any, valid: bool, total: int) -> Info:
    level = INERT
    size = 0
    # Size counts each name's last definition once, so a model looping on the same
    # function does not look like a bigger program.
    defs: dict[str, int] = {}
    for node in root.children:
        if node.type == "ERROR":
            # Broken code still tells us what it was trying to be.
            lv = max((statement_level(c) for c in node.children), default=INERT)
        else:
            lv = statement_level(node)
            if lv == DEFINES:
                name = _defined_name(node)
                if name:
                    defs[name] = node.end_byte - node.start_byte
                    level = lv
                    continue
        if lv >= PROGRAM:
            size += node.end_byte - node.start_byte
        level = max(level, lv)
    size += sum(defs.values())
    return Info(valid, level, frozenset(defs), size if level >= PROGRAM else total)


def parse_analyze(code: str) -> tuple[Any, Info]:
    """Parse non-empty ``code`` once: its syntax tree and what it holds."""
    data, ok = encode(code)
    root = parse(data).root_node
    return root, _analyze_tree(root, ok and not root.has_error, len(data))


# ------------------------------------------------------------------ the budget

# Distinct texts ``auto`` parses in one response. Real responses hold a few dozen
# blocks; a response with thousands of different ones is degenerate, and each parse of
# even a tiny broken block costs ~10-25 µs of tree-sitter error recovery.
MAX_PARSES = 2000
# Re-reading a block to a later closing fence (a fence inside a string literal) parses
# text again: at most half the response plus this much in all, so blocks and re-reads
# together parse at most about 1.5 times the response (the blocks themselves do not
# overlap). Looking ahead for those later fences reads at most twice the response's
# fence lines plus this many.
RETRY_SLACK_CHARS = 64 * 1024
RETRY_SLACK_FENCES = 4096


class Budget:
    """The parsing one ``auto`` extraction may do: each distinct text parsed once.

    Past the budget, new blocks are not analysed (they are counted but cannot win) and
    no more fence-in-string retries are tried; ``exceeded`` records that it happened.
    Only texts not seen before are charged: a response repeating itself is cheap, and a
    repeated re-read spans a few repetitions at most (its closers repeat too).
    """

    def __init__(self, n_chars: int) -> None:
        self._memo: dict[str, Info] = {}
        # Block text -> its code: a response repeating a block tidies it once.
        self.contents: dict[tuple[str, str], str] = {}
        self._parses = MAX_PARSES
        self._retry_chars = n_chars // 2 + RETRY_SLACK_CHARS
        self.retry_fences = RETRY_SLACK_FENCES  # plus twice the fence lines, once counted
        self.exceeded = False

    def analyze(self, code: str, retry: bool = False) -> Info | None:
        """What ``code`` holds (shared between equal texts: never mutate it), or None past
        the budget."""
        if not code:
            return _EMPTY
        info = self._memo.get(code)
        if info is None:
            if self._parses <= 0 or (retry and len(code) > self._retry_chars):
                self.exceeded = True
                return None
            self._parses -= 1
            if retry:
                self._retry_chars -= len(code)
            info = self._memo[code] = parse_analyze(code)[1]
        return info
