"""DTMF tones as mu-law audio, for keys pressed while a media stream carries the call.

Sending ``<Play digits>`` would replace the call's TwiML and tear the stream
down (a known failure of the reference plugin), so over a stream we play the
dual tones ourselves: 100 ms tone, 60 ms gap; ``w`` waits 0.5 s, ``W`` 1 s.
"""

from __future__ import annotations

import numpy as np

from voicecall.audio.g711 import MULAW_SILENCE, SAMPLE_RATE, pcm16_to_mulaw
from voicecall.errors import UsageError

_LOW = {"1": 697, "2": 697, "3": 697, "A": 697, "4": 770, "5": 770, "6": 770, "B": 770,
        "7": 852, "8": 852, "9": 852, "C": 852, "*": 941, "0": 941, "#": 941, "D": 941}
_HIGH = {"1": 1209, "4": 1209, "7": 1209, "*": 1209, "2": 1336, "5": 1336, "8": 1336,
         "0": 1336, "3": 1477, "6": 1477, "9": 1477, "#": 1477, "A": 1633, "B": 1633,
         "C": 1633, "D": 1633}
TONE_MS = 100
GAP_MS = 60
_PAUSES_MS = {"w": 500, "W": 1000, "p": 500, "P": 500, ",": 500}


def _silence(ms: int) -> bytes:
    return bytes([MULAW_SILENCE]) * (SAMPLE_RATE * ms // 1000)


def dtmf_audio(digits: str, *, level: float = 0.35) -> bytes:
    """mu-law 8 kHz audio that dials ``digits``."""
    t = np.arange(SAMPLE_RATE * TONE_MS // 1000) / SAMPLE_RATE
    out = bytearray()
    for key in digits:
        if key in _PAUSES_MS:
            out += _silence(_PAUSES_MS[key])
            continue
        upper = key.upper()
        if upper not in _LOW:
            raise UsageError(f"not a DTMF key: {key!r}")
        wave = (np.sin(2 * np.pi * _LOW[upper] * t) + np.sin(2 * np.pi * _HIGH[upper] * t))
        out += pcm16_to_mulaw((wave * level / 2 * 32767).astype(np.int16))
        out += _silence(GAP_MS)
    return bytes(out)
