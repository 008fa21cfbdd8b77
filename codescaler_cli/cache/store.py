"""The score store: one SQLite database in WAL mode, shared by every process on a machine.

Why SQLite (the standard library's) rather than diskcache or LMDB: it needs nothing
installed; WAL mode lets any number of processes and threads read while one writes, with
a busy timeout for writers (several CLI runs, Ray workers on one machine, a server and a
CLI together); a transaction is all or nothing, so ``kill -9`` or a power cut mid-write
leaves the last committed state and never half an entry; a damaged file is reported as
such (SQLITE_CORRUPT / SQLITE_NOTADB) instead of returning garbage; and a point lookup
costs microseconds. diskcache is a layer over the same SQLite (plus files for large
values, which scores are not); LMDB needs a fixed map size, one more binary dependency,
and is as unsafe as SQLite on network file systems.

Never a wrong score, never a lost run: every row carries a check of its key and value
(a damaged row is a miss); a damaged database is moved aside with one warning and a
fresh one started; a read-only or full disk, or a lock held too long, means scores are
not stored (one notice) while the run goes on. Rows are evicted least recently used
first once the database outgrows its size limit; a hit refreshes its row's time at most
once an hour, so lookups rarely write.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from .keys import Entry, check, check_row, storable
from .sqlite import FILE_NAME, connect, error_kind, evict, setup, used_bytes

TOUCH_AFTER_S = 3600  # a hit refreshes its row's last use at most this often
IN_BATCH = 500  # keys per SELECT ... IN (...)
WRITE_BATCH = 2000  # rows per write transaction: writers hold the lock briefly

Notify = Callable[[str], None]


def _select(n: int) -> str:
    marks = ",".join("?" * n)
    return f"SELECT key, score, n_tokens, truncated, used, crc FROM scores WHERE key IN ({marks})"


_SELECT = _select(IN_BATCH)


class CacheWarning(UserWarning):
    """The score cache cannot be used as asked (the run goes on without it)."""


def _warn(message: str) -> None:
    warnings.warn(message, CacheWarning, stacklevel=4)


class ScoreStore:
    """The store of one cache directory, as runs use it: lookups and writes never raise
    (a problem is noticed once, then the run goes on without that part of the cache)."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        max_size: int,
        notify: Notify | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.directory = os.path.abspath(os.fspath(directory))
        self.path = os.path.join(self.directory, FILE_NAME)
        self.max_size = max_size
        self.notify = notify or _warn
        self.timeout = timeout
        self.readable = True  # False: the cache is off for this run
        self.writable = True  # False: look up only
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        self._lock = threading.RLock()
        self._told: set[str] = set()
        self._ns_ids: dict[bytes, int] = {}
        self._writes = 0

    # ------------------------------------------------------------ opening, errors

    def tell(self, kind: str, message: str) -> None:
        """One notice per kind of problem per store."""
        if kind not in self._told:
            self._told.add(kind)
            self.notify(message)

    def _connection(self) -> sqlite3.Connection | None:
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        self._conn = None  # a forked child never uses its parent's connection
        if not self.readable:
            return None
        self._pid = os.getpid()
        try:
            os.makedirs(self.directory, exist_ok=True)
        except OSError as exc:
            self._off(f"cannot create {self.directory} ({exc.strerror or exc})")
            return None
        try:
            self._conn = self._open_and_set_up()
        except sqlite3.OperationalError as exc:
            if error_kind(exc) == "busy":
                self._off(f"{self.path} stayed locked by another process ({exc})")
                return None
            self._conn = self._open_readonly(exc)
        except sqlite3.DatabaseError as exc:
            if not self._move_aside(exc):
                return None
            return self._connection()
        return self._conn

    def _open_and_set_up(self) -> sqlite3.Connection:
        """A connection with WAL on and the schema there. Switching to WAL and creating the
        schema can meet another process doing the same; SQLite then answers "locked" at once
        instead of waiting (its deadlock rule), so that is retried until the busy timeout."""
        deadline = time.monotonic() + self.timeout
        pause = 0.01
        while True:
            conn = connect(self.path, self.timeout)
            try:
                setup(conn)
                return conn
            except sqlite3.OperationalError as exc:
                conn.close()
                if error_kind(exc) != "busy" or time.monotonic() + pause > deadline:
                    raise
            except BaseException:
                conn.close()
                raise
            time.sleep(pause)
            pause = min(pause * 2, 0.5)

    def _open_readonly(self, first: sqlite3.Error) -> sqlite3.Connection | None:
        if not os.path.exists(self.path):
            self._off(f"cannot create {self.path} ({first})")
            return None
        for mode in ("ro", "immutable"):
            try:
                conn = connect(self.path, self.timeout, readonly=mode)
                conn.execute("SELECT 1 FROM scores LIMIT 1").fetchall()
            except sqlite3.Error:
                continue
            self.writable = False
            self.tell(
                "readonly",
                f"score cache {self.path} is read-only ({first}): scores are looked up but not stored",
            )
            return conn
        self._off(f"cannot open {self.path} ({first})")
        return None

    def _off(self, why: str) -> None:
        self.readable = self.writable = False
        self.tell("off", f"score cache off for this run: {why}")
        self._close()

    def _close(self) -> None:
        if self._conn is not None and self._pid == os.getpid():
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
        self._conn = None

    def _move_aside(self, exc: sqlite3.Error) -> bool:
        """A damaged database: moved aside (kept for inspection), a fresh one started."""
        self._close()
        aside = self.path + ".damaged"  # the latest damaged copy only: the disk stays bounded
        try:
            os.replace(self.path, aside)
            for suffix in ("-wal", "-shm"):
                if os.path.exists(self.path + suffix):
                    os.replace(self.path + suffix, aside + suffix)
        except OSError:
            self._off(f"{self.path} is damaged ({exc}) and cannot be moved aside")
            return False
        self.tell(
            "damaged",
            f"score cache {self.path} was damaged ({exc}); moved to {aside}, starting a fresh one",
        )
        self._ns_ids.clear()
        return True

    def _failed(self, exc: sqlite3.Error, writing: bool) -> bool:
        """Handle an error of a lookup or write; True: retry once (a fresh store)."""
        kind = error_kind(exc)
        if kind == "damaged":
            return self._move_aside(exc)
        if kind == "busy":
            what = "some scores were not stored" if writing else "some lookups were skipped"
            self.tell("busy", f"score cache {self.path} is busy ({exc}); {what}")
        elif writing and kind in ("readonly", "full"):
            self.writable = False
            reason = "the disk is full" if kind == "full" else "it is read-only"
            self.tell(kind, f"score cache {self.path}: {reason}; scores of this run are not stored")
        else:
            self._off(f"{self.path}: {exc}")
        return False

    @contextlib.contextmanager
    def _using(self, writing: bool) -> Iterator[sqlite3.Connection | None]:
        """The connection under the lock; None when the store cannot serve this use."""
        with self._lock:
            if writing and not self.writable:
                yield None
                return
            yield self._connection()

    def _run(self, writing: bool, fallback: Any, op: Callable[[sqlite3.Connection], Any]) -> Any:
        for _ in range(2):
            with self._using(writing) as conn:
                if conn is None or (writing and not self.writable):
                    return fallback
                try:
                    return op(conn)
                except sqlite3.Error as exc:
                    if conn.in_transaction:
                        with contextlib.suppress(sqlite3.Error):
                            conn.execute("ROLLBACK")
                    if not self._failed(exc, writing):
                        return fallback
        return fallback

    # ------------------------------------------------------------ scores

    def get(self, keys: Sequence[bytes]) -> list[Entry | None]:
        """The stored entry of each key, or None (a miss)."""
        out: list[Entry | None] = [None] * len(keys)
        if not keys:
            return out

        def op(conn: sqlite3.Connection) -> None:
            first: dict[bytes, int] = {}  # each key's first position
            again: list[tuple[int, bytes]] = []  # later positions of repeated keys
            for i, k in enumerate(keys):
                if k in first:
                    again.append((i, k))
                else:
                    first[k] = i
            unique = sorted(first)  # in key order: the b-tree is walked once, forwards
            stale: list[bytes] = []
            damaged: list[bytes] = []
            old = int(time.time()) - TOUCH_AFTER_S
            for start in range(0, len(unique), IN_BATCH):
                part = unique[start : start + IN_BATCH]
                sql = _SELECT if len(part) == IN_BATCH else _select(len(part))
                for key, score, n_tokens, truncated, used, crc in conn.execute(
                    sql, part
                ).fetchall():
                    if crc != check_row(key, score, n_tokens, truncated):
                        damaged.append(key)
                        continue
                    out[first[key]] = Entry(score, n_tokens, truncated == 1)
                    if used < old:
                        stale.append(key)
            for i, k in again:
                out[i] = out[first[k]]
            if damaged:
                self.tell(
                    "rows",
                    f"score cache {self.path}: damaged entries ignored (they are scored again)",
                )
            if (stale or damaged) and self.writable:
                self._touch(conn, stale, damaged)

        self._run(False, None, op)
        return out

    def _touch(self, conn: sqlite3.Connection, stale: list[bytes], damaged: list[bytes]) -> None:
        """Refresh the last use of hits, drop damaged rows; skipped if the store is busy."""
        now = int(time.time())
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("UPDATE scores SET used=? WHERE key=?", [(now, k) for k in stale])
            conn.executemany("DELETE FROM scores WHERE key=?", [(k,) for k in damaged])
            conn.execute("COMMIT")
        except sqlite3.OperationalError:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")

    def put(self, namespace: int, items: Sequence[tuple[bytes, Entry]]) -> int:
        """Store fresh results (an existing row is kept: hits stay bit for bit what was
        stored first); returns how many were written."""
        rows = [
            (k, namespace, e.score, e.n_tokens, int(e.truncated), 0, check(k, e))
            for k, e in items
            if storable(e)
        ]
        if not rows:
            return 0

        def op(conn: sqlite3.Connection) -> int:
            now = int(time.time())
            for start in range(0, len(rows), WRITE_BATCH):
                part = [(*r[:5], now, r[6]) for r in rows[start : start + WRITE_BATCH]]
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany("INSERT OR IGNORE INTO scores VALUES (?,?,?,?,?,?,?)", part)
                conn.execute("COMMIT")
            self._writes += 1
            if used_bytes(conn) > self.max_size:
                conn.execute("BEGIN IMMEDIATE")
                evict(conn, self.max_size)
                conn.execute("COMMIT")
            return len(rows)

        return self._run(True, 0, op)

    def version(self) -> tuple[int, int] | None:
        """Changes to compare later: writes by other connections (SQLite's data_version)
        and by this store. Equal versions: a lookup would find nothing new."""

        def op(conn: sqlite3.Connection) -> tuple[int, int]:
            return conn.execute("PRAGMA data_version").fetchone()[0], self._writes

        return self._run(False, None, op)

    # ------------------------------------------------------------ namespaces, file digests

    def namespace_id(self, digest: bytes, fields: dict[str, Any], detail: str) -> int | None:
        """The row id of a namespace, registered on first use (None: cannot be written)."""
        if digest in self._ns_ids:
            return self._ns_ids[digest]

        def op(conn: sqlite3.Connection) -> int:
            conn.execute("BEGIN IMMEDIATE")
            row = conn.execute("SELECT id FROM namespaces WHERE digest=?", (digest,)).fetchone()
            if row is None:
                cur = conn.execute(
                    "INSERT INTO namespaces (digest, model, revision, model_digest, dtype, device,"
                    " max_length, detail, created) VALUES (?,?,?,?,?,?,?,?,?)",
                    (
                        digest,
                        fields["model"],
                        fields.get("revision"),
                        fields["model_digest"],
                        fields["dtype"],
                        fields["device"],
                        fields["max_length"],
                        detail,
                        int(time.time()),
                    ),
                )
                row = (cur.lastrowid,)
            conn.execute("COMMIT")
            return int(row[0])

        found = self._run(True, None, op)
        if found is not None:
            self._ns_ids[digest] = found
        return found

    def namespace_detail(self, digest: bytes) -> str | None:
        def op(conn: sqlite3.Connection) -> str | None:
            row = conn.execute("SELECT detail FROM namespaces WHERE digest=?", (digest,)).fetchone()
            return row[0] if row else None

        return self._run(False, None, op)

    def set_namespace_detail(self, digest: bytes, detail: str) -> None:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE namespaces SET detail=? WHERE digest=?", (detail, digest))

        self._run(True, None, op)

    def recall_file(self, path: str, stat: tuple[int, ...]) -> str | None:
        def op(conn: sqlite3.Connection) -> str | None:
            row = conn.execute(
                "SELECT digest FROM files WHERE path=? AND stat=?", (path, repr(stat))
            ).fetchone()
            return row[0] if row else None

        return self._run(False, None, op)

    def remember_file(self, path: str, stat: tuple[int, ...], digest: str) -> None:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT OR REPLACE INTO files VALUES (?,?,?)", (path, repr(stat), digest))

        self._run(True, None, op)

    def close(self) -> None:
        with self._lock:
            self._close()
