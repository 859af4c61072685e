"""The local barge-in detector: the caller talking over the model, seen before the provider.

A provider's VAD reports the caller's speech after its own buffering plus a
network round trip; clearing the carrier buffer on our side as soon as the
caller's audio says so stops the model's voice sooner. A 20 ms frame counts
as the caller's speech only when WebRTC VAD classifies it as speech, it is at
least ``minRms`` loud, and its spectrum is not flat (WebRTC VAD takes loud
white noise for speech: hiss has a spectral flatness of ~0.5, voiced speech
frames ~0.04, 99% of them under 0.35 on flite speech); ``minSpeechMs`` of such
frames in a row trigger (``realtime.bargeIn``). The provider's own VAD still runs: a false trigger
costs the rest of one model turn, a missed one only the provider's latency.
"""

from __future__ import annotations

import numpy as np

from voicecall.audio.g711 import FRAME_BYTES, FRAME_MS, mulaw_to_pcm16, rms
from voicecall.audio.vad import WebrtcVad
from voicecall.config.sections import BargeInConfig

__all__ = ["LocalBargeIn", "spectral_flatness"]

MAX_FLATNESS = 0.35
_WINDOW = np.hanning(FRAME_BYTES)
_BAND = slice(4, 72)        # 200-3600 Hz of a 20 ms frame's spectrum at 8 kHz


def spectral_flatness(frame: bytes) -> float:
    """Geometric over arithmetic mean of the frame's power spectrum (1: white noise)."""
    power = np.abs(np.fft.rfft(mulaw_to_pcm16(frame) * _WINDOW))[_BAND] ** 2 + 1e-9
    return float(np.exp(np.mean(np.log(power))) / np.mean(power))


class LocalBargeIn:
    """Feed caller frames while the model is heard; ``True`` once the caller talks over it."""

    def __init__(self, cfg: BargeInConfig) -> None:
        self.min_rms = cfg.min_rms
        self.frames_needed = max(1, -(-cfg.min_speech_ms // FRAME_MS))
        self._vad = WebrtcVad(aggressiveness=cfg.aggressiveness)
        self._run = 0
        self._pending = b""

    def feed(self, mulaw: bytes) -> bool:
        self._pending += mulaw
        fired = False
        while len(self._pending) >= FRAME_BYTES:
            frame, self._pending = self._pending[:FRAME_BYTES], self._pending[FRAME_BYTES:]
            if (rms(frame) >= self.min_rms and spectral_flatness(frame) <= MAX_FLATNESS
                    and self._vad.is_speech(frame)):
                self._run += 1
                fired = fired or self._run == self.frames_needed
            else:
                self._run = 0
        return fired

    def reset(self) -> None:
        """The model stopped (or was cut off): a new run must start from silence."""
        self._run = 0
        self._pending = b""
