"""Readers that stream candidates in chunks.

Every reader yields :class:`Chunk` objects: up to ``chunk_size`` rows as plain dicts,
each with a human-readable location (``file.jsonl:17``) for error messages, plus the
rows that could not be read at all (malformed JSON, non-UTF-8 bytes, non-objects).
Peak memory is bounded by the chunk size, not by the file size.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from ..errors import InputError, describe_error
from . import formats
from .inputs import InputSpec
from .jsonl import BadRow, document_rows, jsonl_rows, layout


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
        if spec.is_json:
            it = _json_chunks(spec, chunk_size, stdin)
        elif spec.kind == "parquet":
            it = _parquet_chunks(spec.path, chunk_size)
        else:
            it = _hf_chunks(spec, chunk_size)
        for records, locations, bad, *schema in it:
            yield Chunk(index, records, locations, bad, *schema)
            index += 1


def _json_chunks(
    spec: InputSpec, chunk_size: int, stdin: IO[bytes] | None
) -> Iterator[tuple[list, list, list]]:
    """A JSON input (file, pipe or stdin), read once front to back through its codec."""
    with contextlib.ExitStack() as stack:
        if spec.kind == "stdin":
            fh = stdin if stdin is not None else sys.stdin.buffer
        else:
            try:
                fh = stack.enter_context(open(spec.path, "rb"))
            except OSError as exc:
                raise InputError(f"{spec.path}: cannot open ({exc.strerror or exc})") from None
        fh = stack.enter_context(formats.peekable(fh))
        formats.check_magic(fh, spec.name, spec.compression)
        data = stack.enter_context(formats.decompressed(fh, spec.name, spec.compression))
        yield from _jsonl_chunks(data, spec.name, chunk_size, spec.lines_only)


def _jsonl_chunks(
    fh: IO[bytes], name: str, chunk_size: int, lines_only: bool = False
) -> Iterator[tuple[list, list, list]]:
    """``lines_only`` (``.jsonl``): every line is a row, whatever the first one holds;
    else the layout is told from the first line."""
    if lines_only:
        rows = first_row_hinted(jsonl_rows(fh, name))
    else:
        kind, head = layout(fh)
        if kind is None:
            raise InputError(f"{name}: input is empty (no JSON lines)")
        if kind == "lines":
            rows = jsonl_rows(itertools.chain(head.splitlines(keepends=True), fh), name)
        else:
            rows = document_rows(head, fh, name, kind)
    records: list[dict] = []
    locations: list[str] = []
    bad: list[BadRow] = []
    n = total = 0
    for loc, row in rows:
        if isinstance(row, BadRow):
            bad.append(row)
        else:
            records.append(row)
            locations.append(loc)
        n += 1
        total += 1
        if n >= chunk_size:
            yield records, locations, bad
            records, locations, bad, n = [], [], [], 0
    if n:
        yield records, locations, bad
    if not total:
        raise InputError(f"{name}: input is empty (no JSON lines)")


def first_row_hinted(
    rows: Iterator[tuple[str, dict | BadRow]],
) -> Iterator[tuple[str, dict | BadRow]]:
    """A JSON Lines file whose first line is not a row may be a JSON document misnamed:
    its first bad row says so (the rows are read as lines all the same)."""
    first = next(rows, None)
    if first is None:
        return
    loc, row = first
    if isinstance(row, BadRow) and (
        isinstance(row.raw, list) or str(row.raw).strip(" \t\ufeff") in ("{", "[")
    ):
        hint = "; a .jsonl file holds one JSON object per line (a JSON document goes in .json)"
        row = BadRow(row.location, row.reason + hint, row.raw)
    yield loc, row
    yield from rows


def open_parquet(path: str) -> Any:
    """A Parquet file to read rows from: readable, and no column name twice (a row holds
    one value per name, so a second column of a name would be lost)."""
    import pyarrow.parquet as pq

    with parquet_errors(path):
        pf = pq.ParquetFile(path)
    names = pf.schema_arrow.names
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        shown = ", ".join(repr(n) for n in twice)
        raise InputError(
            f"{path}: column name {shown} appears more than once; rename the duplicates "
            "(every column is kept, and a row can hold one value per name)"
        )
    return pf


def _parquet_chunks(path: str, chunk_size: int) -> Iterator[tuple[list, list, list]]:
    pf = open_parquet(path)
    if pf.metadata.num_rows == 0:
        raise InputError(f"{path}: input is empty (0 rows)")
    row = 0
    batches = pf.iter_batches(batch_size=chunk_size)
    while True:
        with parquet_errors(path, f" near row {row}"):
            batch = next(batches, None)
            if batch is None:
                return
            records = batch.to_pylist()
        locations = [f"{path} row {row + i}" for i in range(len(records))]
        row += len(records)
        yield records, locations, [], batch.schema


@contextlib.contextmanager
def parquet_errors(path: str, where: str = "") -> Iterator[None]:
    """pyarrow's errors on a damaged file (several types) as one line naming the file."""
    try:
        yield
    except InputError:
        raise
    except Exception as exc:
        raise InputError(
            f"{path}: not a readable Parquet file{where} ({describe_error(exc)})"
        ) from None


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
            f"dataset {name}: cannot load split {spec.split!r}: {describe_error(exc)}{hint}"
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
        elif spec.kind == "jsonl" and spec.compression is None:
            with open(spec.path, "rb") as fh:
                if not spec.lines_only and layout(fh)[0] != "lines":
                    return None
                fh.seek(0)
                total += sum(1 for line in fh if line.strip())
        else:
            return None
    return total
