"""Readers of calls.jsonl: read_events, tail_lines and follow."""

from __future__ import annotations

import json
import os
import queue
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from voicecall.errors import StoreError
from voicecall.store import eventlog, follow, read_events, tail_lines


def _line(seq: int, **fields: Any) -> bytes:
    record = {"v": 1, "seq": seq, "ts": float(seq), "type": "x", "callId": "c", **fields}
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def _append(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


@pytest.fixture
def log(tmp_path: Path) -> Path:
    path = tmp_path / "calls.jsonl"
    path.write_bytes(b"")
    return path


def test_read_events_skips_and_counts_malformed(log):
    log.write_bytes(_line(1) + b"not json\n" + b"\n" + b"[1,2]\n" + _line(2, text="a\u2028b")
                    + b'{"legacy": true}\n' + b'{"v":1,"seq":3,"ty')  # torn tail: not yet a line
    reader = read_events(log)
    records = list(reader)
    assert [r.get("seq") for r in records] == [1, 2, None]
    assert records[1]["text"] == "a\u2028b"  # U+2028 does not split a line
    assert reader.malformed == 2


def test_read_events_since_seq(log):
    log.write_bytes(b"".join(_line(i) for i in range(1, 6)) + b'{"legacy": true}\n')
    assert [r["seq"] for r in read_events(log, since_seq=3)] == [4, 5]
    assert len(list(read_events(log))) == 6


def test_read_events_missing_file(tmp_path):
    with pytest.raises(StoreError, match="not found"):
        read_events(tmp_path / "nope.jsonl")


def test_read_events_drops_overlong_line(log, monkeypatch):
    monkeypatch.setattr("voicecall.store._jsonl.MAX_LINE_BYTES", 100)
    log.write_bytes(_line(1) + _line(2, text="y" * 500) + _line(3))
    reader = read_events(log)
    assert [r["seq"] for r in reader] == [1, 3]
    assert reader.malformed == 1


def test_tail_lines(log):
    # Long lines push the reader across its 64 KiB chunk boundaries.
    log.write_bytes(b"".join(_line(i, text="z" * (i * 997)) for i in range(1, 41))
                    + b"garbage\n" + b'{"partial')
    assert [r["seq"] for r in tail_lines(log, 3)] == [38, 39, 40]
    assert [r["seq"] for r in tail_lines(log, 100)] == list(range(1, 41))
    assert tail_lines(log, 0) == []
    assert tail_lines(log, 1)[0]["text"] == "z" * 40 * 997


def test_tail_lines_empty_and_missing(log, tmp_path):
    assert tail_lines(log, 5) == []
    with pytest.raises(StoreError):
        tail_lines(tmp_path / "missing.jsonl", 5)


class Follower:
    """Runs ``follow`` in a thread and hands records over through a queue."""

    def __init__(self, path: Path, **kwargs: Any) -> None:
        self.stop = threading.Event()
        self.records: queue.Queue[dict[str, Any]] = queue.Queue()
        self._iter = follow(path, poll_s=0.01, stop=self.stop, **kwargs)
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for record in self._iter:
            self.records.put(record)

    def get(self, timeout: float = 3.0) -> dict[str, Any]:
        return self.records.get(timeout=timeout)

    def nothing_for(self, seconds: float) -> bool:
        try:
            self.records.get(timeout=seconds)
        except queue.Empty:
            return True
        return False

    def close(self) -> None:
        self.stop.set()
        self._thread.join(timeout=3.0)
        assert not self._thread.is_alive()


@pytest.fixture
def follower() -> Iterator[Callable[..., Follower]]:
    started: list[Follower] = []

    def start(path: Path, **kwargs: Any) -> Follower:
        f = Follower(path, **kwargs)
        started.append(f)
        return f

    yield start
    for f in started:
        f.close()


def _settle(f: Follower) -> None:
    """Let the follower reach the end of the file before the test writes more."""
    assert f.nothing_for(0.1)


def test_follow_sees_new_lines_only_by_default(log, follower):
    log.write_bytes(_line(1) + _line(2))
    f = follower(log)
    _settle(f)
    _append(log, _line(3) + b"oops\n" + _line(4))
    assert [f.get()["seq"], f.get()["seq"]] == [3, 4]


def test_follow_from_start(log, follower):
    log.write_bytes(_line(1) + _line(2))
    f = follower(log, start_at_end=False)
    assert [f.get()["seq"], f.get()["seq"]] == [1, 2]


def test_follow_start_at_end_keeps_a_line_in_progress(log, follower):
    whole = _line(2)
    log.write_bytes(_line(1) + whole[:10])  # a writer is half-way through line 2
    f = follower(log)
    _settle(f)
    _append(log, whole[10:])
    assert f.get()["seq"] == 2


def test_follow_waits_for_the_newline(log, follower):
    f = follower(log)
    _settle(f)
    whole = _line(1, text="partial")
    _append(log, whole[:-5])
    assert f.nothing_for(0.2)
    _append(log, whole[-5:])
    assert f.get()["text"] == "partial"


def test_follow_survives_truncation(log, follower):
    f = follower(log)
    _settle(f)
    _append(log, _line(1) + _line(2))
    assert [f.get()["seq"], f.get()["seq"]] == [1, 2]
    with open(log, "r+b") as fh:
        fh.truncate(0)
    _settle(f)
    _append(log, _line(3))
    assert f.get()["seq"] == 3


def test_follow_survives_rotation(log, follower):
    f = follower(log)
    _settle(f)
    _append(log, _line(1))
    assert f.get()["seq"] == 1
    log.rename(log.with_suffix(".jsonl.1"))
    _append(log.with_suffix(".jsonl.1"), _line(2))  # a late write to the old file
    log.write_bytes(_line(3))
    assert [f.get()["seq"], f.get()["seq"]] == [2, 3]


def test_follow_waits_for_the_file(tmp_path, follower):
    path = tmp_path / "later.jsonl"
    f = follower(path)
    _settle(f)
    path.write_bytes(_line(1))
    assert f.get()["seq"] == 1


def test_follow_drops_overlong_line(log, follower, monkeypatch):
    monkeypatch.setattr(eventlog, "MAX_LINE_BYTES", 200)
    f = follower(log)
    _settle(f)
    _append(log, _line(1, text="y" * 70_000) + _line(2))
    assert f.get()["seq"] == 2


def test_follow_with_stop_callable(log):
    polls = iter(range(100))
    stop = lambda: next(polls) >= 5  # noqa: E731
    log.write_bytes(_line(1))
    assert [r["seq"] for r in follow(log, poll_s=0.001, stop=stop, start_at_end=False)] == [1]


def test_follow_closes_its_file(log):
    log.write_bytes(_line(1))
    gen = follow(log, poll_s=0.001, start_at_end=False)
    assert next(gen)["seq"] == 1
    fds_before = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 0
    gen.close()
    if fds_before:
        assert len(os.listdir("/proc/self/fd")) == fds_before - 1
