"""WebrtcVad: same interface as EnergyVad, speech-like audio triggers, silence re-arms."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from voicecall.audio.g711 import frames, pcm16_to_mulaw
from voicecall.audio.vad import EnergyVad, WebrtcVad

pytest.importorskip("webrtcvad")

RATE = 8000


def voiced(seconds: float, f0: float = 120.0, level: float = 0.3) -> npt.NDArray[np.int16]:
    """A harmonic-rich periodic signal (glottal-pulse-like), which the GMM scores as speech."""
    t = np.arange(int(RATE * seconds)) / RATE
    x = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 31) if f0 * k < 3800)
    x = np.asarray(x) / np.max(np.abs(x))
    return (x * level * 32767).astype(np.int16)


def mulaw_frames(samples: npt.NDArray[np.int16]) -> list[bytes]:
    return frames(pcm16_to_mulaw(samples))


def run(vad: WebrtcVad | EnergyVad, fs: list[bytes]) -> list[tuple[int, str]]:
    return [(i, ev) for i, f in enumerate(fs) if (ev := vad.feed(f)) is not None]


def test_start_after_trigger_frames_and_end_after_release() -> None:
    audio = np.concatenate([np.zeros(RATE // 2, np.int16), voiced(1.0), np.zeros(RATE, np.int16)])
    vad = WebrtcVad(aggressiveness=2, trigger_frames=3, release_frames=15)
    events = run(vad, mulaw_frames(audio))
    assert events[0] == (25 + 2, "start")
    # "end" follows the release run; WebRTC adds its own short hangover (a few frames)
    end_at, kind = events[1]
    assert kind == "end" and 75 + 14 <= end_at <= 75 + 14 + 10
    assert len(events) == 2
    assert not vad.speaking


def test_same_interface_as_energy_vad() -> None:
    audio = np.concatenate([np.zeros(RATE // 2, np.int16), voiced(1.0), np.zeros(RATE, np.int16)])
    fs = mulaw_frames(audio)
    kinds = [ev for _, ev in run(WebrtcVad(), fs)]
    assert kinds == [ev for _, ev in run(EnergyVad(), fs)] == ["start", "end"]


def test_silence_and_quiet_noise_do_not_trigger_when_aggressive() -> None:
    rng = np.random.default_rng(3)
    noise = (rng.standard_normal(RATE * 2) * 0.02 * 32767).astype(np.int16)
    assert run(WebrtcVad(aggressiveness=3), mulaw_frames(np.zeros(RATE * 2, np.int16))) == []
    strict = WebrtcVad(aggressiveness=3)
    lenient = WebrtcVad(aggressiveness=0)
    fs = mulaw_frames(noise)
    assert sum(map(strict.is_speech, fs)) < sum(map(lenient.is_speech, fs))
    assert run(strict, fs) == []


def test_accepts_pcm16_at_16k_and_10_30_ms_frames() -> None:
    vad = WebrtcVad(sample_rate=16000, encoding="pcm16")
    assert vad.is_speech(np.zeros(320, np.int16).tobytes()) is False   # 20 ms
    mu = WebrtcVad()
    assert mu.is_speech(pcm16_to_mulaw(voiced(0.03))) is True          # 30 ms
    assert mu.is_speech(pcm16_to_mulaw(voiced(0.01))) in (True, False)  # 10 ms is valid


def test_rejects_bad_frames_and_settings() -> None:
    with pytest.raises(ValueError):
        WebrtcVad().feed(b"\xff" * 100)
    with pytest.raises(ValueError):
        WebrtcVad(aggressiveness=4)
    with pytest.raises(ValueError):
        WebrtcVad(sample_rate=11025)


def test_reset_clears_state() -> None:
    vad = WebrtcVad(trigger_frames=1)
    assert vad.feed(pcm16_to_mulaw(voiced(0.02))) == "start"
    vad.reset()
    assert not vad.speaking
    assert vad.feed(pcm16_to_mulaw(voiced(0.02))) == "start"
