"""The gateway's own share of one conversational turn, against Pipecat, in the same run.

What is timed, on both sides, with STT, agent and TTS all instant:

    final transcript delivered to the pipeline
      -> first outbound audio frame of the reply received by the fake Twilio

**voicecall**: the real gateway (``run_gateway``, webhook + Media Streams listener,
call manager, scripted agent streaming its reply, sentence splitting, TTS,
paced playback) dialled by ``voicecall.testing.fake_twilio.FakeTwilio`` over
loopback, streaming config with ``fake_speech.ScriptedSTT`` (energy-endpointed
finals, ready at once) and ``fake_speech.ToneTTS``. The clock starts when the
STT session hands the gateway its ``final`` event and stops when the fake's
stream reader gets the first ``media`` message after it.

**pipecat** (``_peer_pipecat.py``): Pipecat's ``FastAPIWebsocketTransport`` +
``TwilioFrameSerializer`` on uvicorn, an ``STTService`` with the same energy
endpointing, an instant LLM processor and an instant ``TTSService``, driven by
a fake Twilio client. The clock starts when the ``TranscriptionFrame`` is pushed
and stops when the client gets the first ``media`` message after it.

Both sides get the same caller audio, transcript, reply text and tone audio,
run in their own fresh interpreter, alternating over ``--rounds``, with their
own fake Twilio in the same event loop. Latencies only, as figures and ratios:
nothing here asserts an absolute time.

    .venv/bin/python bench/bench_turn.py            # both sides
    .venv/bin/python bench/bench_turn.py --no-peer  # voicecall only
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from voicecall.audio.g711 import MULAW_SILENCE, SAMPLE_RATE
from voicecall.speech import registry
from voicecall.speech.stt.base import SttEvent
from voicecall.testing import fake_speech

MARKER = "BENCH_TURN_JSON "
TRANSCRIPT = "What time do you open today?"
# Two sentences; the first (>= 12 characters) is spoken while the agent is still writing.
REPLY = "Sure, we open at nine. See you."
GREETING = "Hello, this is the clinic."
WORD_MS = 20  # ToneTTS: a 20 ms tone + 40 ms gap per word
CALLER_SPEECH_MS = 300
CALLER_TAIL_FRAMES = 10  # exactly what ScriptedSTT's EnergyVad(release_frames=10) needs
TURN_GAP_S = 0.1  # quiet after a reply before the caller speaks again (outside the timing)
SIDE_TIMEOUT_S = 100.0
TIME_BUDGET_S = 110.0  # no new round starts if it could not finish within this

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "twilio-auth-token-for-bench"
PUBLIC_HOST = "voice.example.com"
OUR_NUMBER = "+15550009999"
CALLEE = "+15550002222"


# -- shared inputs (both sides) --------------------------------------------------------

def caller_audio() -> bytes:
    """One caller utterance, mu-law: a tone, then just enough silence to end it."""
    speech = fake_speech.tone(CALLER_SPEECH_MS, freq=300.0)
    return speech + bytes([MULAW_SILENCE]) * (CALLER_TAIL_FRAMES * SAMPLE_RATE // 50)


def reply_pcm(text: str) -> bytes:
    """ToneTTS(word_ms=WORD_MS)'s audio for ``text``, as PCM16 for Pipecat's TTS."""
    t = np.arange(SAMPLE_RATE * WORD_MS // 1000) / SAMPLE_RATE
    word = (np.sin(2 * np.pi * 440.0 * t) * 0.3 * 32767).astype(np.int16)
    gap = np.zeros(SAMPLE_RATE * fake_speech.GAP_MS // 1000, dtype=np.int16)
    return b"".join(word.tobytes() + gap.tobytes() for _ in text.split())


# -- our side -------------------------------------------------------------------------

class Probe:
    """Pairs each final handed to the gateway with the first reply frame the fake receives."""

    def __init__(self) -> None:
        self.pending: float | None = None
        self.samples: list[float] = []
        self.expected = 0
        self.done = asyncio.Event()

    def expect(self, count: int) -> None:
        self.expected = count
        self.done.clear()

    def final(self) -> None:
        self.pending = time.perf_counter()

    def inbound(self, now: float, message: str | bytes) -> None:
        if self.pending is None or not isinstance(message, str):
            return
        if json.loads(message).get("event") == "media":
            self.samples.append((now - self.pending) * 1000)
            self.pending = None
            if len(self.samples) >= self.expected:
                self.done.set()


class _TimedSession:
    """An STT session that notes when each ``final`` event reaches its consumer."""

    def __init__(self, inner: Any, probe: Probe) -> None:
        self._inner = inner
        self._probe = probe

    async def wait_ready(self) -> None:
        await self._inner.wait_ready()

    async def send_audio(self, mulaw: bytes) -> None:
        await self._inner.send_audio(mulaw)

    async def events(self) -> AsyncIterator[SttEvent]:
        async for ev in self._inner.events():
            if ev.type == "final":
                self._probe.final()
            yield ev

    async def aclose(self) -> None:
        await self._inner.aclose()


class TimedSTT(fake_speech.ScriptedSTT):
    def __init__(self, probe: Probe) -> None:
        super().__init__(ready_delay_s=0.0)
        self.probe = probe

    def next_transcript(self) -> str:
        return TRANSCRIPT

    async def open(self, call_id: str) -> Any:
        return _TimedSession(await super().open(call_id), self.probe)


@contextlib.contextmanager
def timed_fake_streams(probe: Probe) -> Iterator[None]:
    """Note the arrival of every frame the gateway sends to the fake Twilio (test fake only)."""
    from voicecall.testing.fake_twilio import _engine, _stream

    class TimedStreamSession(_stream.StreamSession):
        async def _handle(self, message: str | bytes) -> None:
            probe.inbound(time.perf_counter(), message)
            await super()._handle(message)

    original = _engine.StreamSession
    _engine.StreamSession = TimedStreamSession  # type: ignore[misc]
    try:
        yield
    finally:
        _engine.StreamSession = original  # type: ignore[misc]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def run_ours(calls: int, turns_per_call: int, warmup_turns: int,
                   turn_gap: float) -> dict[str, Any]:
    import httpx

    from voicecall.config import load_config
    from voicecall.gateway.server import Gateway, run_gateway
    from voicecall.gateway.token import read_token
    from voicecall.testing.fake_twilio import CalleeScript, FakeTwilio, Timings

    probe = Probe()
    stt = TimedSTT(probe)
    tts = fake_speech.ToneTTS(word_ms=WORD_MS)
    fake_speech.register(stt, tts)
    utterance = caller_audio()
    home = Path(tempfile.mkdtemp(prefix="bench-turn-"))
    script = home / "script.json5"
    script.write_text(json.dumps({"rules": [{"match": ".", "reply": REPLY}]}))
    webhook_port = _free_port()
    fake = FakeTwilio(ACCOUNT_SID, AUTH_TOKEN,
                      timings=Timings(realtime=False, turn_gap=turn_gap),
                      public_to_local={PUBLIC_HOST: f"127.0.0.1:{webhook_port}"})
    samples: list[float] = []
    measured_calls: list[str] = []
    with timed_fake_streams(probe):
        async with fake:
            cfg = {
                "provider": "twilio", "fromNumber": OUR_NUMBER,
                "publicUrl": f"https://{PUBLIC_HOST}/voice/webhook",
                "twilio": {"accountSid": ACCOUNT_SID, "authToken": AUTH_TOKEN,
                           "apiBaseUrl": fake.api_base},
                "serve": {"port": webhook_port}, "control": {"port": _free_port()},
                "outbound": {"notifyHangupDelaySec": 0},
                "streaming": {"enabled": True, "provider": "fake"},
                "tts": {"provider": "fake"},
                "responder": {"kind": "scripted", "script": str(script)},
            }
            path = home / "config.json5"
            path.write_text(json.dumps(cfg))
            stop = asyncio.Event()
            ready: asyncio.Future[Gateway] = asyncio.get_running_loop().create_future()
            server = asyncio.create_task(run_gateway(load_config(path, env={}), home, stop=stop,
                                                     ready=ready, install_signals=False))
            try:
                gateway = await asyncio.wait_for(ready, 10)
                manager = gateway.runtime.manager
                if manager is None:
                    raise RuntimeError(f"gateway did not start: {gateway.runtime.setup_error}")
                token = read_token(home)
                async with httpx.AsyncClient(timeout=10, trust_env=False) as http:
                    plan = [warmup_turns] if warmup_turns else []
                    plan += [turns_per_call] * calls
                    for i, turns in enumerate(plan):
                        fake.callee = CalleeScript(replies=[TRANSCRIPT] * turns,
                                                   audio=lambda _text: utterance,
                                                   hangup_when_done=True)
                        before = len(probe.samples)
                        probe.expect(before + turns)
                        resp = await http.post(gateway.control_url, headers={
                            "Authorization": f"Bearer {token}"}, json={
                            "jsonrpc": "2.0", "id": 1, "method": "voicecall.initiate",
                            "params": {"to": CALLEE, "message": GREETING,
                                       "mode": "conversation"}})
                        doc = resp.json()
                        if "error" in doc:
                            raise RuntimeError(f"initiate failed: {doc['error']}")
                        call_id = doc["result"]["callId"]
                        # No polling while turns are timed: wait for the last reply's first frame.
                        await asyncio.wait_for(probe.done.wait(), 10 + turns * 3)
                        deadline = time.monotonic() + 10
                        while not ((c := manager.get(call_id)) is not None and c.terminal):
                            if time.monotonic() > deadline:
                                raise RuntimeError(f"call {call_id} did not finish")
                            await asyncio.sleep(0.05)
                        if warmup_turns and i == 0:
                            continue
                        samples.extend(probe.samples[before:])
                        measured_calls.append(call_id)
            finally:
                stop.set()
                await asyncio.wait_for(server, 15)
            clears = sum(len(c.clears) for c in fake.calls.values())
    registry.unregister("fake")
    # The gateway's own per-turn records, in turn order (calls ran one after another).
    lines = (home / "calls.jsonl").read_text().splitlines()
    shutil.rmtree(home, ignore_errors=True)
    records = [json.loads(line) for line in lines if line.strip()]
    breakdown = [r.get("breakdown") or {} for r in records
                 if r.get("type") == "turn" and r.get("callId") in measured_calls]
    return {
        "firstFrameMs": samples,
        "internalFirstFrameMs": [b["firstFrameMs"] for b in breakdown if "firstFrameMs" in b],
        "clears": clears,
    }


async def run_peer(calls: int, turns_per_call: int, warmup_turns: int, turn_gap: float,
                   worker_defaults: bool = False) -> dict[str, Any]:
    import _peer_pipecat

    return await _peer_pipecat.run(calls=calls, turns_per_call=turns_per_call,
                                   warmup_turns=warmup_turns, transcript=TRANSCRIPT, reply=REPLY,
                                   caller_audio=caller_audio(), pcm_for=reply_pcm,
                                   turn_gap=turn_gap, worker_defaults=worker_defaults)


# -- orchestration ------------------------------------------------------------------------

SIDES = {
    "ours": "voicecall",
    "peer": "pipecat, lean worker",
    "peer-defaults": "pipecat, worker defaults",
}


def peer_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("pipecat", "fastapi"))


def _child(side: str, args: argparse.Namespace, calls: int,
           timeout: float) -> dict[str, Any]:
    """Run one side in a fresh interpreter; its figures come back as one JSON line."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--side", side,
           "--calls", str(calls), "--turns", str(calls * args.turns_per_call),
           "--warmup", str(args.warmup), "--turn-gap", str(args.turn_gap)]
    env = {**os.environ, "LOGURU_LEVEL": os.environ.get("LOGURU_LEVEL", "WARNING")}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                              check=False)
    except subprocess.TimeoutExpired:
        raise SystemExit(f"{side} side did not finish within {timeout:.0f} s") from None
    for line in proc.stdout.splitlines():
        if line.startswith(MARKER):
            return dict(json.loads(line[len(MARKER):]))
    sys.stderr.write(proc.stderr[-4000:])
    raise SystemExit(f"{side} side failed (exit {proc.returncode})")


def _stats(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=float)
    return {"n": len(a), "p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)),
            "p99": float(np.percentile(a, 99)), "mean": float(a.mean())}


def _row(label: str, s: dict[str, float]) -> str:
    return (f"{label:<44}{s['n']:>5}{s['p50']:>9.2f}{s['p90']:>9.2f}"
            f"{s['p99']:>9.2f}{s['mean']:>9.2f}")


def _ratio_row(label: str, num: dict[str, float], den: dict[str, float]) -> str:
    cells = "".join(f"{num[k] / den[k]:>9.2f}" for k in ("p50", "p90", "p99", "mean"))
    return f"{label:<49}{cells}"


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--turns", type=int, default=40, help="measured turns per side (total)")
    ap.add_argument("--calls", type=int, default=4, help="calls per side (total)")
    ap.add_argument("--rounds", type=int, default=2,
                    help="alternate the sides this many times (each a fresh process)")
    ap.add_argument("--warmup", type=int, default=3, help="unmeasured turns per process")
    ap.add_argument("--turn-gap", type=float, default=TURN_GAP_S)
    ap.add_argument("--no-peer", action="store_true", help="measure voicecall only")
    ap.add_argument("--lean-peer-only", action="store_true",
                    help="skip the Pipecat run with PipelineWorker defaults")
    ap.add_argument("--side", choices=tuple(SIDES), help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.turns_per_call = max(1, args.turns // max(1, args.calls))

    if args.side is not None:  # a child process: one side, JSON out
        common = (args.calls, args.turns_per_call, args.warmup, args.turn_gap)
        coro = run_ours(*common) if args.side == "ours" else \
            run_peer(*common, worker_defaults=args.side == "peer-defaults")
        print(MARKER + json.dumps(asyncio.run(coro)), flush=True)
        return 0

    rounds = max(1, min(args.rounds, args.calls))
    per_round = [args.calls // rounds + (1 if r < args.calls % rounds else 0)
                 for r in range(rounds)]
    with_peer = not args.no_peer and peer_available()
    sides = ["ours"]
    if with_peer:
        sides += ["peer"] if args.lean_peer_only else ["peer", "peer-defaults"]
    started = time.perf_counter()
    got: dict[str, dict[str, Any]] = {side: {} for side in sides}
    done_rounds, slowest_round = 0, 0.0
    for calls in per_round:
        round_started = time.perf_counter()
        left = TIME_BUDGET_S - (round_started - started)
        if done_rounds and slowest_round * 1.2 > left:
            break  # report the rounds done rather than overrun the budget
        for side in sides:
            part = _child(side, args, calls, max(10.0, min(SIDE_TIMEOUT_S, left)))
            for key, value in part.items():
                if isinstance(value, list):
                    got[side].setdefault(key, []).extend(value)
                elif isinstance(value, int):
                    got[side][key] = got[side].get(key, 0) + value
                else:
                    got[side][key] = value
        done_rounds += 1
        slowest_round = max(slowest_round, time.perf_counter() - round_started)
    elapsed = time.perf_counter() - started

    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    print("One turn, the framework's own share: final transcript -> first outbound media frame")
    print("(zero-delay STT/agent/TTS stand-ins, Twilio Media Streams over 127.0.0.1; ms)")
    print(f"machine: {os.cpu_count()} CPUs ({affinity} usable), {_cpu_model()}, "
          f"{platform.system()} {platform.machine()}, python {platform.python_version()}")
    version = got.get("peer", {}).get("version", "not run")
    budget = "" if done_rounds == rounds else f" (time budget: stopped after {done_rounds})"
    print(f"pipecat-ai {version}; {rounds} alternating round(s){budget} of {', '.join(sides)}; "
          f"{args.warmup} warm-up turns per process; {elapsed:.1f} s")
    print()
    print(f"{'':<44}{'n':>5}{'p50':>9}{'p90':>9}{'p99':>9}{'mean':>9}")
    stats = {side: _stats(got[side]["firstFrameMs"]) for side in sides}
    for side in sides:
        print(_row(SIDES[side], stats[side]))
    if len(sides) > 1:
        print("ratios (peer / voicecall; above 1: voicecall is faster)")
    for side in sides[1:]:
        print(_ratio_row(f"  {SIDES[side]} / voicecall", stats[side], stats["ours"]))
    print()
    ours = got["ours"]
    internal = ours.get("internalFirstFrameMs", [])
    if internal:
        print("voicecall's own per-turn record (calls.jsonl breakdown):")
        print(_row("  firstFrameMs", _stats(internal)))
        if len(internal) == len(ours["firstFrameMs"]):
            unseen = [m - i for m, i in zip(ours["firstFrameMs"], internal, strict=True)]
            print(_row("  measured - firstFrameMs (not in the record)", _stats(unseen)))
    clears = ", ".join(f"{SIDES[side]} {got[side].get('clears', 0)}" for side in sides)
    print(f"barge-in clears during the run (expect 0): {clears}")
    if not with_peer and not args.no_peer:
        print()
        print("peer not installed: pip install pipecat-ai  "
              "(this benchmark needs its websocket extra: pip install 'pipecat-ai[websocket]')")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
