"""Chunk vectors already computed: a bounded in-memory LRU over an SQLite file.

Keys are ``sha256(model id + chunk text)``, so an edited chunk or another model
simply misses. The file holds only keys and float32 vectors, never text, and a
restart re-embeds nothing it has seen. Disk trouble is logged once and the
cache carries on in memory: a cache must never fail a search.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

__all__ = ["DISK_ROWS", "MEMORY_ENTRIES", "VectorCache", "cache_key"]

log = logging.getLogger(__name__)

MEMORY_ENTRIES = 40_000   # x 1.5 KB (384 float32) = 60 MB at most; 2,000 windows use 10,000
DISK_ROWS = 200_000       # least recently used rows beyond this are dropped
_IN_BATCH = 500           # below SQLite's bound-parameter limit
_USED_GRAIN_S = 86_400.0  # a row's last-use time is refreshed at most daily

F32 = NDArray[np.float32]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS vectors (
    key BLOB PRIMARY KEY, model TEXT NOT NULL, vec BLOB NOT NULL, used REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS vectors_used ON vectors (used);
"""


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def cache_key(model_id: str, text: str) -> bytes:
    return hashlib.sha256(f"{model_id}\0{text}".encode()).digest()


class VectorCache:
    """Thread-safe: one SQLite connection behind a lock (each query is tiny)."""

    def __init__(self, path: str | Path | None = None, *, memory_entries: int = MEMORY_ENTRIES,
                 disk_rows: int = DISK_ROWS) -> None:
        self.path = Path(path) if path is not None else None
        self.memory_entries = memory_entries
        self.disk_rows = disk_rows
        self._mem: OrderedDict[bytes, F32] = OrderedDict()
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._opened = False
        self._purged_models: set[str] = set()

    # ----------------------------------------------------------------- disk

    def _conn(self) -> sqlite3.Connection | None:
        """The connection, opened on first use; None without a path or after a failure."""
        if self._opened:
            return self._db
        self._opened = True
        if self.path is None:
            return None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            # Create it 0600 before SQLite does (vectors say something about the text).
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
            # Short busy timeout: a search has a deadline, a skipped write is only a re-embed.
            db = sqlite3.connect(self.path, timeout=0.25, check_same_thread=False,
                                 isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # losing the last rows costs a re-embed
            db.executescript(_SCHEMA)
            self._db = db
        except (sqlite3.Error, OSError) as exc:
            self._disable(exc)
        return self._db

    def _failed(self, exc: sqlite3.Error) -> None:
        """Another process holding the file only skips this read/write; anything else
        turns the disk cache off."""
        if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
            log.debug("memory.cache_busy", extra={"path": str(self.path)})
        else:
            self._disable(exc)

    def _disable(self, exc: BaseException) -> None:
        log.warning("memory.cache_disk_disabled", extra={"path": str(self.path), "why": str(exc)})
        if self._db is not None:
            try:
                self._db.close()
            except sqlite3.Error:
                pass
        self._db = None

    def _disk_get(self, keys: Sequence[bytes]) -> dict[bytes, F32]:
        db = self._conn()
        if db is None or not keys:
            return {}
        found: dict[bytes, F32] = {}
        now = time.time()
        stale: list[bytes] = []
        try:
            for i in range(0, len(keys), _IN_BATCH):
                part = keys[i:i + _IN_BATCH]
                rows = db.execute(f"SELECT key, vec, used FROM vectors WHERE key IN "
                                  f"({','.join('?' * len(part))})", part).fetchall()
                for key, blob, used in rows:
                    found[bytes(key)] = np.frombuffer(blob, dtype=np.float32).copy()
                    if used < now - _USED_GRAIN_S:
                        stale.append(bytes(key))
            if stale:  # pruning order only needs day precision: skip most writes
                with _transaction(db):
                    db.executemany("UPDATE vectors SET used = ? WHERE key = ?",
                                   [(now, k) for k in stale])
        except sqlite3.Error as exc:
            self._failed(exc)
        return found

    def _disk_put(self, model_id: str, items: Mapping[bytes, F32]) -> None:
        db = self._conn()
        if db is None or not items:
            return
        now = time.time()
        try:
            with _transaction(db):
                if model_id not in self._purged_models:
                    # Rows of another model can never hit again.
                    db.execute("DELETE FROM vectors WHERE model != ?", (model_id,))
                    self._purged_models.add(model_id)
                db.executemany(
                    "INSERT OR REPLACE INTO vectors (key, model, vec, used) VALUES (?, ?, ?, ?)",
                    [(k, model_id, np.asarray(v, dtype=np.float32).tobytes(), now)
                     for k, v in items.items()])
                (count,) = db.execute("SELECT count(*) FROM vectors").fetchone()
                if count > self.disk_rows:
                    db.execute("DELETE FROM vectors WHERE key IN (SELECT key FROM vectors "
                               "ORDER BY used LIMIT ?)", (count - self.disk_rows,))
        except sqlite3.Error as exc:
            self._failed(exc)

    # ----------------------------------------------------------------- API

    def get_many(self, keys: Iterable[bytes]) -> dict[bytes, F32]:
        """The cached vectors among ``keys`` (memory first, then disk)."""
        found: dict[bytes, F32] = {}
        with self._lock:
            missing = []
            for k in keys:
                v = self._mem.get(k)
                if v is None:
                    missing.append(k)
                else:
                    self._mem.move_to_end(k)
                    found[k] = v
            if missing:
                from_disk = self._disk_get(missing)
                self._remember(from_disk)
                found.update(from_disk)
        return found

    def put_many(self, model_id: str, items: Mapping[bytes, F32]) -> None:
        with self._lock:
            self._remember(items)
            self._disk_put(model_id, items)

    def _remember(self, items: Mapping[bytes, F32]) -> None:
        for k, v in items.items():
            self._mem[k] = v
            self._mem.move_to_end(k)
        while len(self._mem) > self.memory_entries:
            self._mem.popitem(last=False)

    def clear_memory(self) -> None:
        with self._lock:
            self._mem.clear()

    def __len__(self) -> int:
        return len(self._mem)

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
            self._db = None
            self._opened = True  # closed for good: later use stays in memory
