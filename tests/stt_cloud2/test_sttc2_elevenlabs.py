"""ElevenLabs Scribe realtime STT client against its wire-protocol fake, over real sockets."""

from __future__ import annotations

import asyncio
import base64
import logging
import socket
import time
from typing import Any

import pytest

from voicecall.errors import ProviderError
from voicecall.speech.stt import elevenlabs
from voicecall.testing.fake_elevenlabs_stt import FakeElevenLabsSTT

KEY = "xi-test-key-7f3a9c"
TEXT = "Where is my order?"


def _stt(fake: FakeElevenLabsSTT, **cfg: Any) -> elevenlabs.STT:
    return elevenlabs.create({"apiKey": KEY, "baseUrl": fake.url, **cfg})


async def _feed(session: elevenlabs.ElevenLabsSttSession, frames: list[bytes]) -> None:
    for frame in frames:
        await session.send_audio(frame)


def _kinds(events: list[Any]) -> list[str]:
    return [ev.type for ev in events]


async def test_tone_burst_gives_growing_partials_then_final(burst, collect) -> None:
    async with FakeElevenLabsSTT([TEXT], api_key=KEY) as fake:
        stt = _stt(fake)
        assert stt.name == "elevenlabs"
        assert stt.capabilities.interim_results and stt.capabilities.server_vad
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

        conn = fake.connections[0]
        assert conn.headers["xi-api-key"] == KEY
        assert KEY not in conn.path                      # the key never goes in the URL
        assert conn.protocol_errors == []
        assert bytes(conn.audio) == b"".join(burst)      # mu-law straight through
        chunks = conn.chunks()
        assert len(chunks) == len(burst)
        assert all(c["commit"] is False and c["sample_rate"] == 8000 for c in chunks)
        assert base64.b64decode(chunks[0]["audio_base_64"]) == burst[0]


async def test_defaults_are_on_the_wire(burst) -> None:
    async with FakeElevenLabsSTT([TEXT], api_key=KEY) as fake:
        session = await _stt(fake).open("call-1")
        await session.wait_ready()
        await session.aclose()
        query = {k: v[-1] for k, v in fake.connections[0].query.items()}
        assert query == {"model_id": "scribe_v2_realtime", "audio_format": "ulaw_8000",
                         "commit_strategy": "vad", "include_timestamps": "false",
                         "vad_silence_threshold_secs": "0.8"}
        # The effective config the server reported is kept on the session.
        assert session.session_config["vad_silence_threshold_secs"] == 0.8
        assert session.session_config["sample_rate"] == 8000


async def test_tuning_keys_reach_the_query() -> None:
    async with FakeElevenLabsSTT(api_key=KEY) as fake:
        stt = elevenlabs.create({
            "apiKey": KEY, "endpoint": fake.endpoint, "model": "scribe_v2_realtime",
            "language": "es", "vadSilenceThresholdSecs": 1.2, "vadThreshold": 0.5,
            "minSpeechDurationMs": 150, "minSilenceDurationMs": 200,
            "keyterms": ["pedido", "número"], "enableLogging": False})
        session = await stt.open("call-1")
        await session.wait_ready()
        await session.aclose()
        conn = fake.connections[0]
        assert conn.protocol_errors == []
        assert conn.query["language_code"] == ["es"]
        assert conn.query["keyterms"] == ["pedido", "número"]
        assert conn.config["vad_threshold"] == 0.5
        assert conn.config["min_speech_duration_ms"] == 150
        assert conn.config["min_silence_duration_ms"] == 200
        assert conn.config["vad_silence_threshold_secs"] == 1.2
        assert conn.config["enable_logging"] is False


async def test_audio_before_ready_is_queued_then_delivered_in_order(burst, collect) -> None:
    async with FakeElevenLabsSTT([TEXT], api_key=KEY, session_delay_s=0.3) as fake:
        session = await _stt(fake).open("call-1")
        await _feed(session, burst)                    # all of it before session_started
        await asyncio.sleep(0.05)
        assert fake.connections and fake.connections[0].chunks() == []
        await session.wait_ready()
        events = await collect(session, until="final")
        await session.aclose()
        assert events[-1].text == TEXT
        assert bytes(fake.connections[0].audio) == b"".join(burst)
        assert session.dropped_bytes == 0


async def test_pre_ready_queue_is_bounded_and_drops_are_reported(burst, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="voicecall.stt.elevenlabs")
    async with FakeElevenLabsSTT([TEXT], api_key=KEY, session_delay_s=0.2) as fake:
        session = await _stt(fake, maxQueuedBytes=3200).open("call-1")
        await _feed(session, burst)
        await session.wait_ready()
        await asyncio.sleep(0.1)
        await session.aclose()
        audio = b"".join(burst)
        assert session.dropped_bytes == len(audio) - 3200
        assert bytes(fake.connections[0].audio) == audio[-3200:]   # the newest audio kept
        drops = [r for r in caplog.records if r.getMessage() == "stt.audio_dropped"]
        assert len(drops) == 1                                     # said once, counted always


@pytest.mark.parametrize("mode", ["message", "http"])
async def test_auth_failure_is_a_provider_error_without_the_key(mode, burst, collect) -> None:
    wrong = "xi-wrong-key-123456"
    async with FakeElevenLabsSTT(api_key=KEY, auth_failure=mode) as fake:
        session = await elevenlabs.create({"apiKey": wrong, "baseUrl": fake.url}).open("c")
        await _feed(session, burst[:3])                # queued, then never sent: counted
        with pytest.raises(ProviderError) as info:
            await asyncio.wait_for(session.wait_ready(), 3)
        events = await collect(session)
        err = info.value
        assert err.status_code == 401 and not err.retryable
        assert wrong not in str(err) and KEY not in str(err)
        assert _kinds(events) == ["error", "closed"]
        assert all(wrong not in ev.text for ev in events)
        assert session.dropped_bytes == 3 * 160
        await session.aclose()


async def test_unavailable_server_is_retryable(collect) -> None:
    async with FakeElevenLabsSTT(api_key=KEY, reject_status=503) as fake:
        session = await _stt(fake).open("c")
        with pytest.raises(ProviderError) as info:
            await session.wait_ready()
        assert info.value.retryable and info.value.status_code == 503
        assert _kinds(await collect(session)) == ["error", "closed"]


async def test_nothing_listening_fails_fast(collect) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    session = await elevenlabs.create({"apiKey": KEY, "baseUrl": f"ws://127.0.0.1:{port}"}
                                      ).open("c")
    with pytest.raises(ProviderError) as info:
        await asyncio.wait_for(session.wait_ready(), 3)
    assert info.value.retryable
    assert _kinds(await collect(session)) == ["error", "closed"]


async def test_server_error_event_gives_error_then_closed(burst, collect) -> None:
    async with FakeElevenLabsSTT([TEXT], api_key=KEY, error_after_ms=100) as fake:
        session = await _stt(fake).open("c")
        await session.wait_ready()
        await _feed(session, burst)
        events = await collect(session)
        kinds = _kinds(events)
        assert kinds[-2:] == ["error", "closed"]
        assert kinds.count("error") == 1
        assert "transcriber_error" in events[-2].text
        await session.aclose()


async def test_abrupt_close_mid_stream_gives_error_then_closed(burst, collect) -> None:
    async with FakeElevenLabsSTT([TEXT], api_key=KEY, drop_after_ms=200) as fake:
        session = await _stt(fake).open("c")
        await session.wait_ready()
        await _feed(session, burst)
        events = await collect(session)
        assert _kinds(events)[-2:] == ["error", "closed"]
        assert "1006" in events[-2].text
        await session.send_audio(burst[0])   # after the end: counted, not raised
        await session.aclose()


async def test_aclose_is_clean_and_idempotent(burst, collect) -> None:
    async with FakeElevenLabsSTT([TEXT], api_key=KEY) as fake:
        session = await _stt(fake).open("c")
        await session.wait_ready()
        await _feed(session, burst[:5])
        await session.aclose()
        await session.aclose()
        events = await collect(session)
        assert _kinds(events) == ["ready", "closed"]
        conn = fake.connections[0]
        await asyncio.wait_for(conn.closed.wait(), 2)
        assert conn.close_code == 1000
        assert [ev async for ev in session.events()] == []     # nothing after closed
        await session.send_audio(burst[0])
        assert session.dropped_bytes == len(burst[0])


async def test_aclose_while_connecting_does_not_hang(collect) -> None:
    async with FakeElevenLabsSTT(api_key=KEY, session_delay_s=5) as fake:
        session = await _stt(fake).open("c")
        await asyncio.sleep(0.05)
        started = time.monotonic()
        await session.aclose()
        assert time.monotonic() - started < 1.0
        with pytest.raises(ProviderError):
            await session.wait_ready()
        assert _kinds(await collect(session)) == ["closed"]


async def test_pcm_16000_is_resampled(burst, collect) -> None:
    async with FakeElevenLabsSTT([TEXT], api_key=KEY) as fake:
        session = await _stt(fake, audioFormat="pcm_16000").open("c")
        await session.wait_ready()
        await _feed(session, burst)
        events = await collect(session, until="final")
        await session.aclose()
        assert events[-1].text == TEXT
        conn = fake.connections[0]
        assert conn.query["audio_format"] == ["pcm_16000"]
        assert all(c["sample_rate"] == 16000 for c in conn.chunks())
        sent_ms = len(burst) * 20
        assert sent_ms - 80 <= conn.audio_ms <= sent_ms   # less the resampler's delay only


async def test_manual_commit_strategy_commits_after_local_silence(burst, collect) -> None:
    async with FakeElevenLabsSTT([TEXT, "And my refund?"], api_key=KEY) as fake:
        stt = _stt(fake, commitStrategy="manual", vadSilenceThresholdSecs=0.5)
        assert not stt.capabilities.server_vad
        session = await stt.open("c")
        await session.wait_ready()
        await _feed(session, burst + burst)
        events = await collect(session, until="final", count=2)
        await session.aclose()
        assert [ev.text for ev in events if ev.type == "final"] == [TEXT, "And my refund?"]
        assert _kinds(events).count("speech-start") == 2
        conn = fake.connections[0]
        assert conn.query["commit_strategy"] == ["manual"]
        assert "vad_silence_threshold_secs" not in conn.query
        commits = [i for i, c in enumerate(conn.chunks()) if c["commit"]]
        assert len(commits) == 2
        # 300 ms tone + 500 ms silence = 40 frames before the first commit.
        assert commits[0] == 40
        assert all(conn.chunks()[i]["audio_base_64"] == "" for i in commits)


async def test_timestamps_give_one_final_with_word_confidence(burst, collect) -> None:
    async with FakeElevenLabsSTT([TEXT], api_key=KEY) as fake:
        session = await _stt(fake, includeTimestamps=True).open("c")
        await session.wait_ready()
        await _feed(session, burst)
        events = await collect(session, until="final")
        final = events[-1]
        assert final.text == TEXT
        assert final.confidence is not None and 0.9 < final.confidence <= 1.0
        await asyncio.sleep(0.1)                       # both commit messages have arrived
        await session.aclose()
        assert [ev for ev in [ev async for ev in session.events()] if ev.type == "final"] == []
        sent = [m["message_type"] for m in fake.connections[0].sent]
        assert "committed_transcript" in sent and "committed_transcript_with_timestamps" in sent


async def test_non_fatal_error_is_reported_and_the_stream_goes_on(burst, collect) -> None:
    async with FakeElevenLabsSTT([TEXT], api_key=KEY, error_after_ms=100,
                                 error_type="commit_throttled", error_message="Slow down",
                                 error_close_code=None) as fake:
        session = await _stt(fake).open("c")
        await session.wait_ready()
        await _feed(session, burst)
        events = await collect(session, until="final")
        await session.aclose()
        errors = [ev.text for ev in events if ev.type == "error"]
        assert errors == ["elevenlabs: commit_throttled: Slow down"]
        assert events[-1].text == TEXT
