"""PCM16 conversion helpers and the 20 ms framer."""

from __future__ import annotations

import numpy as np
import pytest

from voicecall.audio.pcm import (
    Framer,
    clip_to_pcm16,
    duration_ms,
    float_to_pcm16,
    frame_bytes,
    pcm16_from_bytes,
    pcm16_to_bytes,
    pcm16_to_float,
)


def test_bytes_round_trip_is_little_endian() -> None:
    samples = np.array([0, 1, -1, 32767, -32768, 258], dtype=np.int16)
    raw = pcm16_to_bytes(samples)
    assert raw[:6] == b"\x00\x00\x01\x00\xff\xff"
    assert raw[-2:] == b"\x02\x01"
    assert np.array_equal(pcm16_from_bytes(raw), samples)


def test_odd_trailing_byte_is_dropped() -> None:
    assert pcm16_from_bytes(b"\x01\x00\x02").tolist() == [1]
    assert pcm16_from_bytes(b"").size == 0


def test_float_conversion_and_clipping() -> None:
    samples = np.array([-32768, -16384, 0, 16384, 32767], dtype=np.int16)
    f = pcm16_to_float(samples)
    assert f.dtype == np.float32
    assert f.tolist() == pytest.approx([-1.0, -0.5, 0.0, 0.5, 32767 / 32768])
    assert np.array_equal(float_to_pcm16(f), samples)
    assert float_to_pcm16(np.array([1.5, -2.0, 0.99999])).tolist() == [32767, -32768, 32767]
    assert clip_to_pcm16(np.array([40000.0, -40000.0, 12.4])).tolist() == [32767, -32768, 12]


def test_frame_sizes_and_durations() -> None:
    assert frame_bytes(8000, width=1) == 160          # mu-law / A-law
    assert frame_bytes(8000) == 320
    assert frame_bytes(16000) == 640
    assert frame_bytes(24000) == 960
    assert duration_ms(160, 8000, width=1) == 20
    assert duration_ms(960, 24000) == 20
    assert duration_ms(48000, 24000) == 1000


def test_framer_reassembles_arbitrary_chunks_exactly() -> None:
    rng = np.random.default_rng(1)
    stream = rng.integers(0, 256, 160 * 57 + 33, dtype=np.uint8).tobytes()
    framer = Framer(160)
    out: list[bytes] = []
    pos = 0
    while pos < len(stream):
        n = int(rng.integers(0, 700))
        out += framer.feed(stream[pos:pos + n])
        pos += n
    assert all(len(f) == 160 for f in out)
    assert len(out) == 57 and framer.pending == 33
    tail = framer.flush()
    assert tail is not None and tail == stream[-33:] + b"\xff" * 127
    assert b"".join(out) == stream[: 160 * 57]
    assert framer.flush() is None


def test_framer_for_pcm_pads_with_zero_and_reset_drops_tail() -> None:
    framer = Framer.for_format(8000)
    assert framer.size == 320
    assert framer.feed(b"\x01" * 100) == []
    assert framer.flush() == b"\x01" * 100 + b"\x00" * 220
    framer.feed(b"\x02" * 10)
    framer.reset()
    assert framer.pending == 0 and framer.flush() is None
    assert Framer.for_format(8000, width=1).pad == b"\xff"


def test_framer_rejects_bad_settings() -> None:
    with pytest.raises(ValueError):
        Framer(0)
    with pytest.raises(ValueError):
        Framer(160, pad=b"")
