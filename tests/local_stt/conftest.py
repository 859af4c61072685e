"""Caller audio for the offline STT tests: flite (voice slt) through a telephone channel."""

from __future__ import annotations

import functools
import io
import shutil
import subprocess
import wave

import numpy as np
import pytest

from voicecall.audio.g711 import FRAME_BYTES, MULAW_SILENCE, mulaw_to_pcm16, pcm16_to_mulaw
from voicecall.audio.resample import resample_pcm16

pytest.importorskip("pocketsphinx")
pytest.importorskip("webrtcvad")

PHRASES = (
    "i would like to book a table for two at seven pm",
    "what are your opening hours",
    "my number is five five five one two three four",
    "please call me back tomorrow morning",
    "yes that works for me",
)


@functools.cache
def caller_mulaw(text: str) -> bytes:
    """``text`` spoken by flite (slt, 16 kHz), down to 8 kHz mu-law like a phone line."""
    if shutil.which("flite") is None:
        pytest.skip("flite is not installed (apt-get install flite)")
    out = subprocess.run(["flite", "-voice", "slt", "-t", text, "-o", "/dev/stdout"],
                         capture_output=True, check=True, timeout=30).stdout
    with wave.open(io.BytesIO(out)) as w:
        rate = w.getframerate()
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.int16)
    return pcm16_to_mulaw(resample_pcm16(pcm, rate, 8000))


def silence(ms: int) -> bytes:
    return bytes([MULAW_SILENCE]) * (8 * ms)


def mulaw_frames(data: bytes) -> list[bytes]:
    """20 ms frames (160 bytes), the last one padded with silence."""
    data += bytes([MULAW_SILENCE]) * (-len(data) % FRAME_BYTES)
    return [data[i:i + FRAME_BYTES] for i in range(0, len(data), FRAME_BYTES)]


def utterance_pcm16k(text: str, lead_ms: int = 300, trail_ms: int = 600) -> bytes:
    """What a session hands the engine: the phrase with line silence around it, at 16 kHz."""
    mu = silence(lead_ms) + caller_mulaw(text) + silence(trail_ms)
    return resample_pcm16(mulaw_to_pcm16(mu), 8000, 16000).astype("<i2").tobytes()
