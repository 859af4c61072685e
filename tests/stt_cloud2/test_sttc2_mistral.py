"""Mistral Voxtral realtime STT client against its wire-protocol fake, over real sockets."""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

import numpy as np
import pytest

from voicecall.errors import ProviderError
from voicecall.speech.stt import mistral
from voicecall.testing.fake_mistral import FakeMistral

KEY = "mistral-test-key-2b81"
TEXT = "Where is my order?"


def _stt(fake: FakeMistral, **cfg: Any) -> mistral.STT:
    return mistral.create({"apiKey": KEY, "baseUrl": fake.url, **cfg})


async def _feed(session: mistral.MistralSttSession, frames: list[bytes]) -> None:
    for frame in frames:
        await session.send_audio(frame)


def _kinds(events: list[Any]) -> list[str]:
    return [ev.type for ev in events]


async def test_tone_burst_gives_growing_partials_then_final(burst, collect) -> None:
    async with FakeMistral([TEXT], api_key=KEY) as fake:
        stt = _stt(fake)
        assert stt.name == "mistral"
        assert stt.capabilities.interim_results and not stt.capabilities.server_vad
        session = await stt.open("call-1")
        await session.wait_ready()
        await _feed(session, burst)
        events = await collect(session, until="final")
        await session.aclose()

        kinds = _kinds(events)
        assert kinds[0] == "ready"
        assert kinds.index("speech-start") < kinds.index("partial") < kinds.index("final")
        partials = [ev.text for ev in events if ev.type == "partial"]
        assert partials == ["Where", "Where is", "Where is my", "Where is my order?"]
        assert events[-1].text == TEXT
        assert session.language == "en"

        conn = fake.connections[0]
        assert conn.headers["authorization"] == f"Bearer {KEY}"
        assert KEY not in conn.path
        assert conn.protocol_errors == []
        assert bytes(conn.audio) == b"".join(burst)          # mu-law straight through
        appends = conn.of_type("input_audio.append")
        assert len(appends) == len(burst)
        assert base64.b64decode(appends[0]["audio"]) == burst[0]


async def test_defaults_are_on_the_wire_and_flush_follows_the_silence(burst, collect) -> None:
    async with FakeMistral([TEXT], api_key=KEY) as fake:
        session = await _stt(fake).open("call-1")
        await session.wait_ready()
        await _feed(session, burst)
        await collect(session, until="final")
        await session.aclose()
        conn = fake.connections[0]
        assert conn.query == {"model": ["voxtral-mini-transcribe-realtime-2602"]}
        assert conn.messages[0] == {
            "type": "session.update",
            "session": {"audio_format": {"encoding": "pcm_mulaw", "sample_rate": 8000},
                        "target_streaming_delay_ms": 480}}
        kinds = [m["type"] for m in conn.messages]
        flush = kinds.index("input_audio.flush")
        # 300 ms of tone, then 800 ms of silence (the default) ends the utterance.
        assert kinds[1:flush] == ["input_audio.append"] * 55
        assert kinds.count("input_audio.flush") == 1
        assert kinds[-1] == "input_audio.end"
        assert conn.ended
        assert session.session["audio_format"] == {"encoding": "pcm_mulaw", "sample_rate": 8000}


async def test_tuning_keys_reach_the_wire(burst, collect) -> None:
    async with FakeMistral([TEXT], api_key=KEY) as fake:
        stt = mistral.create({"apiKey": KEY, "endpoint": fake.endpoint,
                              "model": "voxtral-mini-transcribe-realtime-3",
                              "targetStreamingDelayMs": 240, "silenceDurationMs": 400})
        session = await stt.open("call-1")
        await session.wait_ready()
        await _feed(session, burst)
        await collect(session, until="final")
        await session.aclose()
        conn = fake.connections[0]
        assert conn.query == {"model": ["voxtral-mini-transcribe-realtime-3"]}
        assert conn.session["target_streaming_delay_ms"] == 240
        kinds = [m["type"] for m in conn.messages]
        assert kinds.index("input_audio.flush") == 1 + 15 + 20   # update, tone, 400 ms quiet


async def test_audio_before_ready_is_queued_then_delivered_in_order(burst, collect) -> None:
    async with FakeMistral([TEXT], api_key=KEY, session_delay_s=0.3) as fake:
        session = await _stt(fake).open("call-1")
        await _feed(session, burst)                 # all of it before session.created
        await asyncio.sleep(0.05)
        assert fake.connections and fake.connections[0].messages == []
        await session.wait_ready()
        events = await collect(session, until="final")
        await session.aclose()
        assert events[-1].text == TEXT
        conn = fake.connections[0]
        assert conn.messages[0]["type"] == "session.update"     # before any audio
        assert bytes(conn.audio) == b"".join(burst)
        assert conn.flushes == 1 and conn.protocol_errors == []
        assert session.dropped_bytes == 0


async def test_two_utterances_give_two_finals_and_fresh_partials(burst, collect) -> None:
    async with FakeMistral([TEXT, "And my refund?"], api_key=KEY) as fake:
        session = await _stt(fake).open("c")
        await session.wait_ready()
        await _feed(session, burst + burst)
        events = await collect(session, until="final", count=2)
        await session.aclose()
        assert [ev.text for ev in events if ev.type == "final"] == [TEXT, "And my refund?"]
        second = _kinds(events).index("final") + 1
        partials = [ev.text for ev in events[second:] if ev.type == "partial"]
        assert partials[0] == "And"                          # not glued to the first one
        assert fake.connections[0].flushes == 2


@pytest.mark.parametrize("mode", ["http", "message"])
async def test_auth_failure_is_a_provider_error_without_the_key(mode, burst, collect) -> None:
    wrong = "mistral-wrong-key-99"
    async with FakeMistral(api_key=KEY, auth_failure=mode) as fake:
        session = await mistral.create({"apiKey": wrong, "baseUrl": fake.url}).open("c")
        await _feed(session, burst[:3])                # queued, then never sent: counted
        with pytest.raises(ProviderError) as info:
            await asyncio.wait_for(session.wait_ready(), 3)
        err = info.value
        assert err.status_code == 401 and not err.retryable
        assert wrong not in str(err) and KEY not in str(err)
        events = await collect(session)
        assert _kinds(events) == ["speech-start", "error", "closed"]  # the VAD is local
        assert all(wrong not in ev.text for ev in events)
        assert session.dropped_bytes == 3 * 160


async def test_server_error_event_gives_error_then_closed(burst, collect) -> None:
    async with FakeMistral([TEXT], api_key=KEY, error_after_ms=100) as fake:
        session = await _stt(fake).open("c")
        await session.wait_ready()
        await _feed(session, burst)
        events = await collect(session)
        kinds = _kinds(events)
        assert kinds[-2:] == ["error", "closed"]
        assert kinds.count("error") == 1                 # the close that follows is not news
        assert events[-2].text == "mistral: error: Internal server error (code 500)"
        await session.aclose()


async def test_abrupt_close_mid_stream_gives_error_then_closed(burst, collect) -> None:
    async with FakeMistral([TEXT], api_key=KEY, drop_after_ms=200) as fake:
        session = await _stt(fake).open("c")
        await session.wait_ready()
        await _feed(session, burst)
        events = await collect(session)
        assert _kinds(events)[-2:] == ["error", "closed"]
        assert "1006" in events[-2].text
        await session.aclose()


async def test_aclose_is_clean_and_idempotent(burst, collect) -> None:
    async with FakeMistral([TEXT], api_key=KEY) as fake:
        session = await _stt(fake).open("c")
        await session.wait_ready()
        await _feed(session, burst[:5])
        started = time.monotonic()
        await session.aclose()
        await session.aclose()
        assert time.monotonic() - started < 1.0
        events = await collect(session)
        # input_audio.end finishes the utterance in progress: its final still arrives.
        kinds = _kinds(events)
        assert kinds[:2] == ["ready", "speech-start"] and kinds[-2:] == ["final", "closed"]
        assert "error" not in kinds
        conn = fake.connections[0]
        await asyncio.wait_for(conn.closed.wait(), 2)
        assert conn.ended and conn.protocol_errors == []
        assert [ev async for ev in session.events()] == []
        await session.send_audio(burst[0])
        assert session.dropped_bytes == len(burst[0])


async def test_aclose_while_connecting_does_not_hang(collect) -> None:
    async with FakeMistral(api_key=KEY, session_delay_s=5) as fake:
        session = await _stt(fake).open("c")
        await asyncio.sleep(0.05)
        started = time.monotonic()
        await session.aclose()
        assert time.monotonic() - started < 1.0
        with pytest.raises(ProviderError):
            await session.wait_ready()
        assert _kinds(await collect(session)) == ["closed"]


@pytest.mark.parametrize("encoding", ["pcm_s16le", "pcm_f32le"])
async def test_pcm_encodings_are_resampled(encoding, burst, collect) -> None:
    async with FakeMistral([TEXT], api_key=KEY) as fake:
        session = await _stt(fake, encoding=encoding, sampleRate=16000).open("c")
        await session.wait_ready()
        await _feed(session, burst)
        events = await collect(session, until="final")
        await session.aclose()
        assert events[-1].text == TEXT
        conn = fake.connections[0]
        assert conn.session["audio_format"] == {"encoding": encoding, "sample_rate": 16000}
        assert conn.protocol_errors == []
        sent_ms = len(burst) * 20
        assert sent_ms - 80 <= conn.audio_ms <= sent_ms
        tone = np.concatenate(conn.pcm)[1600:4000]       # 100..250 ms: inside the tone
        level = np.sqrt(np.mean((tone / 32768.0) ** 2))
        assert 0.18 < level < 0.24                        # 0.3 peak sine: ~0.21 RMS


async def test_handshake_503_is_retryable(collect) -> None:
    async with FakeMistral(api_key=KEY, reject_status=503) as fake:
        session = await _stt(fake).open("c")
        with pytest.raises(ProviderError) as info:
            await session.wait_ready()
        assert info.value.retryable and info.value.status_code == 503
        assert _kinds(await collect(session)) == ["error", "closed"]
