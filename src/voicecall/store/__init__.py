"""Call persistence: the ``CallStore`` protocol, the SQLite store and the ``calls.jsonl`` log.

``SqliteCallStore`` keeps call snapshots and events in SQLite and mirrors
every event to ``calls.jsonl``; ``eventlog`` reads that file without SQLite.
"""

from voicecall.store._jsonl import EVENT_VERSION
from voicecall.store._schema import SCHEMA_VERSION
from voicecall.store.base import (
    MAX_KEYS_PER_CALL,
    MAX_KEYS_TOTAL,
    MAX_TERMINAL_CALLS,
    CallStore,
)
from voicecall.store.eventlog import (
    EventReader,
    follow,
    latency_summary,
    percentile,
    read_events,
    tail_lines,
)
from voicecall.store.sqlite import SqliteCallStore

__all__ = [
    "EVENT_VERSION",
    "MAX_KEYS_PER_CALL",
    "MAX_KEYS_TOTAL",
    "MAX_TERMINAL_CALLS",
    "SCHEMA_VERSION",
    "CallStore",
    "EventReader",
    "SqliteCallStore",
    "follow",
    "latency_summary",
    "percentile",
    "read_events",
    "tail_lines",
]
