"""``voicecall demo``: the whole gateway, offline, in under a minute.

Starts the gateway on the mock carrier (real listeners on loopback), places a
conversation call over the control API, prints the transcript turn by turn
from the event log as it is written, makes sure the call ended, and prints
the latency summary.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from voicecall.cli.output import console, print_record
from voicecall.client import GatewayClient
from voicecall.config import load_config
from voicecall.errors import RpcError
from voicecall.gateway.server import Gateway, run_gateway
from voicecall.gateway.token import read_token
from voicecall.store.eventlog import latency_summary, read_events

DEMO_TO = "+15550100200"
DEMO_MESSAGE = "Hi! This is the voicecall demo calling. Is now a good time to talk?"
DEMO_LIMIT_S = 45.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def run_demo(*, keep: bool = False) -> int:
    home = Path(tempfile.mkdtemp(prefix="voicecall-demo-"))
    config = {"provider": "mock", "fromNumber": "+15550100100",
              "serve": {"port": _free_port()}, "control": {"port": _free_port()},
              "outbound": {"defaultMode": "conversation"}}
    (home / "config.json5").write_text(json.dumps(config, indent=2))
    try:
        return await _demo(home)
    finally:
        if keep:
            console.print(f"state kept in {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)


async def _demo(home: Path) -> int:
    loaded = load_config(home / "config.json5")
    stop = asyncio.Event()
    ready: asyncio.Future[Gateway] = asyncio.get_running_loop().create_future()
    server = asyncio.create_task(run_gateway(loaded, home, stop=stop, ready=ready,
                                             install_signals=False))
    try:
        gw = await asyncio.wait_for(ready, 15)
        console.print(f"[bold]voicecall demo[/] — mock carrier, gateway webhook {gw.webhook_url},"
                      f" control {gw.control_url}", markup=True)
        client = GatewayClient(gw.control_url, read_token(home))
        placed = await client.call("voicecall.initiate", {
            "to": DEMO_TO, "message": DEMO_MESSAGE, "mode": "conversation"})
        call_id = placed["callId"]
        console.print(f"placed conversation call {call_id} to the simulated callee\n")
        ended = await _follow(home / "calls.jsonl", call_id, DEMO_LIMIT_S)
        if not ended:
            with contextlib.suppress(RpcError):
                await client.call("voicecall.end", {"callId": call_id})
            ended = await _follow(home / "calls.jsonl", call_id, 5.0)
        status = await client.call("voicecall.status", {"callId": call_id})
    finally:
        stop.set()
        await server
    call = status.get("call", {})
    user_turns = sum(1 for t in call.get("transcript", []) if t["speaker"] == "user")
    _print_latency(home / "calls.jsonl")
    ok = bool(ended) and user_turns >= 2
    console.print(f"\ncall {call.get('state')} after {user_turns} caller turns: "
                  f"{'[green]demo OK[/]' if ok else '[red]demo FAILED[/]'}", markup=True)
    return 0 if ok else 1


def _records_after(path: Path, seq: int) -> list[dict[str, Any]]:
    return list(read_events(path, since_seq=seq)) if path.exists() else []


async def _follow(path: Path, call_id: str, limit_s: float) -> bool:
    """Print this call's records as they land; True once the call has ended."""
    seq = 0
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        # Read off the event loop: the gateway being demonstrated runs on it.
        for rec in await asyncio.to_thread(_records_after, path, seq):
            seq = max(seq, int(rec.get("seq", 0)))
            if rec.get("callId") != call_id:
                continue
            print_record(rec)
            if rec.get("type") == "call.state" and rec.get("reason"):
                return True
        await asyncio.sleep(0.05)
    return False


def _print_latency(path: Path) -> None:
    summary: dict[str, Any] = latency_summary(path, last=200)
    t, w = summary["turnLatency"], summary["listenWait"]
    console.print(f"\nlatency over {summary['turns']} turns: reply p50 {t['p50Ms']:.1f} ms, "
                  f"p90 {t['p90Ms']:.1f} ms, p99 {t['p99Ms']:.1f} ms; listen-wait p50 "
                  f"{w['p50Ms']:.1f} ms (mock callee reply delay included)")
