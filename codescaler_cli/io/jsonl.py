"""JSON text to rows, as producers write it: JSON Lines, one JSON array, or JSON objects one
after another over several lines (pretty-printed); a UTF-8 byte order mark is fine.

A line that cannot be a row (malformed JSON, not UTF-8, not an object, a lone surrogate
that no UTF-8 output could hold) is a :class:`BadRow` naming its file and line, so that
``--on-bad-row skip`` can set it aside.
"""

from __future__ import annotations

import codecs
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
_PROBE = 1 << 16


def layout(fh: IO[bytes]) -> tuple[str | None, bytes]:
    """How a file holds its rows, and the bytes read to tell (the caller reads on after them;
    stdin cannot seek back). Kinds: ``lines`` (JSON Lines), ``array`` (one JSON array),
    ``stream`` (objects over several lines each), None (only whitespace). Reads no more than
    the first line, and of an array only its start (a minified array is one long line)."""
    head = b""
    while True:
        part = fh.readline(_PROBE)
        if not part:
            return None, head
        start = len(head)
        head += part
        if part.strip(_BLANK):
            break
    if head[start:].strip(_BLANK)[:1] == b"[":
        return "array", head
    while not head.endswith(b"\n"):  # the whole first row, to tell its kind
        part = fh.readline()
        if not part:
            break
        head += part
    first = head[start:].strip(_BLANK)
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


def document_rows(
    head: bytes, rest: IO[bytes], name: str, kind: str
) -> Iterator[tuple[str, dict | BadRow]]:
    """Every row of a file holding one JSON array, or JSON objects one after another, parsed
    as it is read (memory bounded by the largest row, not the file). ``head``: the bytes
    :func:`layout` read; ``rest``: the stream after them."""
    text = _Text(head, rest, name)
    if kind == "array":
        yield from _array_rows(text, name)
        return
    while text.skip_space():
        loc = f"{name}:{text.line()}"
        obj = text.value()
        yield loc, _as_row(obj, loc, None)


def _array_rows(text: _Text, name: str) -> Iterator[tuple[str, dict | BadRow]]:
    text.skip_space()
    text.expect("[", "Expecting '['")
    if text.skip_space() and text.peek() == "]":
        raise InputError(f"{name}: input is empty (the JSON array has no items)")
    i = 0
    while True:
        text.skip_space()
        obj = text.value()
        loc = f"{name}[{i}]"
        yield loc, _as_row(obj, loc, None)
        i += 1
        text.skip_space()
        if text.peek() == ",":
            text.expect(",", "")
            continue
        text.expect("]", "Expecting ',' delimiter")
        if text.skip_space():
            text.fail("Extra data")
        return


_SPACE = re.compile(r"\s*")
_READ = 1 << 16


class _Text:
    """JSON text decoded from a byte stream as parsing needs it; what was parsed is dropped."""

    def __init__(self, head: bytes, rest: IO[bytes], name: str) -> None:
        self.rest = rest
        self.name = name
        self.decoder = codecs.getincrementaldecoder("utf-8-sig")()
        self.json = json.JSONDecoder()
        self.buf = ""
        self.pos = 0
        self.base_line = 1  # the line buf[0] is on
        self.counted = (0, 1)  # (position in buf, its line): line numbers counted so far
        self.bytes = 0  # bytes decoded so far
        self.eof = False
        self._feed(head)

    def _feed(self, data: bytes, final: bool = False) -> None:
        try:
            self.buf += self.decoder.decode(data, final)
        except UnicodeDecodeError as exc:
            raise InputError(
                f"{self.name}: not valid UTF-8 (byte {self.bytes + exc.start})"
            ) from None
        self.bytes += len(data)

    def more(self, at_least: int = 0) -> bool:
        """Read at least ``at_least`` more bytes (to the end if fewer); False at the end."""
        if self.eof:
            return False
        if self.pos > len(self.buf) // 2:  # drop what was parsed (amortized: linear)
            self.base_line = self.line(self.pos)
            self.buf = self.buf[self.pos :]
            self.pos = 0
            self.counted = (0, self.base_line)
        data = self.rest.read(max(at_least, _READ))
        if not data:
            self.eof = True
            self._feed(b"", final=True)
            return False
        self._feed(data)
        return True

    def skip_space(self) -> bool:
        """Move past whitespace; False at the end of the input."""
        while True:
            self.pos = _SPACE.match(self.buf, self.pos).end()  # type: ignore[union-attr]
            if self.pos < len(self.buf):
                return True
            if not self.more():
                return False

    def peek(self) -> str:
        return self.buf[self.pos] if self.pos < len(self.buf) else ""

    def expect(self, char: str, message: str) -> None:
        if self.peek() != char:
            self.fail(message or f"Expecting {char!r}")
        self.pos += 1

    def line(self, pos: int | None = None) -> int:
        """The line number at ``pos`` (default: here), counting on from the last call."""
        pos = self.pos if pos is None else pos
        start, line = self.counted
        if pos < start:
            start, line = 0, self.base_line
        line += self.buf.count("\n", start, pos)
        self.counted = (pos, line)
        return line

    def fail(self, message: str, pos: int | None = None) -> None:
        raise InputError(f"{self.name}:{self.line(pos)}: malformed JSON ({message})")

    def value(self) -> object:
        """The JSON value here, reading on while it may be cut off by the buffer's end (but
        not past a value that is malformed within what was read)."""
        while True:
            try:
                obj, end = self.json.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as exc:
                cut = exc.pos >= len(self.buf) - 16 or exc.msg.startswith("Unterminated")
                if cut and not self.eof:  # read as much again, then parse anew
                    self.more(len(self.buf) - self.pos)
                    continue
                self.fail(exc.msg, min(exc.pos, len(self.buf)))
            if end == len(self.buf) and not self.eof:  # a number may go on
                self.more()
                continue
            self.pos = end
            return obj
