"""Deepgram live transcription: the query on the wire and Deepgram-specific behaviour."""

from __future__ import annotations

import asyncio

import pytest
from sttc_kit import TIMEOUT, TRANSCRIPT, collect, drain, send, tone_burst, types

from voicecall.errors import ConfigError
from voicecall.speech.stt import deepgram
from voicecall.testing.fake_stt import FakeDeepgram


async def test_defaults_on_the_wire() -> None:
    async with FakeDeepgram([TRANSCRIPT]) as fake:
        stt = deepgram.create({"apiKey": fake.api_key, "baseUrl": f"http://127.0.0.1:{fake.port}"})
        session = await stt.open("call-1")
        await asyncio.wait_for(session.wait_ready(), TIMEOUT)
        await fake.wait_for(lambda: bool(fake.connections))
        rec = fake.last
        assert rec.path == "/v1/listen"
        assert rec.headers["authorization"] == "Token ***"
        assert rec.config == {"model": "nova-3", "encoding": "mulaw", "sample_rate": 8000,
                              "channels": 1, "interim_results": True, "endpointing": 800,
                              "utterance_end_ms": 1000, "vad_events": True,
                              "smart_format": True, "punctuate": True}
        await session.aclose()
        assert rec.message_types() == ["CloseStream"]
        assert rec.sent_types()[-1] == "Metadata" and rec.close_code == 1000


async def test_vendor_event_order_for_one_utterance() -> None:
    async with FakeDeepgram([TRANSCRIPT]) as fake:
        session = await deepgram.create({"apiKey": fake.api_key, "endpoint": fake.url}).open("c")
        await asyncio.wait_for(session.wait_ready(), TIMEOUT)
        await send(session, tone_burst(300, 1200))
        await collect(session)
        await fake.wait_for(lambda: "UtteranceEnd" in fake.last.sent_types())
        sent = [e for e in fake.last.sent if e["type"] in ("SpeechStarted", "Results",
                                                            "UtteranceEnd")]
        assert sent[0]["type"] == "SpeechStarted"
        interim = [e for e in sent if e["type"] == "Results" and not e["is_final"]]
        assert [e["channel"]["alternatives"][0]["transcript"] for e in interim] == [
            "where", "where is", "where is my"]
        final = next(e for e in sent if e["type"] == "Results" and e["is_final"])
        assert final["speech_final"] and final["channel"]["alternatives"][0]["transcript"] \
            == TRANSCRIPT
        assert sent[-1]["type"] == "UtteranceEnd"
        await session.aclose()


async def test_confidence_comes_from_the_results() -> None:
    async with FakeDeepgram([TRANSCRIPT], confidence=0.81) as fake:
        session = await deepgram.create({"apiKey": fake.api_key, "endpoint": fake.url}).open("c")
        await send(session, tone_burst())
        events = await collect(session)
        assert events[-1].confidence == pytest.approx(0.81)
        await session.aclose()


async def test_keepalive_while_no_audio_flows() -> None:
    async with FakeDeepgram(idle_timeout_s=0.5) as fake:
        stt = deepgram.STT(fake.api_key, url=fake.url, keepalive_s=0.05)
        session = await stt.open("call-1")
        await asyncio.wait_for(session.wait_ready(), TIMEOUT)
        await fake.wait_for(lambda: fake.last.keepalives >= 3)
        assert all(m == {"type": "KeepAlive"} for m in fake.last.messages)
        await asyncio.sleep(0.6)               # longer than the idle timeout: still alive
        assert not fake.last.closed
        await session.aclose()


async def test_idle_socket_is_closed_by_the_server() -> None:
    async with FakeDeepgram(idle_timeout_s=0.2) as fake:
        session = await deepgram.STT(fake.api_key, url=fake.url, keepalive_s=60).open("c")
        await asyncio.wait_for(session.wait_ready(), TIMEOUT)
        events = await drain(session)
        assert types(events) == ["ready", "error", "closed"]
        assert "1011" in events[1].text and "net0001" in events[1].text
        assert fake.last.close_code == 1011
        await session.aclose()


async def test_linear16_is_resampled_to_the_configured_rate() -> None:
    async with FakeDeepgram([TRANSCRIPT]) as fake:
        stt = deepgram.create({"apiKey": fake.api_key, "endpoint": fake.url,
                               "encoding": "linear16", "sampleRate": 16000})
        session = await stt.open("call-1")
        sent = await send(session, tone_burst())
        events = await collect(session)
        assert events[-1].text == TRANSCRIPT
        assert (fake.last.config["encoding"], fake.last.config["sample_rate"]) == ("linear16",
                                                                                   16000)
        # 16-bit samples at 16 kHz arrived (the resampler may still hold ~100 ms back).
        await fake.wait_for(lambda: sent / 8 - 200 < fake.last.audio_ms <= sent / 8)
        assert fake.last.audio_bytes == round(fake.last.audio_ms * 32)
        await session.aclose()


async def test_without_interim_results_or_endpointing() -> None:
    async with FakeDeepgram([TRANSCRIPT]) as fake:
        stt = deepgram.create({"apiKey": fake.api_key, "endpoint": fake.url,
                               "interimResults": False, "endpointingMs": False})
        assert not stt.capabilities.interim_results
        session = await stt.open("call-1")
        await send(session, tone_burst())
        events = await collect(session, "final")
        assert "partial" not in types(events) and events[-1].text == TRANSCRIPT
        cfg = fake.last.config
        assert cfg["endpointing"] is False and cfg["interim_results"] is False
        assert "utterance_end_ms" not in cfg
        final = next(e for e in fake.last.sent if e["type"] == "Results" and e["is_final"]
                     and e["channel"]["alternatives"][0]["transcript"])
        assert final["speech_final"] is False
        await session.aclose()


async def test_final_segments_join_until_utterance_end() -> None:
    """Endpointing off: the final arrives with UtteranceEnd, not speech_final."""
    async with FakeDeepgram(["one two three"]) as fake:
        stt = deepgram.create({"apiKey": fake.api_key, "endpoint": fake.url,
                               "endpointingMs": False, "utteranceEndMs": 1000})
        session = await stt.open("call-1")
        await send(session, tone_burst(300, 1100))
        events = await collect(session)
        assert events[-1].text == "one two three"
        assert fake.last.sent_types()[-1] == "UtteranceEnd"
        await session.aclose()


async def test_keyterms_and_language_in_the_query() -> None:
    async with FakeDeepgram() as fake:
        stt = deepgram.create({"apiKey": fake.api_key, "endpoint": fake.url, "language": "en-US",
                               "keyterms": ["Acme", "order number"], "model": "nova-2-phonecall"})
        session = await stt.open("call-1")
        await asyncio.wait_for(session.wait_ready(), TIMEOUT)
        await fake.wait_for(lambda: bool(fake.connections))
        assert fake.last.config["keyterm"] == ["Acme", "order number"]
        assert fake.last.config["language"] == "en-US"
        assert fake.last.config["model"] == "nova-2-phonecall"
        await session.aclose()


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"deepgram\.sampleRate"):
        deepgram.create({"apiKey": "k", "sampleRate": 16000})              # mulaw is 8 kHz
    with pytest.raises(ConfigError, match=r"deepgram\.encoding.*allowed: mulaw, linear16"):
        deepgram.create({"apiKey": "k", "encoding": "opus"})
    with pytest.raises(ConfigError, match=r"deepgram\.interimResults"):
        deepgram.create({"apiKey": "k", "interimResults": "yes"})
    assert deepgram.create({"apiKey": "k"}).url.startswith("wss://api.deepgram.com/v1/listen?")
