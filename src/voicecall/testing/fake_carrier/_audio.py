"""Callee audio for the fake's media streams: G.711 mu-law, 8 kHz, mono.

The default voice is a deterministic tone burst per reply followed by digital
silence (``0xFF``), so an energy-based speech detector on the gateway sees a
clear start and end of speech without any speech models installed.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable

SAMPLE_RATE = 8000
FRAME_BYTES = 160  # 20 ms of 8 kHz mu-law
SILENCE_BYTE = 0xFF  # mu-law encoding of linear 0

_BIAS = 0x84
_CLIP = 32635


def mulaw_encode_sample(sample: int) -> int:
    """Encode one signed 16-bit linear sample (ITU-T G.711 mu-law)."""
    sign = 0x80 if sample < 0 else 0
    magnitude = min(-sample if sign else sample, _CLIP) + _BIAS
    exponent = 7
    mask = 0x4000
    while exponent > 0 and not magnitude & mask:
        exponent -= 1
        mask >>= 1
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


def mulaw_encode(samples: Iterable[int]) -> bytes:
    return bytes(mulaw_encode_sample(s) for s in samples)


def mulaw_decode_sample(byte: int) -> int:
    """Inverse of :func:`mulaw_encode_sample` (used by tests to measure energy)."""
    byte = ~byte & 0xFF
    sign = byte & 0x80
    exponent = (byte >> 4) & 0x07
    mantissa = byte & 0x0F
    magnitude = (((mantissa << 3) + _BIAS) << exponent) - _BIAS
    return -magnitude if sign else magnitude


def silence(ms: int) -> bytes:
    return bytes([SILENCE_BYTE]) * (SAMPLE_RATE * ms // 1000)


def pad_to_frames(audio: bytes) -> bytes:
    """Pad with silence to a whole number of 20 ms frames (Twilio never sends partial ones)."""
    rest = len(audio) % FRAME_BYTES
    return audio if rest == 0 else audio + bytes([SILENCE_BYTE]) * (FRAME_BYTES - rest)


def tone_burst(text: str, *, words_ms: int = 60, min_ms: int = 300, max_ms: int = 3000,
               tail_ms: int = 800, amplitude: float = 0.3) -> bytes:
    """Deterministic "speech" for ``text``: a warbling two-tone burst, then silence.

    Length grows with the word count so longer replies sound longer; the pitch is
    derived from the text so different replies are distinguishable byte-wise. The
    silent tail is long enough for end-of-utterance detection (typically 500-700 ms).
    """
    words = max(1, len(text.split()))
    speech_ms = max(min_ms, min(max_ms, words * words_ms + 200))
    seed = hashlib.sha256(text.encode("utf-8")).digest()
    f1 = 220 + seed[0] % 200  # fundamental-ish, Hz
    f2 = 2 * f1 + seed[1] % 100
    peak = amplitude * 32767
    n = SAMPLE_RATE * speech_ms // 1000
    samples = []
    for i in range(n):
        t = i / SAMPLE_RATE
        # A slow envelope makes it syllable-like but never dips below an energy
        # detector's threshold (~0.035 RMS), so one reply stays one utterance.
        env = 0.75 + 0.25 * math.sin(2 * math.pi * 4 * t)
        edge = min(1.0, i / 80, (n - i) / 80)
        value = peak * env * edge * (0.7 * math.sin(2 * math.pi * f1 * t)
                                     + 0.3 * math.sin(2 * math.pi * f2 * t))
        samples.append(int(value))
    return pad_to_frames(mulaw_encode(samples) + silence(tail_ms))


def rms(audio: bytes) -> float:
    """Root mean square of mu-law ``audio`` as a fraction of full scale (0.0-1.0)."""
    if not audio:
        return 0.0
    total = sum(mulaw_decode_sample(b) ** 2 for b in audio)
    return math.sqrt(total / len(audio)) / 32768
