"""A small energy-based speech detector for barge-in on mu-law frames.

Needs a few consecutive loud frames to trigger (so a click does not cut the
bot off) and a run of quiet frames to re-arm. The thresholds are settings,
not constants, because line noise and echo differ per carrier and trunk.
"""

from __future__ import annotations

from dataclasses import dataclass

from voicecall.audio.g711 import rms


@dataclass
class EnergyVad:
    threshold: float = 0.035
    trigger_frames: int = 2
    release_frames: int = 12
    _loud: int = 0
    _quiet: int = 0
    speaking: bool = False

    def feed(self, frame: bytes) -> str | None:
        """Returns "start" when speech begins, "end" when it stops, else None."""
        if rms(frame) >= self.threshold:
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
