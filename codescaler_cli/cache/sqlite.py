"""The SQLite side of the store: connections, schema, size and eviction (see store.py)."""

from __future__ import annotations

import math
import sqlite3
import urllib.parse

FILE_NAME = "scores-v1.sqlite"  # the schema's version is in the name: no migrations
EVICT_TO = 0.9  # an over-full store is cut to this share of its limit
MMAP_BYTES = 256 << 20

SCHEMA = """
CREATE TABLE IF NOT EXISTS scores (
    key BLOB PRIMARY KEY,       -- keys.pair_keys / keys.text_keys
    ns INTEGER NOT NULL,        -- namespaces.id
    score REAL,                 -- NULL: the code alone does not fit the max length
    n_tokens INTEGER NOT NULL,
    truncated INTEGER NOT NULL,
    used INTEGER NOT NULL,      -- last use, unix seconds (least recently used go first)
    crc INTEGER NOT NULL        -- keys.check(key, value)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS scores_used ON scores(used);
CREATE TABLE IF NOT EXISTS namespaces (
    id INTEGER PRIMARY KEY,
    digest BLOB UNIQUE NOT NULL,  -- keys.Namespace.digest()
    model TEXT NOT NULL,          -- as given: a directory's absolute path, or a Hub id
    revision TEXT,
    model_digest TEXT NOT NULL,
    dtype TEXT NOT NULL,
    device TEXT NOT NULL,
    max_length INTEGER NOT NULL,
    detail TEXT NOT NULL,         -- JSON: the whole namespace, the tokenizer's longest token
    created INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS files (  -- digest.py: file digests by path and stat
    path TEXT PRIMARY KEY,
    stat TEXT NOT NULL,
    digest TEXT NOT NULL
);
"""


def connect(path: str, timeout: float, readonly: str | None = None) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit). ``readonly``: ``ro`` or
    ``immutable`` (a store on read-only media, whose -shm cannot be created)."""
    if readonly is None:
        conn = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
    else:
        flag = "mode=ro" if readonly == "ro" else "immutable=1"
        uri = f"file:{urllib.parse.quote(path)}?{flag}"
        conn = sqlite3.connect(
            uri, timeout=timeout, isolation_level=None, check_same_thread=False, uri=True
        )
    return conn


def setup(conn: sqlite3.Connection) -> None:
    """WAL mode and the schema (written only when missing)."""
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")  # WAL: durable at checkpoints, never torn
    conn.execute(f"PRAGMA mmap_size={MMAP_BYTES}")  # reads without a copy: faster lookups
    have = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if not {"scores", "namespaces", "files"} <= have:
        conn.executescript(SCHEMA)


def used_bytes(conn: sqlite3.Connection) -> int:
    """Bytes in use (freed pages are reused before the file grows)."""
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    size = conn.execute("PRAGMA page_size").fetchone()[0]
    return (pages - free) * size


def evict(conn: sqlite3.Connection, max_size: int, target: float = EVICT_TO) -> int:
    """Drop the least recently used rows until the store is within ``target * max_size``."""
    removed = 0
    for _ in range(20):  # each round estimates the rows to drop from the bytes per row
        used = used_bytes(conn)
        if used <= max_size * (target if removed else 1.0):
            break
        rows = conn.execute("SELECT count(*) FROM scores").fetchone()[0]
        if rows == 0:
            break
        drop = max(1, math.ceil(rows * (1 - target * max_size / used)))
        conn.execute(
            "DELETE FROM scores WHERE key IN (SELECT key FROM scores ORDER BY used LIMIT ?)",
            (drop,),
        )
        removed += drop
    return removed


def _placeholders(n: int) -> str:
    return ",".join("?" * n)


def error_kind(exc: sqlite3.Error) -> str:
    """What a SQLite error means for the cache."""
    text = str(exc).lower()
    if not isinstance(exc, sqlite3.OperationalError) and isinstance(exc, sqlite3.DatabaseError):
        if "malformed" in text or "not a database" in text or "corrupt" in text:
            return "damaged"
        return "other"
    if "locked" in text or "busy" in text:
        return "busy"
    if "readonly" in text or "read-only" in text:
        return "readonly"
    if "full" in text:
        return "full"
    if "malformed" in text or "not a database" in text:
        return "damaged"
    return "other"
