"""Writers: output formats, atomic files, JSON Lines rows, and ``-o -`` in input order."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Iterable
from typing import IO, TYPE_CHECKING, Any

from ..config import output_format
from ..tables import decoded_rows, json_columns, json_default
from . import records

if TYPE_CHECKING:
    import pyarrow as pa


def dumps_row(row: dict[str, Any]) -> str:
    return json.dumps(row, ensure_ascii=False, default=json_default)


def write_jsonl_rows(fh: IO[str], rows: Iterable[dict[str, Any]]) -> None:
    for row in rows:
        fh.write(dumps_row(row))
        fh.write("\n")


def is_json_document(path: str) -> bool:
    """A ``.json`` output is one JSON document (an array of row objects); ``.jsonl`` and
    ``.ndjson`` are JSON Lines."""
    return path != "-" and path.lower().endswith(".json")


class RowsWriter:
    """Rows to a text file as ``path`` names it: JSON Lines, or for ``.json`` one JSON array
    (a row a line, so it stays greppable). Streams: nothing is held but the current row."""

    def __init__(self, fh: IO[str], path: str) -> None:
        self.fh = fh
        self.document = is_json_document(path)
        self.rows = 0

    def write(self, rows: Iterable[dict[str, Any]]) -> None:
        if not self.document:
            write_jsonl_rows(self.fh, rows)
            return
        for row in rows:
            self.fh.write("[\n" if not self.rows else ",\n")
            self.fh.write(dumps_row(row))
            self.rows += 1

    def close(self) -> None:
        """End the document (the file itself is the caller's to close)."""
        if self.document:
            self.fh.write("\n]\n" if self.rows else "[]\n")


def table_rows(table: pa.Table) -> Any:
    """A table's rows as JSON values: JSON-text columns give back what they hold."""
    return decoded_rows(table.to_pylist(), json_columns(table.schema))


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give a new file


def atomic_path(path: str) -> tuple[int, str]:
    """A temp file in the destination's directory, so the final rename is atomic. It gets
    the mode any new file gets under the umask (mkstemp's is 0600)."""
    directory = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=".tmp", dir=directory)
    os.fchmod(fd, _FILE_MODE)
    return fd, tmp


def remove_stale_temporaries(path: str) -> None:
    """Temporaries :func:`atomic_path` made for ``path`` in a run that was killed (call it
    only while holding the output's lock)."""
    directory = os.path.dirname(os.path.abspath(path))
    prefix = f".{os.path.basename(path)}."
    if not os.path.isdir(directory):
        return
    for name in os.listdir(directory):
        if name.startswith(prefix) and name.endswith(".tmp"):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(directory, name))


def write_table_atomic(table: Any, path: str, metadata: dict[str, str] | None = None) -> None:
    """Write a Parquet, JSON Lines or ``.json`` file at ``path`` so it appears complete or
    not at all, and record it as codescaler's (io/records.py)."""
    import pyarrow.parquet as pq

    fd, tmp = atomic_path(path)
    try:
        if output_format(path) == "parquet":
            os.close(fd)
            if metadata:
                table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
            pq.write_table(table, tmp)
        else:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                writer = RowsWriter(fh, path)
                writer.write(table_rows(table))
                writer.close()
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    records.note_written([path])


def write_json(path: str | None, data: dict[str, Any]) -> None:
    """Write a small JSON report atomically (--summary-json, --metrics-json)."""
    if not path:
        return
    fd, tmp = atomic_path(path)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=True, default=str)
        fh.write("\n")
    os.replace(tmp, path)
    records.note_written([path], role="report")


class StdoutWriter:
    """``-o -``: JSON Lines in input order, each chunk written as soon as every earlier one
    is (the Ray engine's chunks finish out of order); rejected rows go to a file, atomically."""

    def __init__(self, stdout: IO[str] | None, rejected_path: str) -> None:
        self.out = stdout if stdout is not None else sys.stdout
        self.rejected_path = rejected_path
        self.pending: dict[int, tuple[pa.Table, list[dict[str, Any]]]] = {}
        self.next = 0
        self.rejected_fh: IO[str] | None = None
        self.rejected_tmp: str | None = None
        self.rejected_rows: RowsWriter | None = None

    def add(self, index: int, table: pa.Table, rejected: list[dict[str, Any]]) -> None:
        self.pending[index] = (table, rejected)
        while self.next in self.pending:
            table, rejected = self.pending.pop(self.next)
            for row in table_rows(table):
                self.out.write(dumps_row(row) + "\n")
            self.out.flush()
            if rejected:
                if self.rejected_fh is None:
                    fd, self.rejected_tmp = atomic_path(self.rejected_path)
                    self.rejected_fh = os.fdopen(fd, "w", encoding="utf-8")
                    self.rejected_rows = RowsWriter(self.rejected_fh, self.rejected_path)
                self.rejected_rows.write(rejected)  # type: ignore[union-attr]
            self.next += 1

    def finish(self) -> None:
        if self.rejected_fh is None:  # none this time: an earlier run's file is stale
            records.remove_own(self.rejected_path)
            return
        self.rejected_rows.close()  # type: ignore[union-attr]
        self.rejected_fh.close()
        self.rejected_fh = None
        os.replace(self.rejected_tmp, self.rejected_path)  # type: ignore[arg-type]
        records.note_written([self.rejected_path], role="rejected")

    def close(self) -> None:
        if self.rejected_fh is not None:
            self.rejected_fh.close()
            if self.rejected_tmp and os.path.exists(self.rejected_tmp):
                os.unlink(self.rejected_tmp)
