"""The tree-sitter Python parser: one per process, built on first use."""

from __future__ import annotations

import threading
from typing import Any

_parser: Any = None
# Guards lazy creation and parse(): one tree-sitter parser must not run two parses at
# once if callers use threads, and an uncontended lock costs far less than a parse.
_parser_lock = threading.Lock()


def parse(data: bytes) -> Any:
    """Parse UTF-8 bytes with the single module-level tree-sitter parser."""
    global _parser
    with _parser_lock:
        if _parser is None:
            # Imported here so importing the package stays cheap.
            import tree_sitter
            import tree_sitter_python

            _parser = tree_sitter.Parser(tree_sitter.Language(tree_sitter_python.language()))
        return _parser.parse(data)


def encode(code: str) -> tuple[bytes, bool]:
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
    data, ok = encode(code)
    return ok and not parse(data).root_node.has_error
