"""Helpers for the cloud STT tests: tone-burst audio, bounded event collection."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from voicecall.audio.g711 import FRAME_BYTES, MULAW_SILENCE, SAMPLE_RATE, pcm16_to_mulaw
from voicecall.speech.stt import deepgram, openai, xai
from voicecall.speech.stt.base import SttEvent, SttSession
from voicecall.testing.fake_stt import FakeDeepgram, FakeOpenAITranscription, FakeSttServer, FakeXai

TIMEOUT = 3.0
SECRET = "sk-live-SECRET-0123456789abcdef"      # a "wrong" key that must never be echoed
TRANSCRIPT = "where is my order"


def tone_burst(tone_ms: int = 300, silence_ms: int = 1000, freq: float = 440.0,
               level: float = 0.3) -> bytes:
    """``tone_ms`` of a sine at ``freq`` then ``silence_ms`` of mu-law silence (8 kHz)."""
    t = np.arange(SAMPLE_RATE * tone_ms // 1000) / SAMPLE_RATE
    burst = pcm16_to_mulaw((np.sin(2 * np.pi * freq * t) * level * 32767).astype(np.int16))
    return burst + bytes([MULAW_SILENCE]) * (SAMPLE_RATE * silence_ms // 1000)


def frames(audio: bytes) -> list[bytes]:
    """20 ms mu-law frames (160 bytes)."""
    return [audio[i:i + FRAME_BYTES] for i in range(0, len(audio), FRAME_BYTES)]


async def send(session: SttSession, audio: bytes) -> int:
    for frame in frames(audio):
        await session.send_audio(frame)
    return len(audio)


async def collect(session: SttSession, until: str | Callable[[SttEvent], bool] = "final",
                  timeout: float = TIMEOUT) -> list[SttEvent]:
    """Events up to and including the first matching ``until`` (or ``closed``)."""
    done: Callable[[SttEvent], bool] = (lambda e: e.type == until) if isinstance(until, str) \
        else until
    out: list[SttEvent] = []

    async def run() -> None:
        async for ev in session.events():
            out.append(ev)
            if done(ev) or ev.type == "closed":
                return

    await asyncio.wait_for(run(), timeout)
    return out


async def drain(session: SttSession, timeout: float = TIMEOUT) -> list[SttEvent]:
    """Events until ``closed``."""
    return await collect(session, "closed", timeout)


def types(events: list[SttEvent]) -> list[str]:
    return [e.type for e in events]


@dataclass(frozen=True)
class Provider:
    """One provider under test: its module, its fake, and its vendor quirks."""

    id: str
    module: ModuleType
    fake: type[FakeSttServer]
    auth_status: int          # what a wrong key gives
    ready_message: bool       # the vendor sends a "ready" message (else ready on open)

    def make_fake(self, **kwargs: Any) -> FakeSttServer:
        kwargs.setdefault("transcripts", [TRANSCRIPT])
        return self.fake(**kwargs)

    def config(self, fake: FakeSttServer, **extra: Any) -> dict[str, Any]:
        return {"apiKey": fake.api_key, "endpoint": fake.url, **extra}


PROVIDERS = [
    Provider("openai", openai, FakeOpenAITranscription, 401, True),
    Provider("deepgram", deepgram, FakeDeepgram, 401, False),
    Provider("xai", xai, FakeXai, 400, True),
]
