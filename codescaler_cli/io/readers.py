"""Readers that stream candidates in chunks.

Every reader yields :class:`Chunk` objects: up to ``chunk_size`` rows as plain dicts,
each with a human-readable location (``file.jsonl:17``) for error messages, plus the
rows that could not be read at all (malformed JSON, non-UTF-8 bytes, non-objects).
Peak memory is bounded by the chunk size, not by the file size.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from ..errors import InputError
from .inputs import InputSpec


@dataclass
class BadRow:
    location: str
    reason: str
    raw: Any  # the record, or the undecodable line as text


@dataclass
class Chunk:
    index: int
    records: list[dict[str, Any]]
    locations: list[str]
    bad: list[BadRow] = field(default_factory=list)
    schema: Any = None  # the rows' Arrow schema, for inputs read from Arrow (Parquet, datasets)

    @property
    def n_read(self) -> int:
        return len(self.records) + len(self.bad)


# ---------------------------------------------------------------- reading


def iter_chunks(
    specs: list[InputSpec], chunk_size: int, stdin: IO[bytes] | None = None
) -> Iterator[Chunk]:
    """Yield chunks across all inputs; chunk boundaries depend only on the data and size."""
    index = 0
    for spec in specs:
        if spec.kind == "jsonl":
            it = _jsonl_file_chunks(spec.path, chunk_size)
        elif spec.kind == "stdin":
            it = _jsonl_chunks(
                stdin if stdin is not None else sys.stdin.buffer, "<stdin>", chunk_size
            )
        elif spec.kind == "parquet":
            it = _parquet_chunks(spec.path, chunk_size)
        else:
            it = _hf_chunks(spec, chunk_size)
        for records, locations, bad, *schema in it:
            yield Chunk(index, records, locations, bad, *schema)
            index += 1


def _jsonl_file_chunks(path: str, chunk_size: int) -> Iterator[tuple[list, list, list]]:
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed below, generator scope
    except OSError as exc:
        raise InputError(f"{path}: cannot open ({exc.strerror or exc})") from None
    with fh:
        yield from _jsonl_chunks(fh, path, chunk_size)


def jsonl_rows(
    lines: Iterable[bytes], name: str, first_line: int = 1
) -> Iterator[tuple[str, dict | BadRow]]:
    """(location, row or BadRow) for each non-blank line; line numbers from ``first_line``."""
    for lineno, raw in enumerate(lines, start=first_line):
        if raw.strip():
            loc = f"{name}:{lineno}"
            yield loc, parse_jsonl_line(raw, loc)


def _jsonl_chunks(fh: IO[bytes], name: str, chunk_size: int) -> Iterator[tuple[list, list, list]]:
    first = peek_first_char(fh)
    if first is None:
        raise InputError(f"{name}: input is empty (no JSON lines)")
    if first == b"[":
        yield from _json_array_chunks(fh, name, chunk_size)
        return
    records: list[dict] = []
    locations: list[str] = []
    bad: list[BadRow] = []
    n = 0
    for loc, row in jsonl_rows(fh, name):
        if isinstance(row, BadRow):
            bad.append(row)
        else:
            records.append(row)
            locations.append(loc)
        n += 1
        if n >= chunk_size:
            yield records, locations, bad
            records, locations, bad, n = [], [], [], 0
    if n:
        yield records, locations, bad


def parse_jsonl_line(raw: bytes, loc: str) -> dict[str, Any] | BadRow:
    """One JSON Lines line -> its object, or why it cannot be a row (shared by both engines)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return BadRow(loc, f"not valid UTF-8 (byte {exc.start})", raw.decode("utf-8", "replace"))
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        return BadRow(loc, f"malformed JSON ({exc.msg} at column {exc.colno})", text.rstrip("\r\n"))
    if not isinstance(obj, dict):
        kind = type(obj).__name__ if obj is not None else "null"
        return BadRow(loc, f"expected a JSON object, got {_json_type(kind)}", obj)
    return obj


def _json_type(pytype: str) -> str:
    return {
        "list": "an array",
        "str": "a string",
        "int": "a number",
        "float": "a number",
        "bool": "a boolean",
        "null": "null",
    }.get(pytype, pytype)


def peek_first_char(fh: IO[bytes]) -> bytes | None:
    """Return the first non-whitespace byte without consuming the stream's lines."""
    peek = getattr(fh, "peek", None)
    if peek is not None:
        while True:
            buf = peek(4096)
            if not buf:
                return None
            stripped = buf.lstrip()
            if stripped:
                return stripped[:1]
            fh.read(len(buf))  # whole buffer was whitespace: drop it and look further
    pos = fh.tell()
    chunk = fh.read(4096)
    fh.seek(pos)
    stripped = chunk.lstrip()
    return stripped[:1] if stripped else None


def _json_array_chunks(
    fh: IO[bytes], name: str, chunk_size: int
) -> Iterator[tuple[list, list, list]]:
    # A .json file holding one array: must be loaded whole, then chunked.
    try:
        data = json.loads(fh.read().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise InputError(f"{name}: not valid UTF-8 (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{name}:{exc.lineno}: malformed JSON ({exc.msg})") from None
    if not data:
        raise InputError(f"{name}: input is empty (the JSON array has no items)")
    for start in range(0, len(data), chunk_size):
        records, locations, bad = [], [], []
        for i, obj in enumerate(data[start : start + chunk_size], start=start):
            loc = f"{name}[{i}]"
            if isinstance(obj, dict):
                records.append(obj)
                locations.append(loc)
            else:
                bad.append(BadRow(loc, "expected a JSON object", obj))
        yield records, locations, bad


def _parquet_chunks(path: str, chunk_size: int) -> Iterator[tuple[list, list, list]]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise InputError(f"{path}: not a readable Parquet file ({_first_line(exc)})") from None
    if pf.metadata.num_rows == 0:
        raise InputError(f"{path}: input is empty (0 rows)")
    row = 0
    for batch in pf.iter_batches(batch_size=chunk_size):
        records = batch.to_pylist()
        locations = [f"{path} row {row + i}" for i in range(len(records))]
        row += len(records)
        yield records, locations, [], batch.schema


def _hf_chunks(spec: InputSpec, chunk_size: int) -> Iterator[tuple[list, list, list]]:
    try:
        import datasets
    except ImportError:  # pragma: no cover - a declared dependency
        raise InputError("reading Hugging Face datasets needs the 'datasets' package") from None
    name = spec.path
    try:
        if spec.kind == "hf-disk":
            ds = datasets.load_from_disk(name)
            if isinstance(ds, datasets.DatasetDict):
                if spec.split not in ds:
                    raise InputError(f"{name}: no split {spec.split!r} (have: {', '.join(ds)})")
                ds = ds[spec.split]
        else:
            ds = datasets.load_dataset(name, spec.config, split=spec.split)
    except InputError:
        raise
    except Exception as exc:
        hint = ""
        if os.environ.get("HF_HUB_OFFLINE") == "1":
            hint = " (HF_HUB_OFFLINE=1: only datasets already in the local cache can be read)"
        raise InputError(
            f"dataset {name}: cannot load split {spec.split!r}: {_first_line(exc)}{hint}"
        ) from None
    if len(ds) == 0:
        raise InputError(f"dataset {name}: split {spec.split!r} is empty")
    row = 0
    for batch in ds.with_format("arrow").iter(batch_size=chunk_size):
        records = batch.to_pylist()
        locations = [f"{name}[{spec.split}] row {row + i}" for i in range(len(records))]
        row += len(records)
        yield records, locations, [], batch.schema


def count_rows(specs: list[InputSpec]) -> int | None:
    """Total rows when cheap to know (Parquet metadata, line counts); None for streams."""
    import pyarrow.parquet as pq

    total = 0
    for spec in specs:
        if spec.kind == "parquet":
            try:
                total += pq.ParquetFile(spec.path).metadata.num_rows
            except Exception:
                return None
        elif spec.kind == "jsonl":
            with open(spec.path, "rb") as fh:
                first = peek_first_char(fh)
                if first == b"[":
                    return None
                fh.seek(0)
                n = 0
                for line in fh:
                    if line.strip():
                        n += 1
                total += n
        else:
            return None
    return total


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
