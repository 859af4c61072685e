"""Helpers for the realtime provider tests: tone bursts, a bounded background event collector."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import numpy as np

from voicecall.audio.g711 import SAMPLE_RATE, frames, mulaw_to_pcm16, pcm16_to_mulaw
from voicecall.speech.realtime.base import RealtimeEvent, RealtimeSession

TIMEOUT = 4.0
SECRET = "sk-live-SECRET-0123456789abcdef"      # a "wrong" key that must never be echoed


def tone_burst(tone_ms: int = 300, silence_ms: int = 800, freq: float = 440.0,
               level: float = 0.3) -> list[bytes]:
    """``tone_ms`` of a sine then ``silence_ms`` of silence, as 20 ms mu-law frames."""
    t = np.arange(SAMPLE_RATE * tone_ms // 1000) / SAMPLE_RATE
    tone = (np.sin(2 * np.pi * freq * t) * level * 32767).astype(np.int16)
    pcm = np.concatenate([tone, np.zeros(SAMPLE_RATE * silence_ms // 1000, dtype=np.int16)])
    return frames(pcm16_to_mulaw(pcm))


async def send_frames(session: RealtimeSession, chunks: list[bytes]) -> None:
    for chunk in chunks:
        await session.send_audio(chunk)


def dominant_hz(mulaw: bytes, rate: int = SAMPLE_RATE) -> float:
    pcm = mulaw_to_pcm16(mulaw).astype(np.float64)
    spectrum = np.abs(np.fft.rfft(pcm * np.hanning(len(pcm))))
    return float(np.fft.rfftfreq(len(pcm), 1 / rate)[int(np.argmax(spectrum))])


class Events:
    """Collects a session's events in the background; ``wait`` for conditions (bounded)."""

    def __init__(self, session: RealtimeSession) -> None:
        self.session = session
        self.items: list[RealtimeEvent] = []
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        async for ev in self.session.events():
            self.items.append(ev)

    def types(self) -> list[str]:
        return [e.type for e in self.items]

    def of(self, type_: str, **match: object) -> list[RealtimeEvent]:
        return [e for e in self.items if e.type == type_
                and all(getattr(e, k) == v for k, v in match.items())]

    async def until(self, predicate: Callable[[], bool], timeout: float = TIMEOUT) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            if loop.time() > deadline:
                raise AssertionError(f"condition not met in time; events: {self.types()}")
            await asyncio.sleep(0.005)

    async def wait(self, type_: str, count: int = 1, timeout: float = TIMEOUT,
                   **match: object) -> RealtimeEvent:
        """The ``count``-th event of ``type_`` (matching ``match``), once it arrived."""
        await self.until(lambda: len(self.of(type_, **match)) >= count, timeout)
        return self.of(type_, **match)[count - 1]

    async def closed(self, timeout: float = TIMEOUT) -> None:
        await asyncio.wait_for(asyncio.shield(self.task), timeout)

    def audio(self, item_id: str | None = None) -> bytes:
        return b"".join(e.audio for e in self.items
                        if e.type == "audio" and (item_id is None or e.item_id == item_id))
