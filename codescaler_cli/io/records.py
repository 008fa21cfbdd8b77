"""What codescaler wrote: a record in each directory it writes to, so that it deletes only
its own files and never mistakes its own outputs for fresh input.

``DIR/.codescaler-outputs.json`` lists each file codescaler wrote in DIR (an output, its
rejected rows, a summary or metrics file, the parts of ``-o DIR/``) with the size and
modification time it had when written: the file is codescaler's while it still has them (a
file replaced or edited since is the user's). The record is replaced atomically, under an advisory lock on
the directory, since two runs may write next to each other.

Parquet outputs also say so themselves (``codescaler.*`` schema metadata); JSON Lines have
no metadata, hence the record.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from typing import Any

RECORD = ".codescaler-outputs.json"
FORMAT = 1


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give a new file (mkstemp's is 0600)


def _empty() -> dict[str, Any]:
    return {"format": FORMAT, "files": {}}


def load(directory: str) -> dict[str, Any]:
    """A directory's record (empty when there is none or it cannot be read)."""
    try:
        with open(os.path.join(directory, RECORD), encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return _empty()
    if not isinstance(data, dict) or not isinstance(data.get("files"), dict):
        return _empty()
    return {**_empty(), **data}


def _save(directory: str, data: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f"{RECORD}.", suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1, sort_keys=True)
            fh.write("\n")
        os.replace(tmp, os.path.join(directory, RECORD))
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def _locked(directory: str) -> Iterator[None]:
    fd = os.open(directory, os.O_RDONLY)
    try:
        with contextlib.suppress(OSError):  # a filesystem without locks: still record
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # drops the lock


def _stamp(path: str) -> dict[str, int]:
    st = os.stat(path)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _update(paths: Iterable[str], change: Any) -> None:
    """Apply ``change(files, name, path)`` to each path's directory record. Recording never
    fails a run: without a record a file is only treated as the user's."""
    by_dir: dict[str, list[str]] = {}
    for p in paths:
        if p and p != "-":
            full = os.path.abspath(p)
            by_dir.setdefault(os.path.dirname(full), []).append(full)
    for directory, full_paths in by_dir.items():
        with contextlib.suppress(OSError), _locked(directory):
            data = load(directory)
            files = data["files"]
            for name in [n for n in files if not os.path.lexists(os.path.join(directory, n))]:
                if files[name].get("size") is not None:  # gone: forget it (pending stays)
                    del files[name]
            for path in full_paths:
                change(files, os.path.basename(path), path)
            _save(directory, data)


ROLES = ("output", "rejected", "report")  # rows; rows set aside; a summary or metrics


def note_written(paths: Iterable[str], role: str = "output") -> None:
    """Record files codescaler has just written (complete, at their final paths)."""

    def change(files: dict, name: str, path: str) -> None:
        if os.path.isfile(path):
            files[name] = {**_stamp(path), "role": role}

    _update(paths, change)


def note_pending(paths: Iterable[str]) -> None:
    """Record files codescaler is about to write: its own whatever they hold until
    :func:`note_written` stamps them (a run killed meanwhile leaves nothing foreign)."""

    def change(files: dict, name: str, path: str) -> None:
        files[name] = {"size": None, "mtime_ns": None, "role": "output"}

    _update(paths, change)


def forget(paths: Iterable[str]) -> None:
    """Drop files codescaler has removed from their records."""

    def change(files: dict, name: str, path: str) -> None:
        files.pop(name, None)

    _update(paths, change)


def _ours(entry: Any, path: str) -> bool:
    if not isinstance(entry, dict):
        return False
    if entry.get("size") is None:  # being written
        return True
    try:
        return _stamp(path) == {"size": entry["size"], "mtime_ns": entry["mtime_ns"]}
    except (OSError, KeyError):
        return False


def written_here(path: str, record: dict[str, Any] | None = None) -> bool:
    """``path`` is a file codescaler wrote and nobody changed since."""
    full = os.path.abspath(path)
    if record is None:
        record = load(os.path.dirname(full))
    return _ours(record["files"].get(os.path.basename(full)), full)


def role(path: str, record: dict[str, Any] | None = None) -> str | None:
    """What codescaler wrote at ``path`` (one of ``ROLES``), or None: not codescaler's.
    Recorded in its directory (``record``: that directory's, when already loaded), or a
    Parquet file whose schema says so (``codescaler.version``)."""
    full = os.path.abspath(path)
    if record is None:
        record = load(os.path.dirname(full))
    entry = record["files"].get(os.path.basename(full))
    if _ours(entry, full):
        return entry.get("role") if entry.get("role") in ROLES else "output"
    if not path.lower().endswith((".parquet", ".pq")):
        return None
    try:
        import pyarrow.parquet as pq

        meta = pq.read_schema(path).metadata or {}
    except Exception:  # damaged or not Parquet: the reader will say so
        return None
    return "output" if b"codescaler.version" in meta else None


def is_checkpoint_dir(path: str) -> bool:
    """``OUTPUT.partial/``: a run's finished chunks, never input."""
    return path.endswith(".partial") and os.path.isfile(os.path.join(path, "manifest.json"))


def foreign_entries(directory: str) -> list[str]:
    """Names in ``directory`` codescaler did not write (its record and the temporaries of
    its recorded files aside), sorted."""
    record = load(directory)
    names = set(record["files"])
    foreign = []
    for name in sorted(os.listdir(directory)):
        if name == RECORD or (name.startswith(RECORD + ".") and name.endswith(".tmp")):
            continue
        # atomic_path's temporaries of a recorded NAME: ".NAME.XXXX.tmp"
        if name.endswith(".tmp") and any(name.startswith(f".{n}.") for n in names):
            continue
        if not written_here(os.path.join(directory, name), record):
            foreign.append(name)
    return foreign


def remove_own(path: str) -> bool:
    """Delete ``path`` if codescaler wrote it (and nobody changed it since)."""
    if not os.path.isfile(path) or not written_here(path):
        return False
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    forget([path])
    return True
