"""What a file holds, from its name: JSON rows (line-delimited or a document, possibly
compressed) or Parquet; and the magic bytes that tell data whose name does not say so.

* ``.jsonl`` / ``.ndjson``: one JSON object per line, whatever the first line holds.
* ``.json`` (and stdin, and pipes without a suffix): JSON Lines, one JSON array, or JSON
  objects one after another, told from the first line (``jsonl.layout``).
* ``.gz`` / ``.zst`` / ``.bz2`` / ``.xz`` after any of these: the same, compressed. zstd is
  decoded by pyarrow (a core dependency), the others by the standard library.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from typing import IO

from ..config import JSONL_SUFFIXES, PARQUET_SUFFIXES
from ..errors import InputError

COMPRESSIONS = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd", ".bz2": "bz2", ".xz": "xz"}
LINES_ONLY = (".jsonl", ".ndjson")
# Leading bytes of data that is not JSON text: (magic, what it is, the suffix it needs).
MAGIC = (
    (b"\x1f\x8b", "gzip-compressed", ".gz"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed", ".zst"),
    (b"BZh", "bzip2-compressed", ".bz2"),
    (b"\xfd7zXZ\x00", "xz-compressed", ".xz"),
    (b"PAR1", "a Parquet file", ".parquet"),
)


def split_compression(path: str) -> tuple[str, str | None]:
    """``("x.jsonl", "gzip")`` for ``x.jsonl.gz``; ``(path, None)`` when not compressed."""
    lower = path.lower()
    for suffix, codec in COMPRESSIONS.items():
        if lower.endswith(suffix):
            return path[: -len(suffix)], codec
    return path, None


def json_name(path: str) -> bool:
    """A name for JSON rows (``.jsonl``, ``.json``, ``.ndjson``, maybe compressed)."""
    return split_compression(path)[0].lower().endswith(JSONL_SUFFIXES)


def parquet_name(path: str) -> bool:
    return path.lower().endswith(PARQUET_SUFFIXES)


def lines_only(path: str | None) -> bool:
    """Named JSON Lines: every line is a row, whatever the first one holds."""
    return bool(path) and split_compression(path)[0].lower().endswith(LINES_ONLY)  # type: ignore[arg-type]


def compression(path: str | None) -> str | None:
    return split_compression(path)[1] if path else None


def check_magic(fh: IO[bytes], name: str, codec: str | None) -> None:
    """Refuse data that is compressed (or Parquet) although its name says plain JSON: read
    as text it would be rows of noise. ``fh`` must be peekable (``peekable``)."""
    if codec is not None:
        return
    head = fh.peek(8)[:8]  # type: ignore[attr-defined]
    for magic, what, suffix in MAGIC:
        if head.startswith(magic):
            unnamed = name == "<stdin>" or name.startswith(("/dev/", "/proc/"))
            if suffix == ".parquet":
                hint = "give it a .parquet name" if not unnamed else "write it to a .parquet file"
            else:
                hint = f"name it {name}{suffix}" if not unnamed else "decompress it first"
            raise InputError(f"{name}: the data is {what}, not JSON text; {hint}")


@contextlib.contextmanager
def peekable(fh: IO[bytes]) -> Iterator[IO[bytes]]:
    """``fh`` with ``peek`` (a buffer around it if needed, detached after: the caller's
    stream, e.g. a BytesIO given as stdin, is never closed here)."""
    if hasattr(fh, "peek"):
        yield fh
        return
    buffered = io.BufferedReader(fh)  # type: ignore[arg-type]
    try:
        yield buffered
    finally:
        with contextlib.suppress(ValueError):
            buffered.detach()


@contextlib.contextmanager
def decompressed(fh: IO[bytes], name: str, codec: str | None) -> Iterator[IO[bytes]]:
    """``fh`` read through its codec (one pass, no seeking: pipes work); a damaged stream
    raises :class:`InputError` naming the file."""
    if codec is None:
        yield fh
        return
    if codec == "gzip":
        import gzip

        inner: IO[bytes] = gzip.GzipFile(fileobj=fh, mode="rb")
    elif codec == "bz2":
        import bz2

        inner = bz2.BZ2File(fh, mode="rb")
    elif codec == "xz":
        import lzma

        inner = lzma.LZMAFile(fh, mode="rb")  # noqa: SIM115 - closed with the stream
    else:
        import pyarrow as pa

        inner = pa.CompressedInputStream(pa.PythonFile(fh, mode="r"), "zstd")  # type: ignore[assignment]
    with io.BufferedReader(_Checked(inner, name, codec), buffer_size=1 << 16) as stream:
        yield stream


class _Checked(io.RawIOBase):
    """A decompressing stream whose errors (several types, by codec) are one InputError."""

    def __init__(self, inner: IO[bytes], name: str, codec: str) -> None:
        self.inner = inner
        self.name_ = name
        self.codec = codec

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def, override]
        try:
            data = self.inner.read(len(buffer))
        except InputError:
            raise
        except Exception as exc:  # zlib.error, EOFError, OSError, lzma.LZMAError, ...
            text = (str(exc).strip() or type(exc).__name__).splitlines()[0][:200]
            raise InputError(f"{self.name_}: cannot decompress as {self.codec} ({text})") from None
        n = len(data)
        buffer[:n] = data
        return n

    def close(self) -> None:
        try:
            self.inner.close()
        finally:
            super().close()
