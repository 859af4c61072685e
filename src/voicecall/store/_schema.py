"""SQLite schema and its migrations, versioned by ``PRAGMA user_version``.

To change the schema: write ``_vN_to_vN+1(db)`` (plain ``db.execute`` calls,
no ``executescript``: that would commit mid-migration), register it in
``MIGRATIONS`` and bump ``SCHEMA_VERSION``. ``migrate`` runs the steps in one
transaction, so a crash leaves the old version intact.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping
from pathlib import Path

from voicecall.errors import StoreError

SCHEMA_VERSION = 1

_V1 = (
    # One snapshot per call. The scalar columns exist for the queries; the
    # record itself is ``record_json`` (Call.to_dict()).
    """CREATE TABLE calls (
        call_id TEXT PRIMARY KEY,
        provider_call_id TEXT,
        state TEXT NOT NULL,
        terminal INTEGER NOT NULL,
        started_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        record_json TEXT NOT NULL
    )""",
    "CREATE INDEX calls_provider_call_id ON calls (provider_call_id)",
    "CREATE INDEX calls_terminal_started ON calls (terminal, started_at)",
    "CREATE INDEX calls_started ON calls (started_at)",
    # The source of truth for calls.jsonl. AUTOINCREMENT: a seq is never reused,
    # even after the newest rows are deleted, so the log's seq only grows.
    # ``json`` holds the record's fields beyond the columns.
    """CREATE TABLE events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        ts REAL NOT NULL,
        call_id TEXT,
        type TEXT NOT NULL,
        json TEXT NOT NULL
    )""",
    "CREATE INDEX events_call ON events (call_id, seq)",
    # Webhook dedupe keys; rowid order is insertion order, used for eviction.
    """CREATE TABLE processed (
        key TEXT PRIMARY KEY,
        call_id TEXT,
        at REAL NOT NULL
    )""",
    "CREATE INDEX processed_call ON processed (call_id)",
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
)


def _v0_to_v1(db: sqlite3.Connection) -> None:
    for statement in _V1:
        db.execute(statement)


#: from-version -> the step that upgrades it by one.
MIGRATIONS: Mapping[int, Callable[[sqlite3.Connection], None]] = {0: _v0_to_v1}


def migrate(db: sqlite3.Connection, path: Path) -> None:
    """Bring the schema to ``SCHEMA_VERSION``. ``db`` must be in autocommit mode."""
    db.execute("BEGIN IMMEDIATE")
    try:
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"call store {path} has schema version {version}, newer than this "
                f"voicecall understands ({SCHEMA_VERSION}); upgrade voicecall")
        while version < SCHEMA_VERSION:
            MIGRATIONS[version](db)
            version += 1
        db.execute(f"PRAGMA user_version = {version:d}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
