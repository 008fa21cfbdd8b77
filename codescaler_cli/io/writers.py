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

if TYPE_CHECKING:
    import pyarrow as pa


def dumps_row(row: dict[str, Any]) -> str:
    return json.dumps(row, ensure_ascii=False, default=json_default)


def write_jsonl_rows(fh: IO[str], rows: Iterable[dict[str, Any]]) -> None:
    for row in rows:
        fh.write(dumps_row(row))
        fh.write("\n")


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
    """Write a Parquet or JSONL file at ``path`` so it appears complete or not at all."""
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
                write_jsonl_rows(fh, table_rows(table))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_json(path: str | None, data: dict[str, Any]) -> None:
    """Write a small JSON report atomically (--summary-json, --metrics-json)."""
    if not path:
        return
    fd, tmp = atomic_path(path)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=True, default=str)
        fh.write("\n")
    os.replace(tmp, path)


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

    def skip(self, index: int) -> None:
        """A chunk that writes nothing here (finished by an earlier run)."""
        import pyarrow as pa

        self.add(index, pa.table({}), [])

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
                write_jsonl_rows(self.rejected_fh, rejected)
            self.next += 1

    def finish(self) -> None:
        if self.rejected_fh is not None:
            self.rejected_fh.close()
            self.rejected_fh = None
            os.replace(self.rejected_tmp, self.rejected_path)  # type: ignore[arg-type]

    def close(self) -> None:
        if self.rejected_fh is not None:
            self.rejected_fh.close()
            if self.rejected_tmp and os.path.exists(self.rejected_tmp):
                os.unlink(self.rejected_tmp)
