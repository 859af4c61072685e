"""G.711 tables against the stdlib reference (audioop, still present on 3.11/3.12)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from voicecall.audio.g711 import (
    ALAW_SILENCE,
    MULAW_SILENCE,
    alaw_to_mulaw,
    alaw_to_pcm16,
    mulaw_to_alaw,
    mulaw_to_pcm16,
    pcm16_to_alaw,
    pcm16_to_mulaw,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    audioop = pytest.importorskip("audioop")

ALL_PCM = np.arange(-32768, 32768, dtype=np.int16)
ALL_CODES = bytes(range(256))


def _le(samples: np.ndarray) -> bytes:
    return samples.astype("<i2").tobytes()


def test_alaw_encode_is_byte_identical_for_every_sample() -> None:
    assert pcm16_to_alaw(ALL_PCM) == audioop.lin2alaw(_le(ALL_PCM), 2)


def test_alaw_decode_is_identical_for_every_code() -> None:
    ref = np.frombuffer(audioop.alaw2lin(ALL_CODES, 2), dtype="<i2")
    assert np.array_equal(alaw_to_pcm16(ALL_CODES), ref)


def test_mulaw_still_identical_both_ways() -> None:
    assert pcm16_to_mulaw(ALL_PCM) == audioop.lin2ulaw(_le(ALL_PCM), 2)
    ref = np.frombuffer(audioop.ulaw2lin(ALL_CODES, 2), dtype="<i2")
    assert np.array_equal(mulaw_to_pcm16(ALL_CODES), ref)


def test_alaw_round_trip_of_decoded_values_is_exact() -> None:
    # every A-law code decodes to a value that re-encodes to the same code
    assert pcm16_to_alaw(alaw_to_pcm16(ALL_CODES)) == ALL_CODES


def test_silence_codes() -> None:
    zero = np.zeros(4, dtype=np.int16)
    assert pcm16_to_alaw(zero) == bytes([ALAW_SILENCE]) * 4
    assert pcm16_to_mulaw(zero) == bytes([MULAW_SILENCE]) * 4


def test_transcoding_matches_audioop_chain() -> None:
    rng = np.random.default_rng(7)
    mu = rng.integers(0, 256, 4000, dtype=np.uint8).tobytes()
    assert mulaw_to_alaw(mu) == audioop.lin2alaw(audioop.ulaw2lin(mu, 2), 2)
    al = rng.integers(0, 256, 4000, dtype=np.uint8).tobytes()
    assert alaw_to_mulaw(al) == audioop.lin2ulaw(audioop.alaw2lin(al, 2), 2)


def test_alaw_quantisation_error_is_bounded() -> None:
    # A-law is 13-bit: the step grows with level, at most 1/32 of the value (+ 16 LSB near 0)
    err = np.abs(alaw_to_pcm16(pcm16_to_alaw(ALL_PCM)).astype(np.int32) - ALL_PCM)
    assert np.all(err <= np.maximum(np.abs(ALL_PCM.astype(np.int32)) // 32 + 16, 16))


def test_rms_matches_audioop() -> None:
    from voicecall.audio.g711 import rms

    rng = np.random.default_rng(3)
    for level in (0, 100, 3000, 20000):
        pcm = (rng.standard_normal(160) * level).clip(-32768, 32767).astype(np.int16)
        mu = pcm16_to_mulaw(pcm)
        ref = audioop.rms(audioop.ulaw2lin(mu, 2), 2) / 32768
        assert rms(mu) == pytest.approx(ref, abs=1 / 32768)
    assert rms(b"") == 0.0
