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
REPLY = "Of course, we are open today. We close at five."
GREETING = "Hello, this is the clinic."
WORD_MS = 20  # ToneTTS: a 20 ms tone + 40 ms gap per word
CALLER_SPEECH_MS = 300
CALLER_TAIL_FRAMES = 10  # exactly what ScriptedSTT's EnergyVad(release_frames=10) needs
TURN_GAP_S = 0.1  # quiet after a reply before the caller speaks again (outside the timing)
SIDE_TIMEOUT_S = 100.0

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
    records = [json.loads(line) for line in (home / "calls.jsonl").read_text().splitlines()
               if line.strip()]
    turns = [r for r in records if r.get("type") == "turn" and r.get("callId") in measured_calls]
    breakdown = [r.get("breakdown") or {} for r in turns]
    return {
        "firstFrameMs": samples,
        "internalFirstFrameMs": [b["firstFrameMs"] for b in breakdown if "firstFrameMs" in b],
        "internalLatencyMs": [r["latencyMs"] for r in turns if r.get("latencyMs") is not None],
        "clears": clears,
    }


async def run_peer(calls: int, turns_per_call: int, warmup_turns: int,
                   turn_gap: float) -> dict[str, Any]:
    import _peer_pipecat

    return await _peer_pipecat.run(calls=calls, turns_per_call=turns_per_call,
                                   warmup_turns=warmup_turns, transcript=TRANSCRIPT, reply=REPLY,
                                   caller_audio=caller_audio(), pcm_for=reply_pcm,
                                   turn_gap=turn_gap)


# -- orchestration ------------------------------------------------------------------------

def peer_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("pipecat", "fastapi"))


def _child(side: str, args: argparse.Namespace, calls: int) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--side", side,
           "--calls", str(calls), "--turns", str(calls * args.turns_per_call),
           "--warmup", str(args.warmup), "--turn-gap", str(args.turn_gap)]
    env = {**os.environ, "LOGURU_LEVEL": os.environ.get("LOGURU_LEVEL", "WARNING")}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=SIDE_TIMEOUT_S, env=env,
                          check=False)
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
    return (f"{label:<34}{s['n']:>5}{s['p50']:>9.2f}{s['p90']:>9.2f}"
            f"{s['p99']:>9.2f}{s['mean']:>9.2f}")


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--turns", type=int, default=40, help="measured turns per side (total)")
    ap.add_argument("--calls", type=int, default=4, help="calls per side (total)")
    ap.add_argument("--rounds", type=int, default=2,
                    help="alternate voicecall/pipecat this many times")
    ap.add_argument("--warmup", type=int, default=3, help="unmeasured turns per process")
    ap.add_argument("--turn-gap", type=float, default=TURN_GAP_S)
    ap.add_argument("--no-peer", action="store_true", help="measure voicecall only")
    ap.add_argument("--side", choices=("ours", "peer"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.turns_per_call = max(1, args.turns // max(1, args.calls))

    if args.side is not None:  # a child process: one side, JSON out
        runner = run_ours if args.side == "ours" else run_peer
        result = asyncio.run(runner(args.calls, args.turns_per_call, args.warmup,
                                    args.turn_gap))
        print(MARKER + json.dumps(result), flush=True)
        return 0

    rounds = max(1, min(args.rounds, args.calls))
    per_round = [args.calls // rounds + (1 if r < args.calls % rounds else 0)
                 for r in range(rounds)]
    with_peer = not args.no_peer and peer_available()
    started = time.perf_counter()
    ours: dict[str, list[float]] = {"firstFrameMs": [], "internalFirstFrameMs": [],
                                    "internalLatencyMs": []}
    peer: list[float] = []
    clears = {"ours": 0, "peer": 0}
    peer_version = "-"
    for calls in per_round:
        got = _child("ours", args, calls)
        for key in ours:
            ours[key].extend(got[key])
        clears["ours"] += got["clears"]
        if with_peer:
            got = _child("peer", args, calls)
            peer.extend(got["firstFrameMs"])
            clears["peer"] += got["clears"]
            peer_version = got["version"]
    elapsed = time.perf_counter() - started

    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    print("turn latency, gateway's own share: final transcript -> first outbound media frame")
    print("(zero-delay STT/agent/TTS fakes, Twilio Media Streams over 127.0.0.1; ms)")
    print(f"machine: {os.cpu_count()} CPUs ({affinity} usable), {_cpu_model()}, "
          f"{platform.system()} {platform.machine()}")
    print(f"python {platform.python_version()}; pipecat-ai {peer_version}; "
          f"{rounds} alternating round(s), {args.warmup} warm-up turns per process, "
          f"{elapsed:.1f} s")
    print()
    print(f"{'':<34}{'n':>5}{'p50':>9}{'p90':>9}{'p99':>9}{'mean':>9}")
    ours_s = _stats(ours["firstFrameMs"])
    print(_row("voicecall (measured at the fake)", ours_s))
    if with_peer and peer:
        peer_s = _stats(peer)
        print(_row("pipecat   (measured at the fake)", peer_s))
        ratios = {k: peer_s[k] / ours_s[k] for k in ("p50", "p90", "p99", "mean")}
        print(f"{'ratio pipecat / voicecall':<39}{ratios['p50']:>9.2f}{ratios['p90']:>9.2f}"
              f"{ratios['p99']:>9.2f}{ratios['mean']:>9.2f}")
    print()
    if ours["internalFirstFrameMs"]:
        print(_row("voicecall calls.jsonl firstFrameMs", _stats(ours["internalFirstFrameMs"])))
    if ours["internalLatencyMs"]:
        print(_row("voicecall calls.jsonl latencyMs", _stats(ours["internalLatencyMs"])))
    print(f"barge-in clears seen (should be 0): voicecall {clears['ours']}, "
          f"pipecat {clears['peer'] if with_peer else '-'}")
    if not with_peer and not args.no_peer:
        print()
        print("peer not installed: pip install pipecat-ai  "
              "(bench needs the websocket extra: pip install 'pipecat-ai[websocket]')")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
