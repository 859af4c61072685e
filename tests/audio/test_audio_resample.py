"""Resampling quality: tones survive round trips, out-of-band content is filtered out."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

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
    assert diff.max() <= 64                           # same filter, chunking leaves no clicks


def test_same_rate_is_identity() -> None:
    src = tone(300, 8000, 0.1)
    assert resample_pcm16(src, 8000, 8000) is src
    assert StreamResampler(8000, 8000).feed(src) is src
