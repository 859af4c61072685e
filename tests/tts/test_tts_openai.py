"""OpenAI TTS client against the loopback fake of ``POST /v1/audio/speech``."""

from __future__ import annotations

import base64
import io
import json
import logging
import time
import wave

import httpx
import numpy as np
import pytest
from tts_helpers import OPENAI_KEY, collect, level

from voicecall.audio.g711 import mulaw_to_pcm16
from voicecall.config import Secret
from voicecall.errors import ConfigError, ProviderError
from voicecall.speech.tts import openai
from voicecall.testing.fake_openai_tts import FakeOpenAITTS

TEXT = "Your table for two is booked at seven."


def make(srv: FakeOpenAITTS, **cfg: object) -> openai.TTS:
    return openai.create({"apiKey": OPENAI_KEY, "baseUrl": srv.base_url, **cfg})


def peak_hz(mulaw: bytes) -> float:
    pcm = mulaw_to_pcm16(mulaw).astype(np.float64)
    spectrum = np.abs(np.fft.rfft(pcm * np.hanning(pcm.size)))
    return float(np.fft.rfftfreq(pcm.size, 1 / 8000)[int(np.argmax(spectrum))])


async def test_pcm_24k_becomes_mulaw_8k_with_a_third_of_the_samples(
        openai_fake: FakeOpenAITTS) -> None:
    tts = make(openai_fake)
    try:
        audio = b"".join(await collect(tts.synthesize(TEXT)))
    finally:
        await tts.aclose()
    expected = openai_fake.expected_pcm_samples(TEXT) / 3
    assert abs(len(audio) - expected) <= 2
    assert len(audio) == pytest.approx(len(TEXT) * 50 * 8, abs=2)  # 50 ms/char at 8 kHz
    assert 0.15 < level(audio) < 0.3  # the 0.3-amplitude tone survived, no clipping
    assert peak_hz(audio) == pytest.approx(440, abs=5)  # right rate: pitch unchanged


async def test_request_is_the_documented_shape(openai_fake: FakeOpenAITTS) -> None:
    tts = make(openai_fake, apiKey=Secret(OPENAI_KEY), voice="marin", speed=1.25,
               instructions="Warm and concise.")
    try:
        await collect(tts.synthesize("Hello."))
    finally:
        await tts.aclose()
    (req,) = openai_fake.requests
    assert (req.method, req.path) == ("POST", "/v1/audio/speech")
    assert req.headers["authorization"] == f"Bearer {OPENAI_KEY}"
    assert req.json == {"model": "gpt-4o-mini-tts", "input": "Hello.", "voice": "marin",
                        "response_format": "pcm", "speed": 1.25,
                        "instructions": "Warm and concise."}


async def test_defaults_custom_voice_and_tts1_without_instructions(
        openai_fake: FakeOpenAITTS) -> None:
    plain = make(openai_fake)
    custom = make(openai_fake, model="tts-1", voiceId="voice_abc123", instructions="Calm.")
    try:
        await collect(plain.synthesize("One."))
        await collect(custom.synthesize("Two."))
    finally:
        await plain.aclose()
        await custom.aclose()
    first, second = openai_fake.requests
    assert first.json["voice"] == "coral" and first.json["model"] == "gpt-4o-mini-tts"
    assert "instructions" not in first.json and "speed" not in first.json
    assert second.json["voice"] == {"id": "voice_abc123"}
    assert second.json["model"] == "tts-1" and "instructions" not in second.json


async def test_audio_is_streamed_not_buffered(openai_fake: FakeOpenAITTS) -> None:
    openai_fake.chunk_delay = 0.03  # 20 chunks of 100 ms: ~0.6 s on the wire
    text = "x" * 40
    tts = make(openai_fake)
    arrivals: list[float] = []
    try:
        async for _ in tts.synthesize(text):
            arrivals.append(time.monotonic())
    finally:
        await tts.aclose()
    (req,) = openai_fake.requests
    assert req.finished_at is not None and req.first_byte_at is not None
    assert len(arrivals) >= 10
    assert arrivals[0] < req.finished_at - 0.3  # played long before the fake was done
    assert arrivals[0] - req.first_byte_at < 0.3


async def test_wrong_key_is_a_provider_error_without_the_key(
        openai_fake: FakeOpenAITTS, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    bad = "sk-wrong-key-that-must-not-leak-42"
    tts = openai.create({"apiKey": Secret(bad), "baseUrl": openai_fake.base_url})
    try:
        with pytest.raises(ProviderError) as info:
            await collect(tts.synthesize(TEXT))
    finally:
        await tts.aclose()
    err = info.value
    assert err.status_code == 401 and not err.retryable
    assert "401" in str(err) and "Incorrect API key" in str(err)
    # The fake echoes the presented key in full; the client must not repeat it.
    assert bad not in str(err) and bad not in repr(err.args) and bad not in caplog.text
    assert bad not in repr(tts)


@pytest.mark.parametrize(("status", "retryable"), [(500, True), (429, True), (400, False)])
async def test_http_errors_map_to_provider_errors(openai_fake: FakeOpenAITTS, status: int,
                                                  retryable: bool) -> None:
    openai_fake.fail_next(status, retry_after=1 if status == 429 else None)
    tts = make(openai_fake)
    try:
        with pytest.raises(ProviderError) as info:
            await collect(tts.synthesize(TEXT))
    finally:
        await tts.aclose()
    assert info.value.status_code == status
    assert info.value.retryable is retryable


async def test_fake_validates_requests_strictly(openai_fake: FakeOpenAITTS) -> None:
    tts = make(openai_fake, voice="robot")
    try:
        with pytest.raises(ProviderError, match="Invalid value for 'voice'") as info:
            await collect(tts.synthesize(TEXT))
    finally:
        await tts.aclose()
    assert info.value.status_code == 400


async def test_cut_mid_stream_raises_after_partial_audio(openai_fake: FakeOpenAITTS) -> None:
    openai_fake.cut_next(after_ms=400)
    tts = make(openai_fake)
    got: list[bytes] = []
    try:
        with pytest.raises(ProviderError, match="mid-stream") as info:
            async for chunk in tts.synthesize(TEXT):
                got.append(chunk)
    finally:
        await tts.aclose()
    assert info.value.retryable
    assert 0 < len(b"".join(got)) <= 400 * 8
    assert openai_fake.requests[0].cut


async def test_long_text_is_split_under_the_input_limit(openai_fake: FakeOpenAITTS) -> None:
    openai_fake.ms_per_char = 1.0
    sentence = "This sentence is repeated to exceed the limit. "
    text = (sentence * 100).strip()  # ~4,700 characters
    tts = make(openai_fake)
    try:
        audio = b"".join(await collect(tts.synthesize(text)))
    finally:
        await tts.aclose()
    inputs = [r.json["input"] for r in openai_fake.requests]
    assert len(inputs) == 2 and all(len(i) <= 4096 for i in inputs)
    assert " ".join(inputs) == text
    expected = sum(openai_fake.expected_pcm_samples(i) for i in inputs) / 3
    assert abs(len(audio) - expected) <= 4


def test_config_errors_name_the_key_path() -> None:
    with pytest.raises(ConfigError) as info:
        openai.create({"voice": "coral"})
    assert info.value.path == "tts.providers.openai.apiKey"
    assert "tts.providers.openai.apiKey" in str(info.value)
    with pytest.raises(ConfigError, match=r"tts\.providers\.openai\.speed"):
        openai.create({"apiKey": "k", "speed": 9})
    with pytest.raises(ConfigError, match=r"tts\.providers\.openai\.baseUrl"):
        openai.create({"apiKey": "k", "baseUrl": "ftp://x"})


async def test_blank_text_makes_no_request(openai_fake: FakeOpenAITTS) -> None:
    tts = make(openai_fake)
    try:
        assert await collect(tts.synthesize("   ")) == []
    finally:
        await tts.aclose()
    assert openai_fake.requests == []


async def test_fake_also_serves_wav_and_sse(openai_fake: FakeOpenAITTS) -> None:
    body = {"model": "gpt-4o-mini-tts", "input": "Hi there.", "voice": "alloy"}
    auth = {"Authorization": f"Bearer {OPENAI_KEY}"}
    url = f"{openai_fake.base_url}/audio/speech"
    samples = openai_fake.expected_pcm_samples("Hi there.")
    async with httpx.AsyncClient(trust_env=False) as http:
        wav_reply = await http.post(url, json={**body, "response_format": "wav"}, headers=auth)
        sse_reply = await http.post(url, headers=auth, json={
            **body, "response_format": "pcm", "stream_format": "sse"})
        mp3_reply = await http.post(url, json=body, headers=auth)
    with wave.open(io.BytesIO(wav_reply.content)) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getnframes()) == (24000, 1, samples)
    events = [json.loads(line[6:]) for line in sse_reply.text.splitlines()
              if line.startswith("data: ")]
    assert {e["type"] for e in events[:-1]} == {"speech.audio.delta"}
    assert events[-1]["type"] == "speech.audio.done" and "usage" in events[-1]
    assert sum(len(base64.b64decode(e["audio"])) for e in events[:-1]) == samples * 2
    assert mp3_reply.status_code == 400  # the fake encodes no mp3, and says so
