"""``codescaler cache info|prune|clear``: the store as its owner sees it.

Unlike a scoring run (which goes on without the cache whatever happens to it), these
commands fail with one line when they cannot do what was asked. Safe while runs use the
store: every change is a transaction; space is given back with VACUUM when no run holds
the store (else on a later prune).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..errors import CodescalerError, OutputError
from .sqlite import FILE_NAME, connect, evict, setup, used_bytes

TIMEOUT_S = 30.0


@dataclass
class ModelEntry:
    model: str
    revision: str | None
    digest: str
    dtype: str
    device: str
    max_length: int
    entries: int
    last_used: int | None


@dataclass
class StoreInfo:
    path: str
    exists: bool
    file_bytes: int = 0  # the database and its write-ahead log
    used_bytes: int = 0
    entries: int = 0
    models: list[ModelEntry] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def store_path(directory: str) -> str:
    return os.path.join(directory, FILE_NAME)


def _file_bytes(path: str) -> int:
    return sum(os.path.getsize(path + s) for s in ("", "-wal") if os.path.exists(path + s))


@contextlib.contextmanager
def _opened(path: str, write: bool) -> Iterator[sqlite3.Connection]:
    try:
        conn = connect(path, TIMEOUT_S)
    except sqlite3.Error as exc:
        raise OutputError(f"cannot open the score cache {path}: {exc}") from None
    try:
        if write:
            setup(conn)
        yield conn
    except sqlite3.DatabaseError as exc:
        raise _error(path, exc) from None
    finally:
        conn.close()


def _error(path: str, exc: sqlite3.Error) -> CodescalerError:
    text = str(exc)
    if "malformed" in text or "not a database" in text:
        return OutputError(
            f"the score cache {path} is damaged ({text}); `codescaler cache clear` removes it"
        )
    return OutputError(f"score cache {path}: {text}")


def info(directory: str) -> StoreInfo:
    """Location, size, entries, and the models with scores stored."""
    path = store_path(directory)
    if not os.path.exists(path):
        return StoreInfo(path, False)
    with _opened(path, write=False) as conn:
        out = StoreInfo(path, True, _file_bytes(path), used_bytes(conn))
        have = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "scores" not in have:
            return out
        counts = {
            ns: (n, last)
            for ns, n, last in conn.execute(
                "SELECT ns, count(*), max(used) FROM scores GROUP BY ns"
            )
        }
        for row in conn.execute(
            "SELECT id, model, revision, model_digest, dtype, device, max_length FROM namespaces"
            " ORDER BY created"
        ):
            n, last = counts.get(row[0], (0, None))
            out.models.append(ModelEntry(*row[1:7], entries=n, last_used=last))
        out.entries = sum(m.entries for m in out.models)
    return out


def prune(directory: str, max_size: int) -> tuple[int, int, int]:
    """Drop least recently used scores until the store holds at most ``max_size`` bytes;
    returns (scores removed, bytes before, bytes after)."""
    path = store_path(directory)
    if not os.path.exists(path):
        return 0, 0, 0
    before = _file_bytes(path)
    with _opened(path, write=True) as conn:
        conn.execute("BEGIN IMMEDIATE")
        removed = evict(conn, max_size, target=1.0)
        conn.execute("COMMIT")
        _vacuum(conn)
    return removed, before, _file_bytes(path)


def clear(directory: str, model: str | None = None) -> tuple[int, list[str]]:
    """Remove every score, or those of ``model`` (as given to --model, or a prefix of its
    content digest); returns (scores removed, models removed)."""
    path = store_path(directory)
    if not os.path.exists(path):
        return 0, []
    if model is None:
        try:
            with _opened(path, write=True) as conn:
                conn.execute("BEGIN IMMEDIATE")
                n = conn.execute("SELECT count(*) FROM scores").fetchone()[0]
                names = [r[0] for r in conn.execute("SELECT DISTINCT model FROM namespaces")]
                conn.execute("DELETE FROM scores")
                conn.execute("DELETE FROM namespaces")
                conn.execute("COMMIT")
                _vacuum(conn)
            for suffix in (".damaged", ".damaged-wal", ".damaged-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path + suffix)
        except OutputError:
            if not _damaged(path):
                raise
            _remove(path)  # a damaged store cannot be emptied: it goes
            return 0, []
        return n, names
    with _opened(path, write=True) as conn:
        conn.execute("BEGIN IMMEDIATE")
        ids, names = _matching(conn, model)
        marks = ",".join("?" * len(ids))
        n = 0
        if ids:
            n = conn.execute(f"DELETE FROM scores WHERE ns IN ({marks})", ids).rowcount
            conn.execute(f"DELETE FROM namespaces WHERE id IN ({marks})", ids)
        conn.execute("COMMIT")
        if n:
            _vacuum(conn)
    return n, names


def _matching(conn: sqlite3.Connection, model: str) -> tuple[list[int], list[str]]:
    wanted = {model, os.path.abspath(os.path.expanduser(model))}
    ids, names = [], []
    for ns, name, digest in conn.execute("SELECT id, model, model_digest FROM namespaces"):
        prefix = len(model) >= 8 and digest.startswith(model.lower())
        if name in wanted or prefix:
            ids.append(ns)
            names.append(name)
    return ids, sorted(set(names))


def _vacuum(conn: sqlite3.Connection) -> None:
    """Give freed space back to the disk (skipped while another process holds the store)."""
    with contextlib.suppress(sqlite3.OperationalError):
        conn.execute("VACUUM")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def _damaged(path: str) -> bool:
    try:
        conn = connect(path, TIMEOUT_S)
        try:
            return conn.execute("PRAGMA quick_check").fetchone()[0] != "ok"
        finally:
            conn.close()
    except sqlite3.DatabaseError:
        return True


def _remove(path: str) -> None:
    for suffix in ("", "-wal", "-shm", ".damaged", ".damaged-wal", ".damaged-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(path + suffix)


def as_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True)
