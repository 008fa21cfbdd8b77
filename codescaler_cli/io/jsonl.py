"""JSON text to rows, as producers write it: JSON Lines, one JSON array, or JSON objects one
after another over several lines (pretty-printed); a UTF-8 byte order mark is fine.

A line that cannot be a row (malformed JSON, not UTF-8, not an object, a lone surrogate
that no UTF-8 output could hold) is a :class:`BadRow` naming its file and line, so that
``--on-bad-row skip`` can set it aside.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

from ..errors import InputError

BOM = b"\xef\xbb\xbf"
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


@dataclass
class BadRow:
    location: str
    reason: str
    raw: Any  # the record, or the undecodable line as text


_BLANK = b" \t\r\n\f\v" + BOM


def layout(fh: IO[bytes]) -> tuple[str | None, bytes]:
    """How a file holds its rows, and the bytes read to tell (the caller reads on after them;
    stdin cannot seek back). Kinds: ``lines`` (JSON Lines), ``array`` (one JSON array),
    ``stream`` (objects over several lines each), None (only whitespace)."""
    head = b""
    first = b""
    for raw in fh:
        head += raw
        if raw.strip(_BLANK):
            first = raw.strip(_BLANK)
            break
    if not first:
        return None, head
    if first[:1] == b"[":
        return "array", head
    if first[:1] != b"{":
        return "lines", head
    try:
        text = first.decode("utf-8")
        json.loads(text)
    except UnicodeDecodeError:
        return "lines", head
    except json.JSONDecodeError as exc:
        # Input ended inside the object: it goes on on the next lines. Any other error is a
        # malformed line of a JSON Lines file.
        return ("stream" if exc.pos >= len(text) else "lines"), head
    return "lines", head


def jsonl_rows(
    lines: Iterable[bytes], name: str, first_line: int = 1
) -> Iterator[tuple[str, dict | BadRow]]:
    """(location, row or BadRow) for each non-blank line; line numbers from ``first_line``."""
    for lineno, raw in enumerate(lines, start=first_line):
        if raw.strip(b" \t\r\n" + BOM):
            loc = f"{name}:{lineno}"
            yield loc, parse_jsonl_line(raw, loc)


def parse_jsonl_line(raw: bytes, loc: str) -> dict[str, Any] | BadRow:
    """One JSON Lines line -> its object, or why it cannot be a row."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return BadRow(loc, f"not valid UTF-8 (byte {exc.start})", raw.decode("utf-8", "replace"))
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        return BadRow(loc, f"malformed JSON ({exc.msg} at column {exc.colno})", text.rstrip("\r\n"))
    return _as_row(obj, loc, text.rstrip("\r\n"))


def _as_row(obj: Any, loc: str, text: str | None) -> dict[str, Any] | BadRow:
    if not isinstance(obj, dict):
        return BadRow(loc, f"expected a JSON object, got {describe(obj)}", obj)
    if (text is None or _SURROGATE_ESCAPE.search(text)) and _has_lone_surrogate(obj):
        raw = text if text is not None else json.dumps(obj)  # escaped: writable as UTF-8
        return BadRow(loc, "a string holds a lone surrogate (\\ud800-\\udfff), not text", raw)
    return obj


def _has_lone_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, dict):
        return any(_has_lone_surrogate(k) or _has_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_lone_surrogate(v) for v in value)
    return False


def describe(value: Any) -> str:
    """A JSON value's kind, for messages: "null", "a number", "an array"..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    kinds = {list: "an array", tuple: "an array", dict: "an object", str: "a string"}
    return kinds.get(type(value), type(value).__name__)


def document_rows(data: bytes, name: str, kind: str) -> list[tuple[str, dict | BadRow]]:
    """Every row of a file holding one JSON array, or JSON objects one after another (such
    files are read whole: they cannot be cut by line)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{name}: not valid UTF-8 (byte {exc.start})") from None
    if kind == "array":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"{name}:{exc.lineno}: malformed JSON ({exc.msg})") from None
        if not data:
            raise InputError(f"{name}: input is empty (the JSON array has no items)")
        return [(f"{name}[{i}]", _as_row(obj, f"{name}[{i}]", None)) for i, obj in enumerate(data)]
    decoder = json.JSONDecoder()
    rows: list[tuple[str, dict | BadRow]] = []
    pos = counted = 0
    line = 1
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos == len(text):
            return rows
        line += text.count("\n", counted, pos)
        counted = pos
        loc = f"{name}:{line}"
        try:
            obj, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise InputError(f"{name}:{exc.lineno}: malformed JSON ({exc.msg})") from None
        rows.append((loc, _as_row(obj, loc, None)))
