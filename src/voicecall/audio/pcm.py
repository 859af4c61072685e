"""Linear PCM helpers: 16-bit little-endian bytes <-> numpy, float conversion, framing.

Every conversion is a whole-array numpy operation. ``Framer`` turns a stream
of arbitrarily sized chunks (a TTS stream, a Telnyx media message holding
anything from 20 ms to seconds) into exact 20 ms frames, keeping the remainder
for the next chunk instead of padding it mid-stream.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FRAME_MS = 20
PCM16_WIDTH = 2
PCM16_MAX = 32767
PCM16_MIN = -32768


def frame_bytes(rate: int, *, width: int = PCM16_WIDTH, ms: int = FRAME_MS) -> int:
    """Bytes in one frame: 8 kHz mu-law (width 1) -> 160, 8 kHz PCM16 -> 320, 24 kHz -> 960."""
    return rate * ms // 1000 * width


def duration_ms(nbytes: int, rate: int, *, width: int = PCM16_WIDTH) -> float:
    """Playback time of ``nbytes`` in the given format (never assume 24 kHz PCM16)."""
    return nbytes * 1000 / (rate * width)


def pcm16_from_bytes(data: bytes) -> npt.NDArray[np.int16]:
    """Little-endian PCM16 bytes -> native int16 samples (an odd trailing byte is dropped)."""
    usable = len(data) - len(data) % 2
    return np.frombuffer(data, dtype="<i2", count=usable // 2).astype(np.int16)


def pcm16_to_bytes(samples: npt.NDArray[np.int16]) -> bytes:
    """int16 samples -> little-endian PCM16 bytes."""
    return bytes(np.asarray(samples, dtype=np.int16).astype("<i2", copy=False).tobytes())


def pcm16_to_float(samples: npt.NDArray[np.int16]) -> npt.NDArray[np.float32]:
    """int16 -> float32 in [-1.0, 1.0) (full scale is 32768)."""
    out: npt.NDArray[np.float32] = np.asarray(samples, dtype=np.float32) / np.float32(32768.0)
    return out


def float_to_pcm16(samples: npt.NDArray[np.floating]) -> npt.NDArray[np.int16]:
    """float in [-1, 1] -> int16, rounded and clipped (no wrap-around on overshoot)."""
    return clip_to_pcm16(np.asarray(samples, dtype=np.float64) * 32768.0)


def clip_to_pcm16(samples: npt.NDArray[np.number]) -> npt.NDArray[np.int16]:
    """Saturate any numeric array (e.g. a mix or a gain stage) to int16."""
    out: npt.NDArray[np.int16] = np.clip(np.rint(samples), PCM16_MIN, PCM16_MAX).astype(np.int16)
    return out


class Framer:
    """Cuts a chunk stream into fixed-size frames; the remainder waits for the next chunk.

    ``size`` is in bytes (160 for 20 ms of 8 kHz mu-law, 320 for 8 kHz PCM16).
    ``flush`` returns the tail padded with ``pad`` (mu-law silence 0xFF by
    default; use ``b"\\x00"`` for PCM) or ``None`` when nothing is left.
    """

    def __init__(self, size: int = 160, *, pad: bytes = b"\xff") -> None:
        if size <= 0:
            raise ValueError("frame size must be positive")
        if len(pad) != 1:
            raise ValueError("pad must be a single byte")
        self.size = size
        self.pad = pad
        self._buf = bytearray()

    @classmethod
    def for_format(cls, rate: int, *, width: int = PCM16_WIDTH, ms: int = FRAME_MS) -> Framer:
        """A framer for ``ms`` frames of ``rate`` Hz audio; width 1 means G.711 (pads 0xFF)."""
        return cls(frame_bytes(rate, width=width, ms=ms), pad=b"\xff" if width == 1 else b"\x00")

    @property
    def pending(self) -> int:
        """Bytes buffered that do not yet fill a frame."""
        return len(self._buf)

    def feed(self, chunk: bytes) -> list[bytes]:
        """Add a chunk; return every complete frame now available, in order."""
        if chunk:
            self._buf += chunk
        n = len(self._buf) // self.size
        if n == 0:
            return []
        cut = n * self.size
        whole = bytes(self._buf[:cut])
        del self._buf[:cut]
        return [whole[i:i + self.size] for i in range(0, cut, self.size)]

    def flush(self) -> bytes | None:
        """The buffered tail as one padded frame (end of stream), or ``None``."""
        if not self._buf:
            return None
        frame = bytes(self._buf) + self.pad * (self.size - len(self._buf))
        self._buf.clear()
        return frame

    def reset(self) -> None:
        """Drop the remainder (barge-in: the rest of this stream will never play)."""
        self._buf.clear()
