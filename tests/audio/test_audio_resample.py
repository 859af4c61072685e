"""Resampling quality: tones survive round trips, out-of-band content is filtered out."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from voicecall.audio.resample import StreamResampler, resample_pcm16


def tone(freq: float, rate: int, seconds: float = 1.0, level: float = 0.5) -> npt.NDArray[np.int16]:
    t = np.arange(int(rate * seconds)) / rate
    return (np.sin(2 * np.pi * freq * t) * level * 32767).astype(np.int16)


def level_at(samples: npt.NDArray[np.int16], rate: int, freq: float) -> float:
    """Amplitude (fraction of full scale) of the ``freq`` component, Hann-windowed."""
    x = samples.astype(np.float64) / 32767
    w = np.hanning(x.size)
    spec = np.abs(np.fft.rfft(x * w)) * 2 / w.sum()
    bins = np.fft.rfftfreq(x.size, 1 / rate)
    k = int(np.argmin(np.abs(bins - freq)))
    return float(spec[max(k - 2, 0):k + 3].max())


def test_1khz_survives_8k_16k_8k() -> None:
    src = tone(1000, 8000)
    up = resample_pcm16(src, 8000, 16000)
    assert up.dtype == np.int16 and abs(up.size - 16000) <= 1
    back = resample_pcm16(up, 16000, 8000)
    assert abs(back.size - src.size) <= 1
    n = min(back.size, src.size)
    mid = slice(400, n - 400)                         # ignore filter edges
    err = back[mid].astype(np.float64) - src[mid]
    rel = np.sqrt(np.mean(err ** 2)) / np.sqrt(np.mean(src[mid].astype(np.float64) ** 2))
    assert rel < 0.01
    assert abs(level_at(up, 16000, 1000) - 0.5) < 0.01


def test_5khz_at_48k_is_removed_when_going_to_8k() -> None:
    # 5 kHz is above the 4 kHz Nyquist limit of 8 kHz audio: a resampler without
    # an anti-aliasing filter folds it to 3 kHz; ours must drop it.
    mixed = (tone(5000, 48000, level=0.4).astype(np.int32) + tone(1000, 48000, level=0.4))
    out = resample_pcm16(mixed.astype(np.int16), 48000, 8000)
    assert level_at(out, 8000, 3000) < 0.001          # no alias (>= 52 dB down)
    assert abs(level_at(out, 8000, 1000) - 0.4) < 0.01
    naive = mixed[::6].astype(np.int16)               # decimation without a filter, for contrast
    assert level_at(naive, 8000, 3000) > 0.3


def test_stream_resampler_matches_whole_buffer_and_has_no_seams() -> None:
    src = tone(440, 24000, seconds=2.0)
    rs = StreamResampler(24000, 8000)
    parts = [rs.feed(src[i:i + 480]) for i in range(0, src.size, 480)]
    parts.append(rs.feed(np.zeros(0, dtype=np.int16), last=True))
    streamed = np.concatenate(parts)
    whole = resample_pcm16(src, 24000, 8000)
    assert abs(streamed.size - whole.size) <= 2
    n = min(streamed.size, whole.size)
    diff = np.abs(streamed[200:n - 200].astype(np.int32) - whole[200:n - 200])
    assert diff.max() <= 64                           # chunking leaves no clicks


def test_same_rate_is_identity() -> None:
    src = tone(300, 8000, 0.1)
    assert resample_pcm16(src, 8000, 8000) is src
    assert StreamResampler(8000, 8000).feed(src) is src


@pytest.mark.parametrize(("src", "dst"), [(8000, 16000), (24000, 8000), (16000, 8000),
                                        (48000, 8000), (8000, 24000), (16000, 24000)])
def test_live_resampling_gives_each_frame_at_once(src: int, dst: int) -> None:
    # soxr's stream API would hold 60-110 ms back and release it in blocks; every
    # held-back millisecond delays a turn. Here each 20 ms in is 20 ms out at once.
    rs = StreamResampler(src, dst)
    x = tone(1000, src)
    sizes = [rs.feed(x[i:i + src // 50]).size for i in range(0, x.size, src // 50)]
    assert set(sizes[1:]) == {dst // 50}
    assert sizes[0] == dst // 50 - rs.delay_samples and rs.delay_ms <= 3.0
    # The filter's delay comes out at the end: the length is preserved.
    assert sum(sizes) + rs.feed(np.zeros(0, np.int16), last=True).size == dst


@pytest.mark.parametrize(("src", "dst"), [(24000, 8000), (48000, 8000), (16000, 8000)])
def test_live_downsampling_keeps_the_band_and_removes_aliases(src: int, dst: int) -> None:
    def through(signal: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
        rs = StreamResampler(src, dst)
        return np.concatenate([rs.feed(signal[i:i + src // 50])
                               for i in range(0, signal.size, src // 50)])[400:]

    # 3.4 kHz (the telephone band edge) within 0.5 dB; above the new Nyquist, > 70 dB down.
    band = through(tone(3400, src, 2.0)).astype(np.float64)
    assert abs(20 * np.log10(np.sqrt(np.mean(band ** 2)) / (0.5 * 32767 / np.sqrt(2)))) < 0.5
    alias = through(tone(dst / 2 * 1.15, src, 2.0)).astype(np.float64)
    assert 20 * np.log10(max(np.sqrt(np.mean(alias ** 2)), 1e-9) / (0.5 * 32767)) < -70


def test_live_upsampling_is_the_band_limited_signal_delayed() -> None:
    # 8 -> 16 kHz of a 1 kHz tone is that tone at 16 kHz.
    rs = StreamResampler(8000, 16000)
    x = tone(1000, 8000)
    y = np.concatenate([rs.feed(x[i:i + 160]) for i in range(0, x.size, 160)])
    t = np.arange(y.size) / 16000                         # aligned with the input
    ideal = np.sin(2 * np.pi * 1000 * t) * 0.5 * 32767
    assert np.abs(y[400:] - ideal[400:]).max() < 40      # int16 rounding of the input
