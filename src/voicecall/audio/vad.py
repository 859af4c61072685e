"""Speech detectors for mu-law frames: ``EnergyVad`` (no dependencies) and ``WebrtcVad``.

Both need a few consecutive speech frames to trigger (so a click does not cut
the bot off) and a run of non-speech frames to re-arm, and share one
interface: ``feed(frame) -> "start" | "end" | None``. The thresholds are
settings, not constants, because line noise and echo differ per carrier and
trunk. ``WebrtcVad`` wraps the WebRTC GMM detector (package
``webrtcvad-wheels``), which tells speech from steady noise far better than
an energy gate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from voicecall.audio.g711 import mulaw_to_pcm16, rms


class _Hangover:
    """The trigger/release counting both detectors share, over per-frame decisions."""

    trigger_frames: int
    release_frames: int
    _loud: int
    _quiet: int
    speaking: bool

    def _step(self, speech: bool) -> str | None:
        """Returns "start" when speech begins, "end" when it stops, else None."""
        if speech:
            self._loud += 1
            self._quiet = 0
            if not self.speaking and self._loud >= self.trigger_frames:
                self.speaking = True
                return "start"
        else:
            self._quiet += 1
            self._loud = 0
            if self.speaking and self._quiet >= self.release_frames:
                self.speaking = False
                return "end"
        return None


@dataclass
class EnergyVad(_Hangover):
    threshold: float = 0.035
    trigger_frames: int = 2
    release_frames: int = 12
    _loud: int = 0
    _quiet: int = 0
    speaking: bool = False

    def feed(self, frame: bytes) -> str | None:
        """Returns "start" when speech begins, "end" when it stops, else None."""
        return self._step(rms(frame) >= self.threshold)


@dataclass
class WebrtcVad(_Hangover):
    """WebRTC VAD on 10/20/30 ms frames (mu-law 8 kHz by default, or PCM16 at ``sample_rate``).

    ``aggressiveness`` 0 (lenient, keeps more noise as speech) .. 3 (strict).
    Needs ``trigger_frames`` consecutive speech frames to report "start" and
    ``release_frames`` consecutive non-speech frames to report "end" (with 20 ms
    frames the defaults are 60 ms and 300 ms).
    """

    aggressiveness: int = 2
    trigger_frames: int = 3
    release_frames: int = 15
    sample_rate: int = 8000
    encoding: Literal["mulaw", "pcm16"] = "mulaw"
    _loud: int = 0
    _quiet: int = 0
    speaking: bool = False
    _vad: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not 0 <= self.aggressiveness <= 3:
            raise ValueError("aggressiveness must be 0..3")
        if self.sample_rate not in (8000, 16000, 32000, 48000):
            raise ValueError("webrtcvad supports 8000, 16000, 32000 or 48000 Hz")
        try:
            import webrtcvad  # type: ignore[import-untyped,unused-ignore]
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("WebrtcVad needs the package webrtcvad-wheels "
                              "(pip install webrtcvad-wheels)") from exc
        self._vad = webrtcvad.Vad(self.aggressiveness)

    def is_speech(self, frame: bytes) -> bool:
        """Raw per-frame decision (no hangover). Raises ValueError on a bad frame length."""
        pcm = mulaw_to_pcm16(frame).astype("<i2").tobytes() if self.encoding == "mulaw" else frame
        samples = len(pcm) // 2
        if samples * 1000 not in (self.sample_rate * ms for ms in (10, 20, 30)):
            raise ValueError(f"WebrtcVad needs 10, 20 or 30 ms frames, got {samples} samples "
                             f"at {self.sample_rate} Hz")
        return bool(self._vad.is_speech(pcm, self.sample_rate))

    def feed(self, frame: bytes) -> str | None:
        """Returns "start" when speech begins, "end" when it stops, else None."""
        return self._step(self.is_speech(frame))

    def reset(self) -> None:
        self._loud = self._quiet = 0
        self.speaking = False
