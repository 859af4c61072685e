"""The default call store: SQLite (WAL, synchronous=FULL) plus the ``calls.jsonl`` mirror.

Files in the store directory (0700): ``calls.sqlite3`` (0600, plus its WAL
files), ``calls.jsonl`` (0600) and ``calls.lock``.

Write path, under a thread lock and an inter-process ``flock``::

    BEGIN IMMEDIATE; upsert snapshot; insert events; COMMIT   <- durable here
    append the events to calls.jsonl; fsync                  <- then mirrored
    return                                                   <- acknowledged

The events table is the source of truth and the log its mirror. A crash
between COMMIT and the append, or a failed append, leaves the log short; the
next write or the next open appends what is missing (by ``seq``), so no
acknowledged event is lost from either. Which seq the log had reached is also
noted in ``meta`` with each commit, so a log that was rotated or deleted is
continued from there rather than refilled with the whole history.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import logging
import math
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from voicecall.calls.model import Call
from voicecall.errors import StoreError
from voicecall.store import _files, _jsonl, _schema
from voicecall.store.base import (
    MAX_KEYS_PER_CALL,
    MAX_KEYS_TOTAL,
    MAX_TERMINAL_CALLS,
    CallStore,
)

log = logging.getLogger(__name__)

DB_NAME = "calls.sqlite3"
EVENTS_NAME = "calls.jsonl"
LOCK_NAME = "calls.lock"
_MIRROR_KEY = "mirror.seq"  # meta: highest seq known to be in calls.jsonl
_BATCH = 1000

_UPSERT = """
INSERT INTO calls (call_id, provider_call_id, state, terminal, started_at, updated_at, record_json)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (call_id) DO UPDATE SET
    provider_call_id = excluded.provider_call_id, state = excluded.state,
    terminal = excluded.terminal, started_at = excluded.started_at,
    updated_at = excluded.updated_at, record_json = excluded.record_json
"""

# (ts, callId, type, fields-json, fields) of an event not yet given its seq.
_Pending = tuple[float, str | None, str, str, dict[str, Any]]


def _prepare(event: Mapping[str, Any], default_call_id: str | None, now: float) -> _Pending:
    """Validate and serialise an event before any transaction starts (fail early, write nothing)."""
    type_ = event.get("type")
    if not isinstance(type_, str) or not type_:
        raise StoreError(f"event needs a non-empty string 'type', got {type_!r}")
    ts = event.get("ts", now)
    if isinstance(ts, bool) or not isinstance(ts, int | float) or not math.isfinite(ts):
        raise StoreError(f"event {type_!r}: 'ts' must be a finite unix time, got {ts!r}")
    call_id = event.get("callId", default_call_id)
    if call_id is not None and not isinstance(call_id, str):
        raise StoreError(f"event {type_!r}: 'callId' must be a string or null")
    fields = {k: v for k, v in event.items() if k not in _jsonl.RESERVED_KEYS}
    try:
        fields_json = _jsonl.dumps(fields)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"event {type_!r} is not JSON-serialisable: {exc}") from None
    # Round-trip so the caller gets exactly what a reader of the log will see.
    return float(ts), call_id, type_, fields_json, json.loads(fields_json)


def _connect(path: Path) -> sqlite3.Connection:
    os.close(_files.open_private(path, os.O_RDWR))  # create it 0600 before SQLite does
    db = sqlite3.connect(path, timeout=10.0, isolation_level=None, check_same_thread=False)
    try:
        # The first statement reads the header: a file that is not a database fails here.
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            log.warning("store.sqlite.no-wal path=%s journal_mode=%s", path, mode)
        db.execute("PRAGMA synchronous=FULL")  # WAL+NORMAL may drop the last commits on power loss
        _schema.migrate(db, path)
    except BaseException:
        db.close()
        raise
    return db


class SqliteCallStore(CallStore):
    def __init__(self, directory: Path | str, *,
                 max_keys_per_call: int = MAX_KEYS_PER_CALL,
                 max_keys_total: int = MAX_KEYS_TOTAL,
                 max_terminal_calls: int | None = MAX_TERMINAL_CALLS) -> None:
        """Open (creating if needed) the store in ``directory`` and repair its log.

        ``max_terminal_calls`` is applied once here (one indexed DELETE); None
        keeps every snapshot.
        """
        self._dir = Path(directory)
        self._path = self._dir / DB_NAME
        self._events_path = self._dir / EVENTS_NAME
        self._max_keys_per_call = max_keys_per_call
        self._max_keys_total = max_keys_total
        self._lock = threading.RLock()
        self._closed = False
        self._db: sqlite3.Connection | None = None
        self._xlock: _files.InterProcessLock | None = None
        self._mirror: _files.EventMirror | None = None
        self._mirror_seq = self._saved_mirror_seq = 0
        try:
            _files.ensure_private_dir(self._dir)
            self._xlock = _files.InterProcessLock(self._dir / LOCK_NAME)
            with self._xlock:
                self._db = _connect(self._path)
                self._mirror = _files.EventMirror(self._events_path)
                self._mirror_seq = self._read_mirror_seq()
                self._saved_mirror_seq = self._mirror_seq
                self._repair_mirror()
        except sqlite3.OperationalError as exc:  # locked, unreadable, disk full: not corruption
            self.close()
            raise StoreError(f"cannot open call store {self._path}: {exc}") from None
        except sqlite3.DatabaseError as exc:  # "file is not a database", "malformed"
            self.close()
            raise StoreError(
                f"cannot open call store {self._path}: {exc}. The file was left untouched; "
                f"move it aside to start an empty store") from None
        except (sqlite3.Error, OSError) as exc:
            self.close()
            raise StoreError(f"cannot open call store in {self._dir}: {exc}") from None
        except BaseException:
            self.close()
            raise
        if max_terminal_calls is not None:
            self.prune(max_terminal_calls)

    # -- attributes ---------------------------------------------------------

    @property
    def path(self) -> Path:
        return self._path

    @property
    def events_path(self) -> Path:
        return self._events_path

    @property
    def directory(self) -> Path:
        return self._dir

    # -- plumbing -----------------------------------------------------------

    @contextlib.contextmanager
    def _using(self, action: str) -> Iterator[sqlite3.Connection]:
        """The connection, under the thread lock, with SQLite/OS errors as ``StoreError``."""
        with self._lock:
            if self._closed or self._db is None:
                raise StoreError(f"call store {self._path} is closed")
            try:
                yield self._db
            except (sqlite3.Error, OSError) as exc:
                raise StoreError(f"call store {self._path}: {action} failed: {exc}") from None

    @contextlib.contextmanager
    def _transaction(self, db: sqlite3.Connection) -> Iterator[None]:
        db.execute("BEGIN IMMEDIATE")
        try:
            yield
            if self._mirror_seq != self._saved_mirror_seq:
                # Piggybacks on a commit that happens anyway: no extra fsync.
                db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                           (_MIRROR_KEY, str(self._mirror_seq)))
            db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise
        self._saved_mirror_seq = self._mirror_seq

    def _read_mirror_seq(self) -> int:
        assert self._db is not None
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (_MIRROR_KEY,)).fetchone()
        return int(row[0]) if row else 0

    def _insert_events(self, db: sqlite3.Connection,
                       pending: Sequence[_Pending]) -> builtins.list[dict[str, Any]]:
        written = []
        for ts, call_id, type_, fields_json, fields in pending:
            cur = db.execute("INSERT INTO events (ts, call_id, type, json) VALUES (?, ?, ?, ?)",
                             (ts, call_id, type_, fields_json))
            assert cur.lastrowid is not None
            written.append(_jsonl.make_record(cur.lastrowid, ts, type_, call_id, fields))
        return written

    def _events_after(self, seq: int) -> Iterator[builtins.list[dict[str, Any]]]:
        """Committed events with a higher seq, in batches (the catch-up may be long)."""
        assert self._db is not None
        while True:
            rows = self._db.execute(
                "SELECT seq, ts, call_id, type, json FROM events WHERE seq > ? "
                "ORDER BY seq LIMIT ?", (seq, _BATCH)).fetchall()
            if not rows:
                return
            yield [_jsonl.make_record(s, ts, t, c, json.loads(j)) for s, ts, c, t, j in rows]
            seq = rows[-1][0]

    def _log_base(self) -> int:
        """The seq the log has reached: its last record, or, for a fresh or rotated
        log, what this store last knew was mirrored."""
        assert self._mirror is not None
        last = self._mirror.last_seq()
        return last if last is not None else self._mirror_seq

    def _catch_up(self, base: int) -> int:
        assert self._mirror is not None
        count = 0
        for batch in self._events_after(base):
            self._mirror.append(batch)
            count += len(batch)
            self._mirror_seq = int(batch[-1]["seq"])
        return count

    def _repair_mirror(self) -> None:
        """On open: cut a torn tail, append committed events the log lacks."""
        assert self._db is not None and self._mirror is not None
        base = self._log_base()
        top = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
        if base > (top[0] if top is not None else 0):
            # The log is ahead of the database (restored or recreated database):
            # continue numbering after the log so seq stays unique in it.
            log.warning("store.mirror.ahead log_seq=%d db_seq=%s", base, top and top[0])
            with self._transaction(self._db):
                self._db.execute("DELETE FROM sqlite_sequence WHERE name = 'events'")
                self._db.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('events', ?)",
                                 (base,))
        self._mirror_seq = base
        added = self._catch_up(base)
        if added:
            log.warning("store.mirror.repaired path=%s appended=%d", self._events_path, added)

    def _write_mirror(self, written: Sequence[Mapping[str, Any]]) -> None:
        """Mirror just-committed events. Runs after COMMIT: they are already durable.

        Named so tests can stop a process exactly between commit and mirror.
        """
        assert self._mirror is not None
        if not written:
            return
        try:
            base = self._log_base()
            if base >= int(written[0]["seq"]) - 1:
                self._mirror.append(written)
                self._mirror_seq = int(written[-1]["seq"])
            else:  # an earlier append failed or another process died mid-write
                self._catch_up(base)
        except (OSError, sqlite3.Error) as exc:
            # Not raised: the events are committed, so the caller must not retry
            # them (that would duplicate them). The next write or open catches up.
            log.error("store.mirror.write-failed path=%s error=%s", self._events_path, exc)

    def _commit_events(self, call: Call | None, events: Sequence[Mapping[str, Any]],
                       processed_key: str | None = None) -> builtins.list[dict[str, Any]]:
        now = time.time()
        snapshot = None
        if call is not None:
            try:
                snapshot = _jsonl.dumps(call.to_dict())
            except (TypeError, ValueError) as exc:
                raise StoreError(f"call {call.call_id} is not JSON-serialisable: {exc}") from None
        default_id = call.call_id if call is not None else None
        pending = [_prepare(event, default_id, now) for event in events]
        if call is None and not pending:
            return []
        with self._using("save") as db:
            assert self._xlock is not None
            with self._xlock:
                with self._transaction(db):
                    if call is not None:
                        db.execute(_UPSERT, (call.call_id, call.provider_call_id,
                                             call.state.value, int(call.terminal),
                                             call.started_at, now, snapshot))
                    written = self._insert_events(db, pending)
                    if processed_key is not None:
                        self._mark(db, processed_key, default_id)
                self._write_mirror(written)
        return written

    # -- CallStore ----------------------------------------------------------

    def save(self, call: Call, events: Sequence[Mapping[str, Any]] = (), *,
             processed_key: str | None = None) -> builtins.list[dict[str, Any]]:
        return self._commit_events(call, events, processed_key)

    def append_events(
            self, events: Sequence[Mapping[str, Any]]) -> builtins.list[dict[str, Any]]:
        return self._commit_events(None, events)

    def _decode(self, call_id: str, record_json: str) -> Call:
        try:
            return Call.from_dict(json.loads(record_json))
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreError(f"call store {self._path}: record {call_id} is unreadable: "
                             f"{exc!r}") from None

    def _decode_rows(self, rows: Sequence[tuple[str, str]]) -> builtins.list[Call]:
        calls = []
        for call_id, record_json in rows:
            try:
                calls.append(self._decode(call_id, record_json))
            except StoreError as exc:
                # One bad row must not hide the others; the row itself stays in the file.
                log.error("store.record.unreadable %s", exc)
        return calls

    def get(self, call_id: str) -> Call | None:
        with self._using("get") as db:
            row = db.execute("SELECT call_id, record_json FROM calls WHERE call_id = ?",
                             (call_id,)).fetchone()
        return self._decode(*row) if row else None

    def get_by_provider_id(self, provider_call_id: str) -> Call | None:
        # Should two records share a carrier id, a live call beats an ended one,
        # then the newer beats the older.
        with self._using("get_by_provider_id") as db:
            row = db.execute(
                "SELECT call_id, record_json FROM calls WHERE provider_call_id = ? "
                "ORDER BY terminal, started_at DESC, rowid DESC LIMIT 1",
                (provider_call_id,)).fetchone()
        return self._decode(*row) if row else None

    def list(self, active_only: bool = False, limit: int | None = 100) -> builtins.list[Call]:
        where = "WHERE terminal = 0 " if active_only else ""
        with self._using("list") as db:
            rows = db.execute(
                f"SELECT call_id, record_json FROM calls {where}"
                "ORDER BY started_at DESC, rowid DESC LIMIT ?",
                (-1 if limit is None else max(0, limit),)).fetchall()
        return self._decode_rows(rows)

    def load_active(self) -> builtins.list[Call]:
        with self._using("load_active") as db:
            rows = db.execute("SELECT call_id, record_json FROM calls WHERE terminal = 0 "
                              "ORDER BY started_at, rowid").fetchall()
        return self._decode_rows(rows)

    def mark_processed(self, key: str, call_id: str | None) -> bool:
        with self._using("mark_processed") as db, self._transaction(db):
            return self._mark(db, key, call_id)

    def _mark(self, db: sqlite3.Connection, key: str, call_id: str | None) -> bool:
        """Record a dedupe key inside the caller's transaction; False if already there."""
        cur = db.execute("INSERT OR IGNORE INTO processed (key, call_id, at) VALUES (?, ?, ?)",
                         (key, call_id, time.time()))
        if cur.rowcount == 0:
            return False
        # Evict the oldest beyond the caps (rowid order is insertion order).
        if call_id is not None:
            db.execute("DELETE FROM processed WHERE rowid IN (SELECT rowid FROM processed "
                       "WHERE call_id = ? ORDER BY rowid DESC LIMIT -1 OFFSET ?)",
                       (call_id, self._max_keys_per_call))
        db.execute("DELETE FROM processed WHERE rowid IN (SELECT rowid FROM processed "
                   "ORDER BY rowid DESC LIMIT -1 OFFSET ?)", (self._max_keys_total,))
        return True

    def is_processed(self, key: str) -> bool:
        with self._using("is_processed") as db:
            return db.execute("SELECT 1 FROM processed WHERE key = ?", (key,)).fetchone() is not None

    def prune(self, max_terminal_calls: int = MAX_TERMINAL_CALLS) -> int:
        with self._using("prune") as db, self._transaction(db):
            cur = db.execute(
                "DELETE FROM calls WHERE rowid IN (SELECT rowid FROM calls WHERE terminal = 1 "
                "ORDER BY started_at DESC, rowid DESC LIMIT -1 OFFSET ?)",
                (max(0, max_terminal_calls),))
            return max(0, cur.rowcount)

    def close(self) -> None:
        with self._lock:
            if self._db is not None and not self._closed and (
                    self._mirror_seq != self._saved_mirror_seq):
                # Note how far the log got, so a log rotated while we are down is
                # continued from here. Best effort: it only avoids duplicate lines.
                with contextlib.suppress(sqlite3.Error), self._transaction(self._db):
                    pass
            self._closed = True
            for closer in (self._mirror, self._db, self._xlock):
                if closer is not None:
                    with contextlib.suppress(Exception):
                        closer.close()
            self._mirror = self._db = self._xlock = None

    def __enter__(self) -> SqliteCallStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
