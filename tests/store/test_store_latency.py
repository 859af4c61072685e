"""percentile and latency_summary: exact numbers, each turn counted once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from voicecall.errors import UsageError
from voicecall.store import latency_summary, percentile


def _write(path: Path, records: list[Any], tail: bytes = b"") -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    path.write_bytes("".join(line + "\n" for line in lines).encode() + tail)
    return path


def _turn(call_id: str, turn: int, latency: float | None, listen: float | None = None,
          **extra: Any) -> dict[str, Any]:
    record: dict[str, Any] = {"v": 1, "seq": 0, "ts": 0.0, "type": "turn", "callId": call_id,
                              "turn": turn, "kind": "auto", **extra}
    if latency is not None:
        record["latencyMs"] = latency
    if listen is not None:
        record["listenWaitMs"] = listen
    return record


def _zeros(count: int = 0) -> dict[str, Any]:
    return {"count": count, "minMs": 0.0, "maxMs": 0.0, "avgMs": 0.0,
            "p50Ms": 0.0, "p90Ms": 0.0, "p99Ms": 0.0}


@pytest.mark.parametrize("values, p, expected", [
    ([], 50, 0.0),
    ([7.0], 0, 7.0),
    ([7.0], 99, 7.0),
    ([1, 2, 3, 4], 50, 2.0),           # ceil(2) - 1 = 1
    ([4, 1, 3, 2], 75, 3.0),           # unsorted input
    ([1, 2, 3, 4], 76, 4.0),
    (list(range(1, 11)), 50, 5.0),
    (list(range(1, 11)), 90, 9.0),
    (list(range(1, 11)), 99, 10.0),
    (list(range(1, 11)), 100, 10.0),
    (list(range(1, 11)), 0, 1.0),      # idx clamps at 0
    (list(range(1, 11)), 150, 10.0),   # idx clamps at n - 1
    (list(range(1, 101)), 99, 99.0),
])
def test_percentile_nearest_rank(values, p, expected):
    assert percentile(values, p) == expected


def test_summary_counts_each_turn_once(tmp_path):
    records: list[Any] = [{"v": 1, "seq": 1, "type": "call.state", "callId": "A",
                           "state": "answered"}]
    for turn in range(1, 11):
        if turn == 5:  # first written wrong, then rewritten: the last write wins
            records.append(_turn("A", 5, 9999.0, 9999.0, breakdown={"stt": 999}))
        records.append({"type": "transcript", "callId": "A", "speaker": "user", "text": "hi"})
        records.append(_turn("A", turn, turn * 100.0, turn * 10.0,
                             breakdown={"stt": turn, "llm": 2 * turn, "bad": "x"}))
    records.append("this is not json")
    records.append(_turn("B", 1, 50.0))  # no listen wait, no breakdown
    records.append(_turn("B", 1, 50.0))  # duplicate of the same turn
    path = _write(tmp_path / "calls.jsonl", records, tail=b'{"type":"turn","callId":"B",')

    summary = latency_summary(path)
    assert summary["turns"] == 11
    assert summary["recordsScanned"] == 1 + 1 + 10 + 10 + 2  # every parseable record
    # 50, 100, 200, ..., 1000: n = 11
    assert summary["turnLatency"] == {"count": 11, "minMs": 50.0, "maxMs": 1000.0,
                                      "avgMs": 504.5, "p50Ms": 500.0, "p90Ms": 900.0,
                                      "p99Ms": 1000.0}
    # 10, 20, ..., 100: n = 10
    assert summary["listenWait"] == {"count": 10, "minMs": 10.0, "maxMs": 100.0, "avgMs": 55.0,
                                     "p50Ms": 50.0, "p90Ms": 90.0, "p99Ms": 100.0}
    assert list(summary["breakdown"]) == ["llm", "stt"]  # non-numeric stages dropped
    assert summary["breakdown"]["stt"] == {"count": 10, "minMs": 1.0, "maxMs": 10.0,
                                           "avgMs": 5.5, "p50Ms": 5.0, "p90Ms": 9.0,
                                           "p99Ms": 10.0}
    assert summary["breakdown"]["llm"]["p90Ms"] == 18.0


def test_summary_takes_the_last_n_turns(tmp_path):
    records = [_turn("A", t, float(t)) for t in range(1, 8)]
    records.insert(5, {"type": "transcript", "callId": "A"})  # between turns 5 and 6
    records.append(_turn("A", 6, 60.0))  # rewrite of turn 6
    path = _write(tmp_path / "calls.jsonl", records)
    summary = latency_summary(path, last=3)
    # From the end: turn 6 (60), 7, the old turn 6 (skipped), the transcript, turn 5.
    assert summary["turns"] == 3
    assert summary["recordsScanned"] == 5
    assert summary["turnLatency"]["minMs"] == 5.0
    assert summary["turnLatency"]["maxMs"] == 60.0
    assert summary["turnLatency"]["avgMs"] == 24.0


def test_summary_rounds_to_a_tenth(tmp_path):
    path = _write(tmp_path / "x.jsonl", [_turn("A", 1, 1.04), _turn("A", 2, 2.06)])
    stats = latency_summary(path)["turnLatency"]
    assert (stats["minMs"], stats["maxMs"], stats["avgMs"]) == (1.0, 2.1, 1.6)


def test_summary_reads_the_reference_formats(tmp_path):
    def call(turns: int, latency: float, listen: float, call_id: str = "L1") -> dict[str, Any]:
        return {"callId": call_id, "state": "listening", "metadata": {
            "turnCount": turns, "lastTurnLatencyMs": latency, "lastTurnListenWaitMs": listen}}

    records: list[Any] = [
        call(1, 100.0, 10.0),
        {"version": 2, "persistedAt": 1, "sequence": 1, "call": call(1, 100.0, 10.0)},  # same turn
        {"version": 2, "persistedAt": 2, "sequence": 2, "call": call(2, 300.0, 30.0)},
        call(1, 200.0, 20.0, call_id="L2"),
        {"callId": "L3", "state": "ringing", "metadata": {}},  # no turn yet
        {"call": "not an object"},
    ]
    summary = latency_summary(_write(tmp_path / "legacy.jsonl", records))
    assert summary["turns"] == 3
    assert summary["recordsScanned"] == 6
    assert summary["turnLatency"]["count"] == 3
    assert summary["turnLatency"]["p50Ms"] == 200.0
    assert summary["turnLatency"]["avgMs"] == 200.0
    assert summary["listenWait"]["maxMs"] == 30.0


def test_summary_of_a_log_without_turns(tmp_path):
    path = _write(tmp_path / "calls.jsonl", [{"type": "call.state", "callId": "A"}])
    assert latency_summary(path) == {"recordsScanned": 1, "turns": 0,
                                     "turnLatency": _zeros(), "listenWait": _zeros(),
                                     "breakdown": {}}


def test_summary_ignores_non_numeric_latencies(tmp_path):
    path = _write(tmp_path / "calls.jsonl", [
        _turn("A", 1, None, None, latencyMs=True),
        _turn("A", 2, None, None, latencyMs="12"),
        _turn("A", 3, 12.0),
    ])
    summary = latency_summary(path)
    assert summary["turns"] == 1 and summary["turnLatency"]["count"] == 1


def test_summary_rejects_bad_last(tmp_path):
    path = _write(tmp_path / "calls.jsonl", [])
    with pytest.raises(UsageError):
        latency_summary(path, last=0)
