"""Helpers for the TTS tests (imported by module name, like ``gw_helpers``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import numpy as np

from voicecall.audio.g711 import mulaw_to_pcm16

OPENAI_KEY = "sk-test-openai-0123456789abcdef"
ELEVEN_KEY = "xi-test-eleven-0123456789abcdef"


async def collect(stream: AsyncIterator[bytes]) -> list[bytes]:
    return [chunk async for chunk in stream]


def level(mulaw: bytes) -> float:
    """RMS of mu-law audio relative to full scale."""
    pcm = mulaw_to_pcm16(mulaw).astype(np.float64) / 32768.0
    return float(np.sqrt(np.mean(pcm * pcm))) if pcm.size else 0.0
