"""``voicecall latency`` and ``voicecall tail`` over constructed ``calls.jsonl`` logs."""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cli_testkit import VOICECALL, Result, clean_env

CliRunner = Callable[..., Result]


def write_log(path: Path, records: list[dict[str, Any] | str]) -> Path:
    with path.open("a") as fh:
        for rec in records:
            fh.write((rec if isinstance(rec, str) else json.dumps(rec)) + "\n")
    return path


def turn(call_id: str, n: int, latency: float, wait: float | None = None) -> dict[str, Any]:
    return {"type": "turn", "callId": call_id, "turn": n, "latencyMs": latency,
            "listenWaitMs": wait, "ts": 1_800_000_000 + n}


def hundred_turns(path: Path) -> Path:
    """Two calls x 50 turns, latencies 1..100 ms; older duplicate writes must not count."""
    stale = [turn("c1", n, 5000.0, 9000.0) for n in range(1, 31)]  # superseded writes
    records: list[dict[str, Any] | str] = [*stale]
    for n in range(1, 51):
        records.append({"type": "call.state", "callId": "c1", "state": "speaking", "ts": 1})
        records.append(turn("c1", n, float(n), 2.0 * n))
        records.append(turn("c2", n, float(50 + n), 2.0 * (50 + n)))
    records.insert(40, "{not json")
    return write_log(path, records)


# -- latency -----------------------------------------------------------------------------


def test_latency_exact_percentiles_each_turn_once(cli: CliRunner, home: Path) -> None:
    hundred_turns(home / "calls.jsonl")  # the default log: <state dir>/calls.jsonl
    res = cli("latency", "--json")
    assert res.code == 0, res.err
    out = res.json()
    assert out["turns"] == 100
    assert out["turnLatency"] == {"count": 100, "minMs": 1.0, "maxMs": 100.0, "avgMs": 50.5,
                                  "p50Ms": 50.0, "p90Ms": 90.0, "p99Ms": 99.0}
    wait = out["listenWait"]
    assert (wait["count"], wait["p50Ms"], wait["p90Ms"], wait["p99Ms"]) == (100, 100.0, 180.0,
                                                                           198.0)


def test_latency_last_n_and_file(cli: CliRunner, home: Path, tmp_path: Path) -> None:
    custom = hundred_turns(tmp_path / "elsewhere.jsonl")
    res = cli("latency", "--file", custom, "--last", "10", "--json")
    assert res.code == 0, res.err
    # The newest 10 turns: c1 and c2 turns 46..50 = 46..50 ms and 96..100 ms.
    t = res.json()["turnLatency"]
    assert (t["count"], t["minMs"], t["p50Ms"], t["p90Ms"], t["p99Ms"]) == (10, 46.0, 50.0,
                                                                           99.0, 100.0)
    # The default log (absent here) is not what --file read.
    assert cli("latency", "--json").json()["turns"] == 0


def test_latency_human_table(cli: CliRunner, home: Path) -> None:
    hundred_turns(home / "calls.jsonl")
    res = cli("latency")
    assert res.code == 0
    for text in ("Turn latency (100 turns", "p50 ms", "p90 ms", "p99 ms", "turn latency",
                 "listen wait", "50.0", "90.0", "99.0"):
        assert text in res.out
    assert "┃" in res.out  # a Rich table


def test_latency_empty_log_is_zeros(cli: CliRunner, home: Path, tmp_path: Path) -> None:
    zeros = {"count": 0, "minMs": 0.0, "maxMs": 0.0, "avgMs": 0.0, "p50Ms": 0.0, "p90Ms": 0.0,
             "p99Ms": 0.0}
    missing = cli("latency", "--json")  # no log yet at all
    assert missing.code == 0 and missing.json()["turnLatency"] == zeros
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    res = cli("latency", "--file", empty, "--json")
    assert res.code == 0
    assert res.json()["turnLatency"] == zeros and res.json()["listenWait"] == zeros


@pytest.mark.parametrize("value", ["0x10", "1e3", "-1", "+5", "١٢", "", "0"])
def test_latency_last_rejects_non_decimal(cli: CliRunner, home: Path, value: str) -> None:
    res = cli("latency", "--last", value)
    assert res.code == 2
    assert "--last" in res.err


def test_latency_missing_file_exits_2(cli: CliRunner, home: Path, tmp_path: Path) -> None:
    res = cli("latency", "--file", tmp_path / "nope.jsonl")
    assert res.code == 2 and "no such file" in res.err
    assert cli("latency", "--file", tmp_path).code == 2  # a directory is not a log


# -- tail --------------------------------------------------------------------------------


def sample_log(path: Path) -> Path:
    return write_log(path, [
        {"type": "call.state", "callId": "c1", "state": "answered", "ts": 1_800_000_000},
        {"type": "transcript", "callId": "c1", "speaker": "user",
         "text": "press [/] then [bold]9[/bold]", "ts": 1_800_000_001},
        {"type": "transcript", "callId": "c1", "speaker": "bot", "text": "Sure.",
         "ts": 1_800_000_002},
        {"type": "dtmf", "callId": "c1", "digits": "9", "direction": "out", "ts": 1_800_000_003},
        {"type": "call.recording", "callId": "c1", "url": "[x]", "ts": 1_800_000_004},
        {"type": "call.state", "callId": "c1", "state": "completed", "reason": "completed",
         "ts": 1_800_000_005},
    ])


def test_tail_no_follow_json(cli: CliRunner, home: Path) -> None:
    sample_log(home / "calls.jsonl")
    res = cli("tail", "--no-follow", "--since", "3", "--json")
    assert res.code == 0
    recs = [json.loads(line) for line in res.out.splitlines()]
    assert [r["type"] for r in recs] == ["dtmf", "call.recording", "call.state"]
    assert cli("tail", "--no-follow", "--since", "0", "--json").out == ""


def test_tail_human_prints_caller_text_literally(cli: CliRunner, home: Path) -> None:
    sample_log(home / "calls.jsonl")
    res = cli("tail", "--no-follow")
    assert res.code == 0, res.err
    assert "caller  press [/] then [bold]9[/bold]" in res.out  # not parsed as markup
    assert "bot     Sure." in res.out
    assert "dtmf out 9" in res.out
    assert '"type": "call.recording"' in res.out  # other record types are shown as JSON
    assert "state  completed" in res.out


def test_tail_usage_errors(cli: CliRunner, home: Path, tmp_path: Path) -> None:
    assert cli("tail", "--no-follow", "--file", tmp_path / "nope.jsonl").code == 2
    poll = cli("tail", "--no-follow", "--poll", "10")
    assert poll.code == 2 and "--poll" in poll.err
    assert cli("tail", "--since", "-1").code == 2


def test_tail_follows_new_records(home: Path, tmp_path: Path) -> None:
    log = sample_log(tmp_path / "events.jsonl")
    proc = subprocess.Popen([VOICECALL, "tail", "--file", str(log), "--since", "0",
                             "--poll", "50", "--json"], env=clean_env(home),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
    threading.Thread(target=pump, daemon=True).start()
    try:
        seen: dict[str, Any] | None = None
        deadline = time.monotonic() + 15
        n = 0
        # Keep appending until the follower reports one (it starts at the end of the file).
        while seen is None and time.monotonic() < deadline:
            n += 1
            write_log(log, [{"type": "transcript", "callId": "c2", "speaker": "user",
                             "text": f"new line {n}", "ts": 1_800_000_100}])
            try:
                seen = json.loads(lines.get(timeout=0.3))
            except queue.Empty:
                continue
        assert seen is not None, "tail never printed the appended record"
        assert seen["callId"] == "c2" and seen["text"].startswith("new line")
        assert proc.poll() is None  # still following
    finally:
        proc.terminate()
        proc.wait(10)
