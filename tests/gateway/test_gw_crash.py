"""`kill -9` of `voicecall serve` mid-call loses no acknowledged record; restart reaps the call.

The gateway runs as a real child process (the console script), so the kill is
a real SIGKILL with no chance to flush or clean up anything.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from gw_helpers import CALLEE, free_port

from voicecall.gateway.server import gateway_file
from voicecall.gateway.token import read_token
from voicecall.store import SqliteCallStore, read_events

LIMIT_S = 18.0


def _command(config: Path) -> list[str]:
    script = Path(sys.executable).parent / "voicecall"
    base = [str(script)] if script.exists() else [sys.executable, "-m", "voicecall.cli"]
    return [*base, "--config", str(config), "serve"]


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("VOICECALL_", "TWILIO_", "TELNYX_", "PLIVO_", "OPENAI_"))}
    env["VOICECALL_HOME"] = str(home)
    return env


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def check(self, what: str) -> None:
        if time.monotonic() > self.end:
            raise AssertionError(f"timed out: {what}")


@dataclass
class Child:
    proc: subprocess.Popen[bytes]
    stderr: Path


@pytest.fixture
def children() -> Iterator[list[Child]]:
    kids: list[Child] = []
    try:
        yield kids
    finally:
        for kid in kids:
            if kid.proc.poll() is None:
                kid.proc.kill()
            kid.proc.wait(timeout=10)
            # pytest shows this only when the test fails.
            print(f"--- gateway pid {kid.proc.pid} exited {kid.proc.returncode}; stderr:\n"
                  f"{kid.stderr.read_text(errors='replace')}")


def _start(config: Path, home: Path, kids: list[Child],
           deadline: Deadline) -> tuple[subprocess.Popen[bytes], str]:
    """Start the gateway; returns it and its control URL once it is listening."""
    errors = home.parent / f"gateway-{len(kids)}.stderr"
    with open(errors, "wb") as err:  # a file, not a pipe: a chatty child never blocks
        proc = subprocess.Popen(_command(config), env=_env(home), stdout=subprocess.DEVNULL,
                                stderr=err)
    kids.append(Child(proc, errors))
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"gateway exited {proc.returncode}: {errors.read_text()}")
        try:
            info = json.loads(gateway_file(home).read_text())
            if info["pid"] == proc.pid:
                return proc, str(info["controlUrl"])
        except (OSError, ValueError, KeyError):
            pass
        deadline.check("gateway.json from the child")
        time.sleep(0.02)


def _rpc(http: httpx.Client, url: str, token: str, method: str,
         params: dict[str, Any] | None = None) -> Any:
    resp = http.post(url, json={"jsonrpc": "2.0", "id": 1, "method": method,
                                "params": params or {}},
                     headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 200, resp.text
    doc = resp.json()
    assert "result" in doc, doc
    return doc["result"]


def test_kill_9_mid_call_loses_nothing_and_restart_reaps(
        tmp_path: Path, children: list[Child]) -> None:
    deadline = Deadline(LIMIT_S)
    home = tmp_path / "home"
    home.mkdir()
    config = tmp_path / "config.json5"
    config.write_text(json.dumps({
        "provider": "mock", "fromNumber": "+15550100100",
        "serve": {"port": free_port()}, "control": {"port": free_port()},
        # The callee takes 10 s to reply: the call is live, listening, when we kill.
        "mock": {"ringDelayMs": 20, "answerDelayMs": 20, "replyDelayMs": 10000,
                 "calleeReplies": ["I'm here."]},
    }))
    message = "Hello from the crash test."

    proc, url = _start(config, home, children, deadline)
    token = read_token(home)
    assert token
    with httpx.Client(timeout=5, trust_env=False) as http:
        placed = _rpc(http, url, token, "voicecall.initiate",
                      {"to": CALLEE, "message": message, "mode": "conversation"})
        call_id = placed["callId"]
        while True:
            acked = _rpc(http, url, token, "voicecall.status", {"callId": call_id})["call"]
            if acked["state"] == "listening":
                break
            deadline.check(f"the call to be answered (state {acked['state']})")
            time.sleep(0.02)
        assert _rpc(http, url, token, "voicecall.dtmf",
                    {"callId": call_id, "digits": "42#"}) == {"success": True}
        acked = _rpc(http, url, token, "voicecall.status", {"callId": call_id})["call"]

    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=5)
    assert proc.returncode == -signal.SIGKILL

    # calls.jsonl, read before anything reopens (and repairs) the store.
    log = [r for r in read_events(home / "calls.jsonl") if r.get("callId") == call_id]
    states = [r["state"] for r in log if r["type"] == "call.state"]
    assert states == ["initiated", "ringing", "answered", "speaking", "listening"]
    assert [(r["speaker"], r["text"]) for r in log if r["type"] == "transcript"] == [
        ("bot", message)]
    assert [(r["digits"], r["direction"]) for r in log if r["type"] == "dtmf"] == [
        ("42#", "out")]
    assert [(t["speaker"], t["text"]) for t in acked["transcript"]] == [("bot", message)]

    # SQLite holds exactly the acknowledged snapshot.
    with SqliteCallStore(home) as store:
        stored = store.get(call_id)
        assert stored is not None
        assert stored.to_dict() == acked
        assert [c.call_id for c in store.load_active()] == [call_id]

    # The stale gateway.json names a dead process; the new gateway replaces it.
    proc2, url2 = _start(config, home, children, deadline)
    with httpx.Client(timeout=5, trust_env=False) as http:
        after = _rpc(http, url2, token, "voicecall.status", {"callId": call_id})["call"]
        assert _rpc(http, url2, token, "voicecall.list") == {"calls": []}
    # The in-process mock callee died with the old process: nothing to resume.
    assert after["state"] == "completed" and after["endReason"] == "completed"
    assert after["metadata"]["endNote"] == "restart: carrier status not-found"
    assert after["transcript"] == acked["transcript"] and after["dtmf"] == acked["dtmf"]
    final = [r for r in read_events(home / "calls.jsonl")
             if r.get("callId") == call_id and r["type"] == "call.state"][-1]
    assert final["state"] == "completed" and final["prev"] == "listening"

    proc2.send_signal(signal.SIGTERM)
    assert proc2.wait(timeout=max(1.0, deadline.end - time.monotonic())) == 0
    assert not gateway_file(home).exists()
