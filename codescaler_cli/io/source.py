"""A run's input as numbered chunks, read here or (by byte and row ranges) where they are scored.

Chunk boundaries depend only on the data and ``--chunk-size``, so every engine cuts the
same chunks, numbers them the same way and resumes the same finished chunks. A JSON Lines
or Parquet file can be cut into ranges without reading its rows (the Ray engine's readers
then read each range on the cluster); stdin, pipes, compressed files, a ``.json`` array
and Hugging Face datasets are read here, chunk by chunk.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

from ..errors import InputError
from ..fields import FIELDS_PROBE_ROWS, record_columns
from . import formats
from .inputs import InputSpec
from .jsonl import BadRow, jsonl_rows, layout
from .readers import Chunk, first_row_hinted, iter_chunks, open_parquet, parquet_errors


@dataclass(frozen=True)
class Piece:
    """Where one chunk's rows lie in a file: a byte range of lines, or a range of rows."""

    kind: str  # "jsonl", "parquet", or "spool" (a chunk the driver read, pickled: ray/spool.py)
    path: str
    start: int
    stop: int
    first_line: int = 1  # JSON Lines: the line number at ``start``


@dataclass
class ChunkRef:
    """One chunk of the input: its rows, or where to read them."""

    index: int
    spec: InputSpec
    chunk: Chunk | None = None
    piece: Piece | None = None

    def read(self) -> Chunk:
        chunk = self.chunk if self.chunk is not None else read_piece(self.piece)  # type: ignore[arg-type]
        chunk.index = self.index
        return chunk

    def columns(self, limit: int = FIELDS_PROBE_ROWS) -> list[str] | None:
        """The columns of this chunk's first ``limit`` readable rows (None: it has none)."""
        piece = self.piece
        if piece is not None and piece.kind == "spool":
            chunk = read_piece(piece)
            return record_columns(chunk.records, limit) if chunk.records else None
        if self.chunk is not None:
            return record_columns(self.chunk.records, limit) if self.chunk.records else None
        assert piece is not None
        if piece.kind == "parquet":
            import pyarrow.parquet as pq

            with parquet_errors(piece.path):
                return pq.read_schema(piece.path).names
        records = []
        with open(piece.path, "rb") as fh:
            fh.seek(piece.start)
            lines = _limited_lines(fh, piece.stop - piece.start)
            for _, row in jsonl_rows(lines, piece.path, piece.first_line):
                if not isinstance(row, BadRow):
                    records.append(row)
                    if len(records) >= limit:
                        break
        return record_columns(records, limit) if records else None


def chunk_refs(
    specs: list[InputSpec],
    chunk_size: int,
    stdin: IO[bytes] | None = None,
    ranges: bool = False,
) -> Iterator[ChunkRef]:
    """Every chunk of ``specs`` in order. ``ranges``: cut JSON Lines and Parquet files into
    ranges to be read later (elsewhere) instead of reading them here."""
    index = 0
    for spec in specs:
        pieces = _plan_pieces(spec, chunk_size) if ranges else None
        if pieces is not None:
            for piece in pieces:
                yield ChunkRef(index, spec, piece=piece)
                index += 1
            continue
        for chunk in iter_chunks([spec], chunk_size, stdin=stdin):
            chunk.index = index
            yield ChunkRef(index, spec, chunk=chunk)
            index += 1


def _plan_pieces(spec: InputSpec, chunk_size: int) -> list[Piece] | None:
    """The ranges the streaming readers would cut (None: read this input here)."""
    if spec.kind == "parquet":
        try:
            rows = open_parquet(spec.path).metadata.num_rows
        except Exception:
            rows = 0
        if rows == 0:
            _reader_error(spec)
        # ParquetFile.iter_batches(batch_size) yields full batches across row groups.
        return [
            Piece("parquet", spec.path, start, min(rows, start + chunk_size))
            for start in range(0, rows, chunk_size)
        ]
    if spec.kind != "jsonl" or spec.compression is not None:
        return None  # stdin, pipes, datasets, compressed files: read here, front to back
    try:
        with open(spec.path, "rb") as fh, formats.peekable(fh) as peek:
            formats.check_magic(peek, spec.name, None)
            kind = "lines" if spec.lines_only else layout(peek)[0]
    except OSError:
        kind = None
    if kind != "lines":
        if kind is None:
            _reader_error(spec)
        return None  # one JSON array, or objects over several lines: read here
    pieces = _jsonl_pieces(spec.path, chunk_size)
    if not pieces:
        _reader_error(spec)
    return pieces


def _jsonl_pieces(path: str, chunk_size: int) -> list[Piece]:
    """Byte ranges of ``chunk_size`` non-blank lines each, with the line number each starts
    at (blank lines count in locations, not in chunks)."""
    pieces: list[Piece] = []
    start, first_line, pos, n = 0, 1, 0, 0
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            pos += len(raw)
            if not raw.strip():
                continue
            n += 1
            if n >= chunk_size:
                pieces.append(Piece("jsonl", path, start, pos, first_line))
                start, first_line, n = pos, lineno + 1, 0
    if n:
        pieces.append(Piece("jsonl", path, start, pos, first_line))
    return pieces


def _reader_error(spec: InputSpec) -> None:
    """Raise the error the streaming reader gives for this input."""
    next(iter_chunks([spec], 1), None)
    raise InputError(f"{spec.path}: input is empty")  # pragma: no cover - raised above


def _limited_lines(fh: IO[bytes], size: int) -> Iterator[bytes]:
    """The lines of the next ``size`` bytes (a piece ends at a line end)."""
    for line in fh:
        if size <= 0:
            return
        size -= len(line)
        yield line


def read_piece(piece: Piece) -> Chunk:
    """The rows of one range, with the streaming readers' locations and messages."""
    if piece.kind == "spool":
        with open(piece.path, "rb") as fh:
            fh.seek(piece.start)
            return pickle.loads(fh.read(piece.stop - piece.start))  # written by this run
    if piece.kind == "jsonl":
        try:
            with open(piece.path, "rb") as fh:
                fh.seek(piece.start)
                data = fh.read(piece.stop - piece.start)
        except OSError as exc:
            raise InputError(f"{piece.path}: cannot open ({exc.strerror or exc})") from None
        chunk = Chunk(0, [], [])
        rows = jsonl_rows(io.BytesIO(data), piece.path, piece.first_line)
        if piece.start == 0 and formats.lines_only(piece.path):
            rows = first_row_hinted(rows)  # as the streaming reader says it
        for loc, row in rows:
            if isinstance(row, BadRow):
                chunk.bad.append(row)
            else:
                chunk.records.append(row)
                chunk.locations.append(loc)
        return chunk
    import pyarrow.parquet as pq

    with parquet_errors(piece.path, f" near row {piece.start}"):
        pf = pq.ParquetFile(piece.path)
        groups, offset, first = [], 0, None
        for i in range(pf.metadata.num_row_groups):
            n = pf.metadata.row_group(i).num_rows
            if offset + n > piece.start and offset < piece.stop:
                groups.append(i)
                first = offset if first is None else first
            offset += n
        table = pf.read_row_groups(groups)
        table = table.slice(piece.start - (first or 0), piece.stop - piece.start)
        records = table.to_pylist()
    locations = [f"{piece.path} row {piece.start + i}" for i in range(len(records))]
    return Chunk(0, records, locations, schema=table.schema)
