"""OpenAI Realtime transcription: what goes on the wire, and OpenAI-specific behaviour."""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qs, urlsplit

import pytest
from sttc_kit import TIMEOUT, TRANSCRIPT, collect, drain, send, tone_burst, types

from voicecall.errors import ConfigError, ProviderError
from voicecall.speech.stt import openai
from voicecall.testing.fake_stt import FakeOpenAITranscription


async def test_defaults_on_the_wire() -> None:
    async with FakeOpenAITranscription([TRANSCRIPT]) as fake:
        # baseUrl as users write it for OpenAI-compatible proxies: "/realtime" is appended.
        stt = openai.create({"apiKey": fake.api_key, "baseUrl": f"http://127.0.0.1:{fake.port}/v1"})
        session = await stt.open("call-1")
        await asyncio.wait_for(session.wait_ready(), TIMEOUT)
        rec = fake.last
        assert rec.path == "/v1/realtime"
        assert rec.query == {"intent": ["transcription"]}          # no model in the URL
        assert rec.headers["authorization"] == "Bearer ***"
        assert "openai-beta" not in rec.headers
        assert rec.messages[0] == {"type": "session.update", "session": {
            "type": "transcription",
            "audio": {"input": {
                "format": {"type": "audio/pcmu"},
                "transcription": {"model": "gpt-4o-transcribe"},
                "turn_detection": {"type": "server_vad", "threshold": 0.5,
                                   "prefix_padding_ms": 300, "silence_duration_ms": 800},
            }},
        }}
        td = rec.config["audio"]["input"]["turn_detection"]     # the session now in force
        assert (td["silence_duration_ms"], td["threshold"]) == (800, 0.5)
        await session.aclose()


def test_default_url_is_the_transcription_intent() -> None:
    stt = openai.create({"apiKey": "sk-x"})
    assert stt.url == "wss://api.openai.com/v1/realtime?intent=transcription"
    assert stt.model == openai.DEFAULT_MODEL == "gpt-4o-transcribe"
    assert (stt.silence_duration_ms, stt.vad_threshold) == (800, 0.5)


async def test_configured_values_reach_the_session() -> None:
    async with FakeOpenAITranscription([TRANSCRIPT]) as fake:
        stt = openai.create({"apiKey": fake.api_key, "endpoint": fake.url,
                             "model": "gpt-4o-mini-transcribe", "language": "en",
                             "prompt": "order numbers", "silenceDurationMs": 500,
                             "vad_threshold": 0.6, "noiseReduction": "near_field"})
        session = await stt.open("call-1")
        await asyncio.wait_for(session.wait_ready(), TIMEOUT)
        inp = fake.last.config["audio"]["input"]
        assert inp["transcription"] == {"model": "gpt-4o-mini-transcribe", "language": "en",
                                        "prompt": "order numbers"}
        assert inp["turn_detection"]["silence_duration_ms"] == 500
        assert inp["turn_detection"]["threshold"] == 0.6
        assert inp["noise_reduction"] == {"type": "near_field"}
        # 500 ms of silence is enough to end the turn now.
        await send(session, tone_burst(300, 600))
        events = await collect(session)
        assert events[-1].text == TRANSCRIPT
        await session.aclose()


async def test_rejected_session_update_fails_readiness() -> None:
    async with FakeOpenAITranscription() as fake:
        stt = openai.create({"apiKey": fake.api_key, "endpoint": fake.url, "model": "gpt-bogus"})
        session = await stt.open("call-1")
        with pytest.raises(ProviderError, match="invalid_value.*gpt-bogus"):
            await asyncio.wait_for(session.wait_ready(), TIMEOUT)
        assert types(await drain(session)) == ["error", "closed"]
        assert fake.last.sent_types() == ["session.created", "error"]
        await session.aclose()


async def test_recoverable_error_keeps_the_session() -> None:
    async with FakeOpenAITranscription([TRANSCRIPT], error_after_ms=60) as fake:
        session = await openai.create({"apiKey": fake.api_key, "endpoint": fake.url}).open("c")
        await asyncio.wait_for(session.wait_ready(), TIMEOUT)
        await send(session, tone_burst())
        events = await collect(session)
        assert "error" in types(events)
        assert events[-1].type == "final" and events[-1].text == TRANSCRIPT
        await session.aclose()


async def test_two_turns_two_finals_in_order() -> None:
    async with FakeOpenAITranscription(["first turn", "second turn"], event_delay=0.001) as fake:
        session = await openai.create({"apiKey": fake.api_key, "endpoint": fake.url}).open("c")
        await asyncio.wait_for(session.wait_ready(), TIMEOUT)
        await send(session, tone_burst() + tone_burst())
        first = await collect(session)
        second = await collect(session)
        assert first[-1].text == "first turn" and second[-1].text == "second turn"
        assert types(second).count("speech-start") == 1
        await session.aclose()


async def test_final_delay_and_partials_come_after_the_commit() -> None:
    async with FakeOpenAITranscription([TRANSCRIPT], final_delay=0.1) as fake:
        session = await openai.create({"apiKey": fake.api_key, "endpoint": fake.url}).open("c")
        await asyncio.wait_for(session.wait_ready(), TIMEOUT)
        await send(session, tone_burst())
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        events = await collect(session)
        assert loop.time() - t0 >= 0.1
        sent = fake.last.sent_types()
        assert sent.index("input_audio_buffer.committed") < sent.index(
            "conversation.item.input_audio_transcription.delta")
        assert [e.text for e in events if e.type == "partial"] == [
            "where", "where is", "where is my", "where is my order"]
        await session.aclose()


def test_config_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"streaming\.providers\.openai\.vadThreshold"):
        openai.create({"apiKey": "k", "vadThreshold": 2})
    with pytest.raises(ConfigError, match=r"streaming\.providers\.openai\.silenceDurationMs"):
        openai.create({"apiKey": "k", "silenceDurationMs": "800"})
    with pytest.raises(ConfigError, match=r"streaming\.providers\.openai\.noiseReduction"):
        openai.create({"apiKey": "k", "noiseReduction": "loud"})


def test_endpoint_override_keeps_its_path_and_gets_the_intent() -> None:
    stt = openai.create({"apiKey": "k", "endpoint": "https://proxy.local/openai/v1/realtime"})
    parts = urlsplit(stt.url)
    assert (parts.scheme, parts.path) == ("wss", "/openai/v1/realtime")
    assert parse_qs(parts.query) == {"intent": ["transcription"]}
