"""SqliteCallStore: snapshots, events, lookups, dedupe keys, permissions, failures."""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
from pathlib import Path

import pytest

from voicecall.calls.model import CallState, TranscriptEntry
from voicecall.errors import StoreError
from voicecall.store import (
    MAX_KEYS_PER_CALL,
    MAX_KEYS_TOTAL,
    SCHEMA_VERSION,
    CallStore,
    SqliteCallStore,
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _db_events(store_dir: Path) -> list[tuple[int, str | None, str]]:
    with sqlite3.connect(store_dir / "calls.sqlite3") as db:
        return db.execute("SELECT seq, call_id, type FROM events ORDER BY seq").fetchall()


def test_is_a_call_store(store):
    assert store.path == store.directory / "calls.sqlite3"
    assert store.events_path == store.directory / "calls.jsonl"
    assert isinstance(store, CallStore)


def test_full_record_round_trips_across_reopen(store_dir, make_call):
    call = make_call(
        state=CallState.HANGUP_USER, provider_call_id="CA123", session_key="agent:main:x",
        answered_at=1_700_000_010.5, ended_at=1_700_000_099.25, end_reason=CallState.HANGUP_USER,
        number_route_key="+15550002222", mode="notify",
        transcript=(TranscriptEntry(1.0, "bot", "你好 — hello\u2028there"),
                    TranscriptEntry(2.0, "user", "hi", is_final=False)),
        dtmf=("1", "#"),
        metadata={"turnCount": 2, "nested": {"list": [1, 2.5, None, "x"]}, "flag": True})
    with SqliteCallStore(store_dir) as store:
        store.save(call)
    with SqliteCallStore(store_dir) as store:
        assert store.get(call.call_id) == call
        assert store.get("nope") is None


def test_save_returns_events_as_written(store, make_call, jsonl_lines):
    call = make_call()
    written = store.save(call, [
        {"type": "call.state", "state": "initiated", "prev": None, "seq": 99, "v": 7},
        {"type": "transcript", "speaker": "bot", "text": "hi", "ts": 123.5},
        {"type": "dtmf", "callId": None, "digits": "12", "direction": "out"},
    ])
    assert [e["seq"] for e in written] == [1, 2, 3]  # the store owns seq and v
    assert all(e["v"] == 1 for e in written)
    assert written[0]["callId"] == call.call_id and written[2]["callId"] is None
    assert written[1]["ts"] == 123.5 and isinstance(written[0]["ts"], float)
    assert written[0]["prev"] is None and "seq" in written[0]
    assert jsonl_lines(store.events_path) == written
    assert list(written[0])[:5] == ["v", "seq", "ts", "type", "callId"]
    more = store.append_events([{"type": "turn", "callId": call.call_id, "turn": 1,
                                 "kind": "auto", "latencyMs": 10, "listenWaitMs": 5}])
    assert more[0]["seq"] == 4
    assert jsonl_lines(store.events_path)[-1] == more[0]
    assert store.append_events([]) == []


def test_save_without_events_updates_snapshot_only(store, make_call):
    call = make_call()
    assert store.save(call) == []
    store.save(call.replace(state=CallState.RINGING))
    assert store.get(call.call_id).state is CallState.RINGING
    assert store.events_path.read_bytes() == b""


def test_snapshot_and_events_commit_together(store, store_dir, make_call, jsonl_lines):
    call = make_call()
    store.save(call, [{"type": "call.state", "state": "initiated"}])
    with sqlite3.connect(store.path) as db:  # make the second insert of the next save fail
        db.execute("CREATE TRIGGER boom BEFORE INSERT ON events WHEN NEW.type = 'boom' "
                   "BEGIN SELECT RAISE(ABORT, 'boom'); END")
    answered = call.replace(state=CallState.ANSWERED)
    with pytest.raises(StoreError, match="boom"):
        store.save(answered, [{"type": "call.state", "state": "answered"}, {"type": "boom"}])
    assert store.get(call.call_id) == call  # the snapshot did not move
    assert _db_events(store_dir) == [(1, call.call_id, "call.state")]
    assert [e["seq"] for e in jsonl_lines(store.events_path)] == [1]
    # The store is still usable and seq stays gap-free.
    assert store.save(answered, [{"type": "call.state", "state": "answered"}])[0]["seq"] == 2
    assert store.get(call.call_id) == answered


@pytest.mark.parametrize("event, message", [
    ({"state": "x"}, "type"),
    ({"type": ""}, "type"),
    ({"type": "x", "ts": "yesterday"}, "ts"),
    ({"type": "x", "ts": float("nan")}, "ts"),
    ({"type": "x", "callId": 5}, "callId"),
    ({"type": "x", "obj": object()}, "serialisable"),
    ({"type": "x", "latencyMs": float("inf")}, "serialisable"),
])
def test_bad_event_writes_nothing(store, make_call, event, message):
    call = make_call()
    store.save(call)
    with pytest.raises(StoreError, match=message):
        store.save(call.replace(state=CallState.RINGING), [{"type": "ok"}, event])
    assert store.get(call.call_id).state is CallState.INITIATED
    assert store.events_path.read_bytes() == b""


def test_unserialisable_call_is_refused(store, make_call):
    call = make_call(metadata={"bad": object()})
    with pytest.raises(StoreError, match=call.call_id):
        store.save(call)
    assert store.get(call.call_id) is None


def test_list_is_newest_first_with_filters(store, make_call):
    old = make_call("old", started_at=100.0, state=CallState.COMPLETED)
    mid = make_call("mid", started_at=200.0, state=CallState.LISTENING)
    new = make_call("new", started_at=300.0)
    for call in (mid, new, old):
        store.save(call)
    assert [c.call_id for c in store.list()] == ["new", "mid", "old"]
    assert [c.call_id for c in store.list(limit=2)] == ["new", "mid"]
    assert [c.call_id for c in store.list(limit=None)] == ["new", "mid", "old"]
    assert [c.call_id for c in store.list(active_only=True)] == ["new", "mid"]
    assert [c.call_id for c in store.load_active()] == ["mid", "new"]
    store.save(mid.replace(state=CallState.TIMEOUT, end_reason=CallState.TIMEOUT))
    assert [c.call_id for c in store.load_active()] == ["new"]


def test_provider_id_lookup_follows_changes(store, make_call):
    call = make_call(provider_call_id="request-uuid")
    store.save(call)
    assert store.get_by_provider_id("request-uuid") == call
    moved = call.replace(provider_call_id="call-uuid")  # Plivo swaps ids after answer
    store.save(moved)
    assert store.get_by_provider_id("request-uuid") is None
    assert store.get_by_provider_id("call-uuid") == moved
    assert store.get_by_provider_id("unknown") is None


def test_provider_id_lookup_prefers_live_call(store, make_call):
    ended = make_call("ended", provider_call_id="P", state=CallState.COMPLETED, started_at=500.0)
    live = make_call("live", provider_call_id="P", started_at=400.0)
    store.save(ended)
    store.save(live)
    assert store.get_by_provider_id("P").call_id == "live"


def test_processed_keys_dedupe_and_persist(store_dir):
    with SqliteCallStore(store_dir) as store:
        assert store.mark_processed("evt-1", "c1") is True
        assert store.mark_processed("evt-1", "c1") is False
        assert store.mark_processed("evt-2", None) is True
        assert store.is_processed("evt-1") and not store.is_processed("evt-3")
    with SqliteCallStore(store_dir) as store:
        assert store.is_processed("evt-1") and store.is_processed("evt-2")
        assert store.mark_processed("evt-1", "c1") is False


def test_default_key_caps_match_the_reference():
    assert (MAX_KEYS_PER_CALL, MAX_KEYS_TOTAL) == (500, 10_000)


def test_processed_keys_evict_oldest_per_call(store_dir):
    with SqliteCallStore(store_dir, max_keys_per_call=3) as store:
        for i in range(5):
            store.mark_processed(f"a{i}", "A")
        store.mark_processed("b0", "B")
        assert [store.is_processed(f"a{i}") for i in range(5)] == [False, False, True, True, True]
        assert store.is_processed("b0")


def test_processed_keys_evict_oldest_overall(store_dir):
    with SqliteCallStore(store_dir, max_keys_total=4) as store:
        keys = [("k0", "A"), ("k1", None), ("k2", "B"), ("k3", "A"), ("k4", "C"), ("k5", None)]
        for key, call_id in keys:
            store.mark_processed(key, call_id)
        assert [store.is_processed(k) for k, _ in keys] == [False, False, True, True, True, True]
        # An evicted key is new again (that is what a cap means).
        assert store.mark_processed("k0", "A") is True


def test_files_are_private(tmp_path, make_call):
    old_umask = os.umask(0)  # even a permissive umask must not widen them
    try:
        directory = tmp_path / "a" / "b"
        with SqliteCallStore(directory) as store:
            store.save(make_call(), [{"type": "x"}])
            assert _mode(directory) == 0o700
            for name in ("calls.sqlite3", "calls.jsonl", "calls.sqlite3-wal"):
                assert _mode(directory / name) == 0o600, name
    finally:
        os.umask(old_umask)


def test_existing_loose_files_are_tightened(store_dir):
    store_dir.mkdir(parents=True)
    (store_dir / "calls.jsonl").write_bytes(b"")
    os.chmod(store_dir / "calls.jsonl", 0o644)
    with SqliteCallStore(store_dir):
        assert _mode(store_dir / "calls.jsonl") == 0o600


def test_wal_and_schema_version(store):
    with sqlite3.connect(store.path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"calls", "events", "processed", "meta"} <= tables


def test_corrupt_database_is_reported_not_replaced(store_dir):
    store_dir.mkdir(parents=True)
    garbage = b"this is not a sqlite database" * 100
    (store_dir / "calls.sqlite3").write_bytes(garbage)
    with pytest.raises(StoreError) as info:
        SqliteCallStore(store_dir)
    assert str(store_dir / "calls.sqlite3") in str(info.value)
    assert (store_dir / "calls.sqlite3").read_bytes() == garbage


def test_newer_schema_is_refused(store_dir):
    SqliteCallStore(store_dir).close()
    with sqlite3.connect(store_dir / "calls.sqlite3") as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(StoreError, match="newer"):
        SqliteCallStore(store_dir)


def test_prune_drops_oldest_terminal_snapshots_only(store_dir, make_call, jsonl_lines):
    with SqliteCallStore(store_dir) as store:
        for i in range(5):
            store.save(make_call(f"t{i}", state=CallState.COMPLETED, started_at=100.0 + i),
                       [{"type": "call.state", "state": "completed"}])
        store.save(make_call("live-old", started_at=1.0))
        assert store.prune(max_terminal_calls=2) == 3
        assert {c.call_id for c in store.list(limit=None)} == {"t3", "t4", "live-old"}
        assert store.prune(max_terminal_calls=2) == 0
        assert len(jsonl_lines(store.events_path)) == 5  # events are history: kept
    with SqliteCallStore(store_dir, max_terminal_calls=1) as store:  # applied on open
        assert {c.call_id for c in store.list(limit=None)} == {"t4", "live-old"}


def test_closed_store_refuses_work(store_dir, make_call):
    store = SqliteCallStore(store_dir)
    store.close()
    store.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        store.save(make_call())
    with pytest.raises(StoreError, match="closed"):
        store.get("x")


def test_concurrent_threads_keep_log_and_table_identical(store, store_dir, make_call,
                                                          jsonl_lines):
    errors: list[BaseException] = []

    def worker(name: str) -> None:
        try:
            for i in range(20):
                store.save(make_call(f"{name}-{i}"), [{"type": "call.state", "i": i}])
                store.mark_processed(f"{name}-{i}", f"{name}-{i}")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(f"w{n}",)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors
    seqs = [e["seq"] for e in jsonl_lines(store.events_path)]
    assert seqs == list(range(1, 81))
    assert [row[0] for row in _db_events(store_dir)] == seqs


def test_two_stores_on_one_directory_interleave_cleanly(store_dir, make_call, jsonl_lines):
    # Same code path as two processes: each has its own flock descriptor.
    with SqliteCallStore(store_dir) as a, SqliteCallStore(store_dir) as b:
        for i in range(10):
            (a if i % 2 else b).save(make_call(f"c{i}"), [{"type": "x", "i": i}])
        assert a.get("c0") is not None and b.get("c1") is not None
    assert [e["i"] for e in jsonl_lines(store_dir / "calls.jsonl")] == list(range(10))
    assert [e["seq"] for e in jsonl_lines(store_dir / "calls.jsonl")] == list(range(1, 11))


def test_dedupe_key_commits_with_the_snapshot(store_dir, make_call):
    call = make_call()
    with SqliteCallStore(store_dir) as s:
        s.save(call, [{"type": "call.state"}], processed_key="webhook-1")
        assert s.is_processed("webhook-1")
        # A later save naming the same key (a retried delivery) is harmless.
        s.save(call.replace(state=CallState.RINGING), [], processed_key="webhook-1")
    with SqliteCallStore(store_dir) as reopened:
        assert reopened.is_processed("webhook-1")
        assert reopened.get(call.call_id).state is CallState.RINGING


def test_failed_save_does_not_commit_its_dedupe_key(store_dir, make_call):
    call = make_call()
    with SqliteCallStore(store_dir) as s:
        with pytest.raises(StoreError):
            s.save(call, [{"type": "x", "bad": float("nan")}], processed_key="webhook-2")
        assert not s.is_processed("webhook-2")
        assert s.get(call.call_id) is None
