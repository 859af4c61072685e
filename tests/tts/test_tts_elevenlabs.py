"""ElevenLabs streaming TTS client against the loopback fake (``ulaw_8000``)."""

from __future__ import annotations

import logging
import time

import pytest
from tts_helpers import ELEVEN_KEY, collect, level

from voicecall.audio.g711 import pcm16_to_mulaw
from voicecall.config import Secret
from voicecall.errors import ConfigError, ProviderError
from voicecall.speech.tts import elevenlabs
from voicecall.testing.fake_elevenlabs_tts import FakeElevenLabsTTS
from voicecall.testing.fake_openai_tts import tone_pcm16

TEXT = "Your order has shipped."
VOICE = "21m00Tcm4TlvDq8ikWAM"


def make(srv: FakeElevenLabsTTS, **cfg: object) -> elevenlabs.TTS:
    return elevenlabs.create({"apiKey": ELEVEN_KEY, "baseUrl": srv.base_url, **cfg})


async def test_ulaw_8000_passes_through_byte_exact(eleven_fake: FakeElevenLabsTTS) -> None:
    tts = make(eleven_fake)
    try:
        chunks = await collect(tts.synthesize(TEXT))
    finally:
        await tts.aclose()
    audio = b"".join(chunks)
    assert len(audio) == eleven_fake.expected_bytes(TEXT) == len(TEXT) * 50 * 8
    assert audio == pcm16_to_mulaw(tone_pcm16(len(TEXT) * 50, 8000))
    assert 0.15 < level(audio) < 0.3
    assert tts.capabilities.telephony_native


async def test_request_is_the_documented_shape(eleven_fake: FakeElevenLabsTTS) -> None:
    tts = make(eleven_fake, apiKey=Secret(ELEVEN_KEY), voiceId=VOICE,
               modelId="eleven_multilingual_v2", languageCode="en", seed=7,
               voiceSettings={"stability": 0.4, "similarityBoost": 0.8, "useSpeakerBoost": True},
               speed=1.1, optimizeStreamingLatency=3)
    try:
        await collect(tts.synthesize(f"  {TEXT}  "))
    finally:
        await tts.aclose()
    (req,) = eleven_fake.requests
    assert (req.method, req.path) == ("POST", f"/v1/text-to-speech/{VOICE}/stream")
    assert req.query == {"output_format": "ulaw_8000", "optimize_streaming_latency": "3"}
    assert req.headers["xi-api-key"] == ELEVEN_KEY
    assert "authorization" not in req.headers
    assert req.json == {"text": TEXT, "model_id": "eleven_multilingual_v2",
                        "voice_settings": {"stability": 0.4, "similarity_boost": 0.8,
                                           "use_speaker_boost": True, "speed": 1.1},
                        "language_code": "en", "seed": 7}


async def test_defaults_and_v1_base_url(eleven_fake: FakeElevenLabsTTS) -> None:
    tts = elevenlabs.create({"apiKey": ELEVEN_KEY, "baseUrl": eleven_fake.base_url + "/v1/"})
    try:
        await collect(tts.synthesize(TEXT))
    finally:
        await tts.aclose()
    (req,) = eleven_fake.requests
    assert req.path == f"/v1/text-to-speech/{elevenlabs.DEFAULT_VOICE_ID}/stream"
    assert req.json == {"text": TEXT, "model_id": "eleven_flash_v2_5"}


async def test_audio_is_streamed_not_buffered(eleven_fake: FakeElevenLabsTTS) -> None:
    eleven_fake.chunk_delay = 0.03
    tts = make(eleven_fake)
    arrivals: list[float] = []
    try:
        async for _ in tts.synthesize("y" * 40):
            arrivals.append(time.monotonic())
    finally:
        await tts.aclose()
    (req,) = eleven_fake.requests
    assert req.finished_at is not None
    assert len(arrivals) >= 10
    assert arrivals[0] < req.finished_at - 0.3


async def test_wrong_key_is_a_provider_error_without_the_key(
        eleven_fake: FakeElevenLabsTTS, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    bad = "xi-wrong-key-that-must-not-leak-42"
    tts = elevenlabs.create({"apiKey": bad, "baseUrl": eleven_fake.base_url})
    try:
        with pytest.raises(ProviderError, match="invalid_api_key") as info:
            await collect(tts.synthesize(TEXT))
    finally:
        await tts.aclose()
    assert info.value.status_code == 401 and not info.value.retryable
    assert bad not in str(info.value) and bad not in caplog.text and bad not in repr(tts)


async def test_validation_errors_are_reported(eleven_fake: FakeElevenLabsTTS) -> None:
    eleven_fake.voices = {VOICE}
    unknown = make(eleven_fake, voiceId="AAAAAAAAAAAAAAAAAAAA")
    bad_model = make(eleven_fake, voiceId=VOICE, modelId="eleven_nonexistent")
    bad_setting = make(eleven_fake, voiceId=VOICE, voiceSettings={"stability": 3})
    try:
        with pytest.raises(ProviderError, match="voice_not_found") as info:
            await collect(unknown.synthesize(TEXT))
        assert info.value.status_code == 404
        with pytest.raises(ProviderError, match="model_not_found"):
            await collect(bad_model.synthesize(TEXT))
        with pytest.raises(ProviderError, match=r"voice_settings\.stability") as info:
            await collect(bad_setting.synthesize(TEXT))
        assert info.value.status_code == 422
    finally:
        for tts in (unknown, bad_model, bad_setting):
            await tts.aclose()


async def test_server_errors_and_cuts(eleven_fake: FakeElevenLabsTTS) -> None:
    tts = make(eleven_fake)
    try:
        eleven_fake.fail_next(503)
        with pytest.raises(ProviderError) as info:
            await collect(tts.synthesize(TEXT))
        assert info.value.status_code == 503 and info.value.retryable
        eleven_fake.cut_next(after_ms=300)
        got: list[bytes] = []
        with pytest.raises(ProviderError, match="mid-stream"):
            async for chunk in tts.synthesize(TEXT):
                got.append(chunk)
        assert len(b"".join(got)) == 300 * 8
    finally:
        await tts.aclose()


def test_config_errors_name_the_key_path() -> None:
    with pytest.raises(ConfigError) as info:
        elevenlabs.create({"voiceId": VOICE})
    assert info.value.path == "tts.providers.elevenlabs.apiKey"
    with pytest.raises(ConfigError, match=r"voiceSettings\.useSpeakerBoost"):
        elevenlabs.create({"apiKey": "k", "voiceSettings": {"useSpeakerBoost": "yes"}})
    with pytest.raises(ConfigError, match=r"tts\.providers\.elevenlabs\.speed"):
        elevenlabs.create({"apiKey": "k", "speed": 3})
