"""xAI streaming STT: the query on the wire and xAI-specific behaviour."""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qs, urlsplit

import pytest
from sttc_kit import TIMEOUT, TRANSCRIPT, collect, send, tone_burst, types

from voicecall.errors import ConfigError
from voicecall.speech.stt import xai
from voicecall.testing.fake_stt import FakeXai


def test_default_endpoint_and_query() -> None:
    stt = xai.create({"apiKey": "xai-k"})
    parts = urlsplit(stt.url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == "wss://api.x.ai/v1/stt" \
        == xai.DEFAULT_URL
    assert parse_qs(parts.query) == {"sample_rate": ["8000"], "encoding": ["mulaw"],
                                     "interim_results": ["true"], "endpointing": ["800"]}
    assert stt.capabilities.interim_results and stt.capabilities.server_vad


async def test_defaults_on_the_wire() -> None:
    async with FakeXai([TRANSCRIPT]) as fake:
        # xAI's usual base URL form; "/stt" is appended.
        stt = xai.create({"apiKey": fake.api_key, "baseUrl": f"http://127.0.0.1:{fake.port}/v1"})
        session = await stt.open("call-1")
        await asyncio.wait_for(session.wait_ready(), TIMEOUT)
        rec = fake.last
        assert rec.path == "/v1/stt"
        assert rec.headers["authorization"] == "Bearer ***"
        assert rec.config == {"sample_rate": 8000, "encoding": "mulaw", "interim_results": True,
                              "endpointing": 800}
        await send(session, tone_burst())
        await collect(session)
        await session.aclose()
        assert rec.message_types() == ["audio.done"]
        assert rec.sent_types()[-1] == "transcript.done" and rec.close_code == 1000
        assert rec.sent[-1]["text"] == TRANSCRIPT


async def test_nothing_is_sent_before_transcript_created() -> None:
    async with FakeXai([TRANSCRIPT], ready_delay=0.2) as fake:
        session = await xai.create({"apiKey": fake.api_key, "endpoint": fake.url}).open("c")
        sent = await send(session, tone_burst())
        await fake.wait_for(lambda: bool(fake.connections) and fake.last.authorized)
        await asyncio.sleep(0.1)
        assert fake.last.audio_bytes == 0 and fake.last.early_audio_bytes == 0
        events = await collect(session)
        assert events[-1].text == TRANSCRIPT
        await fake.wait_for(lambda: fake.last.audio_bytes == sent)
        assert fake.last.early_audio_bytes == 0
        await session.aclose()


async def test_speech_start_comes_with_the_first_transcript() -> None:
    async with FakeXai(["a b c d e"]) as fake:
        session = await xai.create({"apiKey": fake.api_key, "endpoint": fake.url}).open("c")
        await send(session, tone_burst(500, 1000))
        events = await collect(session)
        kinds = types(events)
        assert kinds[:3] == ["ready", "speech-start", "partial"]
        assert [e.text for e in events if e.type == "partial"] == ["a", "a b", "a b c", "a b c d",
                                                                   "a b c d e"]
        assert events[-1].text == "a b c d e"
        await session.aclose()


async def test_pcm_at_16k_and_no_interim_results() -> None:
    async with FakeXai([TRANSCRIPT]) as fake:
        stt = xai.create({"apiKey": fake.api_key, "endpoint": fake.url, "encoding": "pcm",
                          "sampleRate": 16000, "interimResults": False, "endpointingMs": 300,
                          "language": "en"})
        assert not stt.capabilities.interim_results
        session = await stt.open("call-1")
        await send(session, tone_burst(300, 400))          # 300 ms endpointing is enough
        events = await collect(session)
        assert types(events) == ["ready", "speech-start", "final"]
        assert fake.last.config == {"sample_rate": 16000, "encoding": "pcm",
                                    "interim_results": False, "endpointing": 300,
                                    "language": "en"}
        await session.aclose()


async def test_pending_locked_text_is_flushed_on_close() -> None:
    """audio.done ends an utterance mid-speech: its text still arrives as a final."""
    async with FakeXai([TRANSCRIPT]) as fake:
        session = await xai.create({"apiKey": fake.api_key, "endpoint": fake.url}).open("c")
        await send(session, tone_burst(300, 100))          # no endpoint yet
        await collect(session, "partial")
        await session.aclose()
        events = await collect(session, "closed")
        assert types(events)[-2:] == ["final", "closed"] and events[-2].text == TRANSCRIPT


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"xai\.endpointingMs"):
        xai.create({"apiKey": "k", "endpointingMs": 6000})
    with pytest.raises(ConfigError, match=r"xai\.encoding"):
        xai.create({"apiKey": "k", "encoding": "alaw"})
    with pytest.raises(ConfigError, match=r"xai\.sampleRate"):
        xai.create({"apiKey": "k", "encoding": "pcm", "sampleRate": 11025})
