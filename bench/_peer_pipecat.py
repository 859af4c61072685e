"""The Pipecat side of ``bench_turn.py``: the same Twilio Media Streams turn, measured the same way.

Pipecat's own Twilio path, unmodified: ``FastAPIWebsocketTransport`` with
``TwilioFrameSerializer`` (handshake parsed by ``parse_telephony_websocket``),
served by uvicorn on 127.0.0.1 exactly as the gateway's listener is
(``ws="websockets-sansio"``, TCP_NODELAY). The services are stand-ins built on
Pipecat's public base classes, each as instant as ours:

- ``ScriptedSTT`` (an ``STTService``): the same energy endpointing as
  ``voicecall.testing.fake_speech.ScriptedSTT`` (``EnergyVad``, 10 quiet frames);
  at the end of each caller utterance it yields a final ``TranscriptionFrame``;
- ``InstantLLM`` (a ``FrameProcessor``): answers each ``TranscriptionFrame`` with
  ``LLMFullResponseStartFrame``, the reply as 8-character ``LLMTextFrame`` tokens
  (our scripted responder streams its ``{"spoken": ...}`` reply in 8-character
  pieces), ``LLMFullResponseEndFrame``;
- ``ToneTTS`` (a ``TTSService``, HTTP-style like Pipecat's Piper service): the
  reply's tone audio as PCM16 8 kHz in 100 ms chunks, through
  ``_stream_audio_frames_from_iterator``.

Pipeline: ``transport.input() -> stt -> llm -> tts -> transport.output()`` in a
``PipelineWorker`` run by a ``WorkerRunner``, one per call, as Pipecat's
telephony examples do. There is no user/assistant context aggregator (the LLM
answers the transcription directly), which would only add work on Pipecat's
side. The worker runs either lean (``enable_rtvi=False, idle_timeout_secs=None``)
or with ``PipelineWorker``'s defaults (RTVI processor and observer, idle
watchdog), selected by ``worker_defaults``.

The measured interval: the ``TranscriptionFrame`` entering ``push_frame`` in the
STT service -> the fake Twilio client receiving the first ``media`` message of
the reply. Imported only by ``bench_turn.py --side peer``; needs
``pip install 'pipecat-ai[websocket]'``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sys
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from typing import Any

import numpy as np
import uvicorn
from fastapi import FastAPI, WebSocket
from loguru import logger
from pipecat.frames.frames import (
    Frame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TranscriptionFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.runner.utils import parse_telephony_websocket
from pipecat.serializers.twilio import TwilioFrameSerializer
from pipecat.services.settings import STTSettings, TTSSettings
from pipecat.services.stt_service import STTService
from pipecat.services.tts_service import TTSService
from pipecat.transports.websocket.fastapi import (
    FastAPIWebsocketParams,
    FastAPIWebsocketTransport,
)
from pipecat.utils.time import time_now_iso8601
from pipecat.workers.runner import WorkerRunner
from websockets.asyncio.client import connect

from voicecall.audio.g711 import FRAME_BYTES, pcm16_to_mulaw
from voicecall.audio.vad import EnergyVad
from voicecall.carriers.twilio.media import (
    encode_connected,
    encode_inbound_media,
    encode_start,
)

SAMPLE_RATE = 8000
TTS_CHUNK_BYTES = 1600  # 100 ms of PCM16 at 8 kHz, as ToneTTS's 800 mu-law bytes
TOKEN_CHARS = 8  # as the scripted responder streams its reply
ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
REPLY_TIMEOUT_S = 10.0


def pipecat_version() -> str:
    from importlib.metadata import version

    return version("pipecat-ai")


class Probe:
    """Pairs each transcript pushed into the pipeline with the first reply frame on the wire."""

    def __init__(self) -> None:
        self.pending: float | None = None
        self.samples: list[float] = []
        self.replied = asyncio.Event()
        self.media = asyncio.Event()
        self.clears = 0

    def transcript(self) -> None:
        self.pending = time.perf_counter()
        self.replied.clear()

    def inbound(self, now: float, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "clear":
            self.clears += 1
        if kind != "media":
            return
        self.media.set()
        if self.pending is not None:
            self.samples.append((now - self.pending) * 1000)
            self.pending = None
            self.replied.set()


class ScriptedSTT(STTService):
    """Energy-endpointed "recogniser": one final transcript per caller utterance."""

    def __init__(self, probe: Probe, text: str, **kwargs: Any) -> None:
        # ttfs_p99_latency only informs turn strategies, which this pipeline has none of.
        super().__init__(settings=STTSettings(model=None, language=None),
                         ttfs_p99_latency=0.1, **kwargs)
        self._probe = probe
        self._text = text
        self._vad = EnergyVad(release_frames=10)  # as fake_speech.ScriptedSTT

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame | None, None]:
        mulaw = pcm16_to_mulaw(np.frombuffer(audio, dtype=np.int16))
        if self._vad.feed(mulaw) == "end":
            yield TranscriptionFrame(self._text, self._user_id, time_now_iso8601(),
                                     finalized=True)

    async def push_frame(self, frame: Frame,
                         direction: FrameDirection = FrameDirection.DOWNSTREAM) -> None:
        if isinstance(frame, TranscriptionFrame):
            self._probe.transcript()
        await super().push_frame(frame, direction)


class InstantLLM(FrameProcessor):
    """Answers every final transcription at once with a fixed reply, streamed as tokens."""

    def __init__(self, reply: str) -> None:
        super().__init__()
        self._reply = reply

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, TranscriptionFrame):
            await self.push_frame(LLMFullResponseStartFrame())
            for i in range(0, len(self._reply), TOKEN_CHARS):
                await self.push_frame(LLMTextFrame(self._reply[i:i + TOKEN_CHARS]))
            await self.push_frame(LLMFullResponseEndFrame())
        else:
            await self.push_frame(frame, direction)


class ToneTTS(TTSService):
    """Instant synthesis: the same tone-per-word audio as fake_speech.ToneTTS, as PCM16."""

    def __init__(self, pcm_for: Callable[[str], bytes], **kwargs: Any) -> None:
        super().__init__(push_start_frame=True, push_stop_frames=True, sample_rate=SAMPLE_RATE,
                         settings=TTSSettings(model=None, voice=None, language=None), **kwargs)
        self._pcm_for = pcm_for

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame | None, None]:
        async def chunks() -> AsyncIterator[bytes]:
            audio = self._pcm_for(text)
            for i in range(0, len(audio), TTS_CHUNK_BYTES):
                yield audio[i:i + TTS_CHUNK_BYTES]
                await asyncio.sleep(0)

        async for frame in self._stream_audio_frames_from_iterator(
                chunks(), in_sample_rate=SAMPLE_RATE, context_id=context_id):
            yield frame


def build_app(probe: Probe, transcript: str, reply: str, pcm_for: Callable[[str], bytes],
              worker_defaults: bool) -> FastAPI:
    # Lean: no RTVI (the protocol of Pipecat's own client SDKs, whose messages the Twilio
    # serializer drops anyway) and no idle watchdog, each of which observes every frame.
    # Defaults: PipelineWorker left to its defaults, which turn both on.
    worker_kwargs: dict[str, Any] = {} if worker_defaults else {
        "enable_rtvi": False, "idle_timeout_secs": None}
    app = FastAPI()

    @app.websocket("/ws")
    async def media_stream(websocket: WebSocket) -> None:
        await websocket.accept()
        _, call_data = await parse_telephony_websocket(websocket)
        serializer = TwilioFrameSerializer(
            stream_sid=call_data["stream_id"], call_sid=call_data["call_id"],
            params=TwilioFrameSerializer.InputParams(auto_hang_up=False))
        transport = FastAPIWebsocketTransport(websocket, FastAPIWebsocketParams(
            audio_in_enabled=True, audio_out_enabled=True, add_wav_header=False,
            serializer=serializer))
        pipeline = Pipeline([transport.input(), ScriptedSTT(probe, transcript),
                             InstantLLM(reply), ToneTTS(pcm_for), transport.output()])
        worker = PipelineWorker(
            pipeline,
            params=PipelineParams(audio_in_sample_rate=SAMPLE_RATE,
                                  audio_out_sample_rate=SAMPLE_RATE),
            **worker_kwargs)

        @transport.event_handler("on_client_disconnected")
        async def on_client_disconnected(transport: Any, ws: Any) -> None:
            await worker.cancel()

        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(worker)
        await runner.run()

    return app


class _Server(uvicorn.Server):
    """uvicorn in the benchmark's event loop, without taking over signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _bind() -> socket.socket:
    # IPPROTO_TCP, as gateway.server._bind: asyncio then sets TCP_NODELAY on accepted sockets.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def _frames(audio: bytes) -> list[bytes]:
    return [audio[i:i + FRAME_BYTES] for i in range(0, len(audio), FRAME_BYTES)]


async def _call(url: str, call_no: int, turns: int, caller_audio: bytes, probe: Probe,
                turn_gap: float, samples: list[float] | None) -> None:
    """One call: Twilio's handshake, then ``turns`` caller utterances, each awaiting the reply."""
    stream_sid = f"MZ{call_no:032x}"
    call_sid = f"CA{call_no:032x}"
    async with connect(url, compression=None, ping_interval=None, proxy=None) as ws:
        await ws.send(encode_connected())
        await ws.send(encode_start(stream_sid, call_sid, ACCOUNT_SID))

        async def read() -> None:
            async for message in ws:
                now = time.perf_counter()
                probe.inbound(now, json.loads(message))

        reader = asyncio.create_task(read())
        seq, chunk = 2, 0
        try:
            for _ in range(turns):
                for frame in _frames(caller_audio):  # as fast as possible, like realtime=False
                    seq += 1
                    chunk += 1
                    await ws.send(encode_inbound_media(stream_sid, frame, sequence_number=seq,
                                                       chunk=chunk, timestamp_ms=(chunk - 1) * 20))
                    await asyncio.sleep(0)
                before = len(probe.samples)
                await asyncio.wait_for(probe.replied.wait(), REPLY_TIMEOUT_S)
                probe.replied.clear()
                if samples is not None:
                    samples.extend(probe.samples[before:])
                # The reply plays out; the caller speaks again after turn_gap of quiet.
                while True:
                    probe.media.clear()
                    try:
                        await asyncio.wait_for(probe.media.wait(), turn_gap)
                    except TimeoutError:
                        break
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader


async def run(*, calls: int, turns_per_call: int, warmup_turns: int, transcript: str,
              reply: str, caller_audio: bytes, pcm_for: Callable[[str], bytes],
              turn_gap: float, worker_defaults: bool = False) -> dict[str, Any]:
    """Serve Pipecat on loopback and drive ``calls`` calls through it; latencies in ms."""
    logger.remove()
    logger.add(sys.stderr, level=os.environ.get("LOGURU_LEVEL", "WARNING"))
    probe = Probe()
    app = build_app(probe, transcript, reply, pcm_for, worker_defaults)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                            ws="websockets-sansio", timeout_graceful_shutdown=2)
    server = _Server(config)
    sock = _bind()
    port = sock.getsockname()[1]
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if serving.done():
                raise RuntimeError("uvicorn failed to start")
            await asyncio.sleep(0.01)
        url = f"ws://127.0.0.1:{port}/ws"
        samples: list[float] = []
        if warmup_turns:
            await _call(url, 0, warmup_turns, caller_audio, probe, turn_gap, None)
        for call_no in range(1, calls + 1):
            await _call(url, call_no, turns_per_call, caller_audio, probe, turn_gap, samples)
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 15)
    return {"firstFrameMs": samples, "clears": probe.clears, "version": pipecat_version()}
