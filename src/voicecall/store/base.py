"""The ``CallStore`` protocol: what the runtime needs from persistence.

Contract shared by every backend:

* ``save`` is atomic: the call snapshot and its events commit together or not
  at all, and an event is *acknowledged* only once ``save`` (or
  ``append_events``) returns; an acknowledged event survives a crash, both in
  the store and in ``calls.jsonl``.
* Events come back as written: ``{"v", "seq", "ts", "type", "callId", ...}``
  with ``seq`` strictly increasing across the whole log.
* The store persists; it never decides. Restoring or reaping the calls that
  ``load_active`` returns is the runtime's job.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from voicecall.calls.model import Call

#: Webhook dedupe keys kept per call and overall (the reference's limits); oldest go first.
MAX_KEYS_PER_CALL = 500
MAX_KEYS_TOTAL = 10_000
#: Terminal call snapshots kept by ``prune`` (events are never pruned).
MAX_TERMINAL_CALLS = 10_000


@runtime_checkable
class CallStore(Protocol):
    @property
    def path(self) -> Path:
        """Where the snapshots live (for SQLite, the database file)."""
        ...

    @property
    def events_path(self) -> Path:
        """The ``calls.jsonl`` event log that ``tail`` follows and ``latency`` reads."""
        ...

    def save(self, call: Call, events: Sequence[Mapping[str, Any]] = (), *,
             processed_key: str | None = None) -> builtins.list[dict[str, Any]]:
        """Upsert ``call`` and append ``events`` atomically; return the events as written.

        An event without ``callId`` gets ``call.call_id``; without ``ts``, now.
        ``processed_key`` (a webhook dedupe key) is recorded in the same transaction,
        so a replay after a crash is never applied twice.
        """
        ...

    def append_events(
            self, events: Sequence[Mapping[str, Any]]) -> builtins.list[dict[str, Any]]:
        """Append events that change no snapshot (e.g. a turn-latency record)."""
        ...

    def get(self, call_id: str) -> Call | None: ...

    def get_by_provider_id(self, provider_call_id: str) -> Call | None: ...

    def list(self, active_only: bool = False, limit: int | None = 100) -> builtins.list[Call]:
        """Calls newest first (by ``started_at``); ``limit=None`` for all."""
        ...

    def load_active(self) -> builtins.list[Call]:
        """Every non-terminal call, oldest first: the candidates to restore or reap."""
        ...

    def mark_processed(self, key: str, call_id: str | None) -> bool:
        """Record a webhook dedupe key; False if it was already recorded (a replay)."""
        ...

    def is_processed(self, key: str) -> bool: ...

    def prune(self, max_terminal_calls: int = MAX_TERMINAL_CALLS) -> int:
        """Drop the oldest terminal snapshots beyond ``max_terminal_calls``; return how many."""
        ...

    def close(self) -> None: ...
