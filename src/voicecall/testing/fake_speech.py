"""Stand-in speech providers for carrier media tests.

``ToneTTS`` turns text into tone bursts (one per word), and ``ScriptedSTT``
turns each burst of caller audio it hears into the next scripted
transcript, using the same energy detector the gateway uses for barge-in.
They exercise the real media path (framing, pacing, marks, clear, queued
audio before the STT is ready) without a speech model; the real providers
and their wire-protocol fakes live beside them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import numpy as np

from voicecall.audio.g711 import MULAW_SILENCE, SAMPLE_RATE, pcm16_to_mulaw
from voicecall.audio.vad import EnergyVad
from voicecall.speech import registry
from voicecall.speech.stt.base import SttCapabilities, SttEvent
from voicecall.speech.tts.base import TtsCapabilities

WORD_MS = 120
GAP_MS = 40


def tone(ms: int, freq: float = 440.0, level: float = 0.3) -> bytes:
    t = np.arange(SAMPLE_RATE * ms // 1000) / SAMPLE_RATE
    return pcm16_to_mulaw((np.sin(2 * np.pi * freq * t) * level * 32767).astype(np.int16))


def silence(ms: int) -> bytes:
    return bytes([MULAW_SILENCE]) * (SAMPLE_RATE * ms // 1000)


class ToneTTS:
    name = "fake"
    capabilities = TtsCapabilities(streaming=True, telephony_native=True)

    def __init__(self, word_ms: int = WORD_MS, chunk_bytes: int = 800) -> None:
        self.word_ms = word_ms
        self.chunk_bytes = chunk_bytes
        self.spoken: list[str] = []

    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        self.spoken.append(text)
        audio = b"".join(tone(self.word_ms) + silence(GAP_MS) for _ in text.split())
        for i in range(0, len(audio), self.chunk_bytes):
            yield audio[i:i + self.chunk_bytes]
            await asyncio.sleep(0)

    async def aclose(self) -> None:
        return None


class _Session:
    def __init__(self, owner: ScriptedSTT) -> None:
        self._owner = owner
        self._vad = EnergyVad(release_frames=10)
        self._events: asyncio.Queue[SttEvent | None] = asyncio.Queue()
        self._ready = asyncio.Event()
        self.audio_bytes = 0
        asyncio.get_running_loop().call_later(owner.ready_delay_s, self._ready.set)

    async def wait_ready(self) -> None:
        await self._ready.wait()
        await self._events.put(SttEvent("ready"))

    async def send_audio(self, mulaw: bytes) -> None:
        # Audio before readiness is accepted (queued by the provider, as real ones do).
        self.audio_bytes += len(mulaw)
        edge = self._vad.feed(mulaw)
        if edge == "start":
            await self._events.put(SttEvent("speech-start"))
        elif edge == "end":
            await self._events.put(SttEvent("final", self._owner.next_transcript(), 0.95))

    async def events(self) -> AsyncIterator[SttEvent]:
        while True:
            ev = await self._events.get()
            if ev is None:
                return
            yield ev

    async def aclose(self) -> None:
        await self._events.put(None)


class ScriptedSTT:
    name = "fake"
    capabilities = SttCapabilities(interim_results=False, server_vad=True)

    def __init__(self, transcripts: Sequence[str] = (), ready_delay_s: float = 0.0) -> None:
        self.transcripts = list(transcripts)
        self.ready_delay_s = ready_delay_s
        self.sessions: list[_Session] = []
        self._index = 0

    def next_transcript(self) -> str:
        if self._index < len(self.transcripts):
            self._index += 1
            return self.transcripts[self._index - 1]
        return "hello"

    async def open(self, call_id: str) -> _Session:
        session = _Session(self)
        self.sessions.append(session)
        return session


def register(stt: ScriptedSTT, tts: ToneTTS, name: str = "fake") -> None:
    """Make ``streaming.provider: <name>`` and ``tts.provider: <name>`` resolve to these."""

    def stt_factory(cfg: Mapping[str, Any]) -> ScriptedSTT:
        return stt

    def tts_factory(cfg: Mapping[str, Any]) -> ToneTTS:
        return tts

    registry.register_stt(name, stt_factory)
    registry.register_tts(name, tts_factory)
