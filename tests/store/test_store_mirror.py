"""calls.jsonl stays a complete mirror of the events table, whatever the crash."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import voicecall
from voicecall.store import SqliteCallStore, _files

_SRC = str(Path(voicecall.__file__).resolve().parents[1])


def _run_child(code: str, *args: str, **popen: object) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": _SRC}
    return subprocess.Popen([sys.executable, "-c", code, *args], env=env, text=True,
                            **popen)  # type: ignore[call-overload]


def _db_seqs(store_dir: Path) -> list[int]:
    with sqlite3.connect(store_dir / "calls.sqlite3") as db:
        return [r[0] for r in db.execute("SELECT seq FROM events ORDER BY seq")]


def test_committed_events_missing_from_log_are_appended_on_open(store_dir, make_call,
                                                                 jsonl_lines):
    with SqliteCallStore(store_dir) as store:
        expected = store.save(make_call("c1"), [{"type": "call.state", "state": "initiated"}])
    # Commit two more events the way a process that died right after COMMIT would.
    with sqlite3.connect(store_dir / "calls.sqlite3") as db:
        db.execute("INSERT INTO events (ts, call_id, type, json) VALUES "
                   "(10.5, 'c1', 'transcript', '{\"speaker\":\"user\",\"text\":\"hi\"}')")
        db.execute("INSERT INTO events (ts, call_id, type, json) VALUES (11.0, NULL, 'x', '{}')")
    assert len(jsonl_lines(store_dir / "calls.jsonl")) == 1
    with SqliteCallStore(store_dir) as store:
        assert jsonl_lines(store.events_path) == expected + [
            {"v": 1, "seq": 2, "ts": 10.5, "type": "transcript", "callId": "c1",
             "speaker": "user", "text": "hi"},
            {"v": 1, "seq": 3, "ts": 11.0, "type": "x", "callId": None},
        ]
        assert store.append_events([{"type": "y"}])[0]["seq"] == 4
    assert [e["seq"] for e in jsonl_lines(store_dir / "calls.jsonl")] == [1, 2, 3, 4]


def test_crash_between_commit_and_log_write_loses_nothing(store_dir, jsonl_lines):
    child = """
import os, sys
from voicecall.calls.model import Call, CallState
from voicecall.store import SqliteCallStore
store = SqliteCallStore(sys.argv[1])
store.save(Call("c1", "mock", "outbound", CallState.INITIATED, "+1", "+2", 1.0),
           [{"type": "call.state", "state": "initiated"}])
SqliteCallStore._write_mirror = lambda self, written: os._exit(0)  # die right after COMMIT
store.save(Call("c1", "mock", "outbound", CallState.RINGING, "+1", "+2", 1.0),
           [{"type": "call.state", "state": "ringing", "prev": "initiated"}])
os._exit(3)  # not reached
"""
    proc = _run_child(child, str(store_dir))
    assert proc.wait(timeout=20) == 0
    assert _db_seqs(store_dir) == [1, 2]
    assert [e["seq"] for e in jsonl_lines(store_dir / "calls.jsonl")] == [1]
    with SqliteCallStore(store_dir) as store:
        lines = jsonl_lines(store.events_path)
        assert [(e["seq"], e["state"]) for e in lines] == [(1, "initiated"), (2, "ringing")]
        call = store.get("c1")
        assert call is not None and call.state.value == "ringing"


@pytest.mark.parametrize("cut", [1, 17, -1])
def test_torn_last_line_is_cut_and_rewritten(store_dir, make_call, jsonl_lines, cut):
    with SqliteCallStore(store_dir) as store:
        store.save(make_call("c1"), [{"type": "a"}, {"type": "b", "text": "x" * 100}])
    log = store_dir / "calls.jsonl"
    original = log.read_bytes()
    last_start = original.rindex(b"\n", 0, len(original) - 1) + 1
    log.write_bytes(original[:last_start + cut] if cut > 0 else original[:-1])  # torn write
    with SqliteCallStore(store_dir) as store:
        assert log.read_bytes() == original  # cut, then re-appended from SQLite, identical
        store.append_events([{"type": "c"}])
    assert [e["type"] for e in jsonl_lines(log)] == ["a", "b", "c"]


def test_torn_garbage_tail_is_cut(store_dir, make_call, jsonl_lines):
    with SqliteCallStore(store_dir) as store:
        store.save(make_call("c1"), [{"type": "a"}])
    log = store_dir / "calls.jsonl"
    with open(log, "ab") as f:
        f.write(b'{"v":1,"seq":2,"ts":1.0,"ty\x00\x00\x00')  # never committed, half written
    with SqliteCallStore(store_dir) as store:
        assert store.append_events([{"type": "b"}])[0]["seq"] == 2
    assert [(e["seq"], e["type"]) for e in jsonl_lines(log)] == [(1, "a"), (2, "b")]


def test_failed_log_write_is_caught_up_by_the_next_write(store, make_call, jsonl_lines,
                                                         monkeypatch):
    real_append = _files.EventMirror.append
    calls = {"n": 0}

    def flaky(self, records):
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError(28, "No space left on device")
        return real_append(self, records)

    monkeypatch.setattr(_files.EventMirror, "append", flaky)
    first = store.save(make_call("c1"), [{"type": "a"}])  # durable in SQLite: acknowledged
    assert first[0]["seq"] == 1
    assert jsonl_lines(store.events_path) == []
    store.append_events([{"type": "b"}])
    assert [(e["seq"], e["type"]) for e in jsonl_lines(store.events_path)] == [(1, "a"), (2, "b")]


def test_log_ahead_of_database_keeps_seq_unique(store_dir, make_call, jsonl_lines):
    with SqliteCallStore(store_dir) as store:
        for i in range(3):
            store.append_events([{"type": "old", "i": i}])
    for name in ("calls.sqlite3", "calls.sqlite3-wal", "calls.sqlite3-shm"):
        (store_dir / name).unlink(missing_ok=True)  # database lost, log kept
    with SqliteCallStore(store_dir) as store:
        assert store.append_events([{"type": "new"}])[0]["seq"] == 4
    assert [e["seq"] for e in jsonl_lines(store_dir / "calls.jsonl")] == [1, 2, 3, 4]


def test_rotated_log_is_continued_not_refilled(store_dir, jsonl_lines):
    log = store_dir / "calls.jsonl"
    with SqliteCallStore(store_dir) as store:
        store.append_events([{"type": "a"}, {"type": "b"}])
        log.rename(store_dir / "calls.jsonl.1")  # rotated while running
        store.append_events([{"type": "c"}])
        assert [e["type"] for e in jsonl_lines(log)] == ["c"]
    log.rename(store_dir / "calls.jsonl.2")  # rotated while stopped
    with SqliteCallStore(store_dir) as store:
        assert jsonl_lines(log) == []
        store.append_events([{"type": "d"}])
    assert [(e["seq"], e["type"]) for e in jsonl_lines(log)] == [(4, "d")]
    assert [e["type"] for e in jsonl_lines(store_dir / "calls.jsonl.1")] == ["a", "b"]


def test_deleted_log_before_any_rotation_is_rebuilt(store_dir, jsonl_lines):
    # With no rotation on record, the log is rebuilt from the source of truth.
    SqliteCallStore(store_dir).close()
    with SqliteCallStore(store_dir) as store:
        store.append_events([{"type": "a"}])
        # Simulate a crash: the mirror position was never noted in meta.
        store._mirror_seq = store._saved_mirror_seq = 0
    with sqlite3.connect(store_dir / "calls.sqlite3") as db:
        db.execute("DELETE FROM meta")
    (store_dir / "calls.jsonl").unlink()
    with SqliteCallStore(store_dir):
        pass
    assert [e["type"] for e in jsonl_lines(store_dir / "calls.jsonl")] == ["a"]


def test_kill_9_loses_no_acknowledged_event(store_dir, jsonl_lines):
    child = """
import sys
from voicecall.calls.model import Call, CallState
from voicecall.store import SqliteCallStore
store = SqliteCallStore(sys.argv[1])
for i in range(300):
    call = Call(f"c{i}", "mock", "outbound", CallState.INITIATED, "+1", "+2", float(i))
    written = store.save(call, [{"type": "call.state", "state": "initiated"},
                                {"type": "transcript", "speaker": "bot", "text": "x" * 200}])
    print(written[-1]["seq"], flush=True)
"""
    proc = _run_child(child, str(store_dir), stdout=subprocess.PIPE)
    assert proc.stdout is not None
    watchdog = threading.Timer(5.0, proc.kill)  # bound the test even if the child stalls
    watchdog.start()
    try:
        acknowledged: list[int] = []
        deadline = time.monotonic() + 5.0
        while len(acknowledged) < 25 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            acknowledged.append(int(line))
        os.kill(proc.pid, signal.SIGKILL)
        acknowledged += [int(x) for x in proc.stdout.read().split()]
        proc.wait(timeout=5)
    finally:
        watchdog.cancel()
        proc.stdout.close()
    assert len(acknowledged) >= 25
    with SqliteCallStore(store_dir) as store:
        db_seqs = _db_seqs(store_dir)
        log_seqs = [e["seq"] for e in jsonl_lines(store.events_path)]
        assert set(acknowledged) <= set(db_seqs)
        assert set(acknowledged) <= set(log_seqs)
        assert log_seqs == db_seqs == list(range(1, len(db_seqs) + 1))
        for seq in acknowledged:
            assert store.get(f"c{seq // 2 - 1}") is not None


def test_log_lines_are_compact_single_lines(store, make_call):
    store.save(make_call("c1"), [{"type": "transcript", "text": "a\nb\u2028c 你好"}])
    data = store.events_path.read_bytes()
    assert data.count(b"\n") == 1
    assert b", " not in data and b'": ' not in data
    assert json.loads(data)["text"] == "a\nb\u2028c 你好"
