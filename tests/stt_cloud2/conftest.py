"""Shared audio and event helpers for the ElevenLabs / Mistral STT tests (real sockets)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import numpy as np
import pytest

from voicecall.audio.g711 import SAMPLE_RATE, frames, pcm16_to_mulaw
from voicecall.speech.stt.base import SttEvent, SttSession

Collect = Callable[..., Awaitable[list[SttEvent]]]


def tone_burst(tone_ms: int = 300, silence_ms: int = 1000, freq: float = 440.0,
               level: float = 0.3) -> list[bytes]:
    """``tone_ms`` of a sine then ``silence_ms`` of silence, as 20 ms mu-law frames."""
    t = np.arange(SAMPLE_RATE * tone_ms // 1000) / SAMPLE_RATE
    tone = (np.sin(2 * np.pi * freq * t) * level * 32767).astype(np.int16)
    pcm = np.concatenate([tone, np.zeros(SAMPLE_RATE * silence_ms // 1000, dtype=np.int16)])
    return frames(pcm16_to_mulaw(pcm))


@pytest.fixture
def burst() -> list[bytes]:
    return tone_burst()


async def collect_events(session: SttSession, *, until: str = "closed", count: int = 1,
                         timeout: float = 3.0) -> list[SttEvent]:
    """Events up to and including the ``count``-th event of type ``until`` (bounded in time)."""
    out: list[SttEvent] = []

    async def run() -> None:
        seen = 0
        async for ev in session.events():
            out.append(ev)
            if ev.type == until:
                seen += 1
                if seen >= count:
                    return

    await asyncio.wait_for(run(), timeout)
    return out


@pytest.fixture
def collect() -> Collect:
    return collect_events

