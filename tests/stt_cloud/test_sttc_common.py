"""Behaviour every cloud STT provider shares, each against its own wire-protocol fake."""

from __future__ import annotations

import asyncio
import socket

import pytest
from sttc_kit import (
    PROVIDERS,
    SECRET,
    TIMEOUT,
    TRANSCRIPT,
    Provider,
    collect,
    drain,
    send,
    tone_burst,
    types,
)

from voicecall.config import Secret
from voicecall.errors import ConfigError, ProviderError
from voicecall.speech.stt.base import STT as SttProtocol

ids = [p.id for p in PROVIDERS]
parametrize = pytest.mark.parametrize("p", PROVIDERS, ids=ids)


@parametrize
async def test_tone_burst_gives_speech_start_partials_and_final(p: Provider) -> None:
    async with p.make_fake() as fake:
        stt = p.module.create(p.config(fake, apiKey=Secret(fake.api_key)))
        session = await stt.open("call-1")
        await asyncio.wait_for(session.wait_ready(), TIMEOUT)
        sent = await send(session, tone_burst())
        events = await collect(session)
        kinds = types(events)
        assert kinds[0] == "ready"
        assert kinds.index("speech-start") < kinds.index("final")
        partials = [e.text for e in events if e.type == "partial"]
        assert partials, "every provider here streams partial text"
        assert all(TRANSCRIPT.startswith(t) for t in partials)
        assert [len(t.split()) for t in partials] == sorted(len(t.split()) for t in partials)
        assert events[-1].type == "final" and events[-1].text == TRANSCRIPT
        await asyncio.wait_for(session.aclose(), TIMEOUT)
        rest = await drain(session)
        assert rest[-1].type == "closed"
        await fake.wait_for(lambda: fake.last.audio_bytes == sent)


@parametrize
async def test_audio_before_ready_is_queued_then_delivered(p: Provider) -> None:
    delay = {"ready_delay": 0.3} if p.ready_message else {"connect_delay": 0.3}
    async with p.make_fake(**delay) as fake:
        session = await p.module.create(p.config(fake)).open("call-1")
        sent = await send(session, tone_burst())        # all of it before the provider is ready
        assert not session.ready
        assert session.queued_bytes == sent
        await asyncio.wait_for(session.wait_ready(), TIMEOUT)
        events = await collect(session)
        assert events[-1].type == "final" and events[-1].text == TRANSCRIPT
        await fake.wait_for(lambda: fake.last.audio_bytes == sent)
        assert fake.last.early_audio_bytes == 0
        assert session.dropped_bytes == 0
        await session.aclose()


@parametrize
async def test_wrong_key_is_provider_error_without_the_key(p: Provider) -> None:
    async with p.make_fake() as fake:
        session = await p.module.create(p.config(fake, apiKey=SECRET)).open("call-1")
        await send(session, tone_burst(100, 100))
        with pytest.raises(ProviderError) as info:
            await asyncio.wait_for(session.wait_ready(), TIMEOUT)
        err = info.value
        assert err.status_code == p.auth_status
        assert not err.retryable
        assert SECRET not in str(err) and SECRET[-6:] not in str(err) and "***" not in str(err)
        events = await drain(session)
        assert types(events) == ["error", "closed"]
        assert all(SECRET not in e.text for e in events)
        await session.aclose()
        assert fake.last.headers["authorization"].endswith("***")   # the fake masks what it records


@parametrize
@pytest.mark.parametrize("close_code", [1011, None], ids=["close-1011", "tcp-abort"])
async def test_server_closing_mid_stream_gives_error_then_closed(p: Provider,
                                                                 close_code: int | None) -> None:
    async with p.make_fake(close_after_ms=200, close_code=close_code) as fake:
        session = await p.module.create(p.config(fake)).open("call-1")
        await asyncio.wait_for(session.wait_ready(), TIMEOUT)
        await send(session, tone_burst())
        events = await drain(session)
        kinds = types(events)
        assert kinds[-2:] == ["error", "closed"]
        assert "final" not in kinds
        assert str(close_code or 1006) in events[-2].text
        assert fake.last.audio_bytes < len(tone_burst())
        await asyncio.wait_for(session.aclose(), TIMEOUT)
        await session.send_audio(b"\xff" * 160)              # after the end: dropped, no raise
        assert session.dropped_bytes > 0


@parametrize
async def test_server_error_event_is_reported(p: Provider) -> None:
    async with p.make_fake(error_after_ms=100) as fake:
        session = await p.module.create(p.config(fake)).open("call-1")
        await asyncio.wait_for(session.wait_ready(), TIMEOUT)
        await send(session, tone_burst())
        events = await collect(session, "error")
        assert events[-1].type == "error" and events[-1].text.startswith(p.id + ":")
        await asyncio.wait_for(session.aclose(), TIMEOUT)
        rest = await drain(session)
        assert rest[-1].type == "closed"
        assert types(rest).count("closed") == 1


@parametrize
async def test_aclose_is_clean_and_idempotent(p: Provider) -> None:
    async with p.make_fake() as fake:
        session = await p.module.create(p.config(fake)).open("call-1")
        await asyncio.wait_for(session.wait_ready(), TIMEOUT)
        await asyncio.wait_for(asyncio.gather(session.aclose(), session.aclose()), TIMEOUT)
        await asyncio.wait_for(session.aclose(), TIMEOUT)
        events = await drain(session)
        assert types(events) == ["ready", "closed"]
        assert await collect(session, timeout=0.5) == []      # ended: no second "closed", no hang
        await session.wait_ready()                             # it was ready; that stays true
        await fake.wait_for(lambda: fake.last.closed)


@parametrize
async def test_aclose_before_ready(p: Provider) -> None:
    async with p.make_fake(connect_delay=2.0) as fake:
        session = await p.module.create(p.config(fake)).open("call-1")
        await session.send_audio(b"\xff" * 160)
        await asyncio.wait_for(session.aclose(), TIMEOUT)
        with pytest.raises(ProviderError, match="closed before"):
            await asyncio.wait_for(session.wait_ready(), TIMEOUT)
        assert types(await drain(session)) == ["closed"]
        assert session.dropped_bytes == 160


@parametrize
async def test_unreachable_server_is_retryable_error(p: Provider) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]          # nothing listens here once closed
    stt = p.module.create({"apiKey": "k", "endpoint": f"ws://127.0.0.1:{port}/x"})
    session = await stt.open("call-1")
    with pytest.raises(ProviderError) as info:
        await asyncio.wait_for(session.wait_ready(), TIMEOUT)
    assert info.value.retryable
    assert types(await drain(session)) == ["error", "closed"]
    await session.aclose()


@parametrize
async def test_refused_upgrade_status_decides_retryable(p: Provider) -> None:
    async with p.make_fake(reject_status=503) as fake:
        session = await p.module.create(p.config(fake)).open("call-1")
        with pytest.raises(ProviderError) as info:
            await asyncio.wait_for(session.wait_ready(), TIMEOUT)
        assert info.value.status_code == 503 and info.value.retryable
        await session.aclose()


@parametrize
async def test_pre_ready_queue_is_bounded_oldest_dropped(p: Provider) -> None:
    delay = {"ready_delay": 0.2} if p.ready_message else {"connect_delay": 0.2}
    async with p.make_fake(**delay) as fake:
        stt = p.module.create(p.config(fake))
        stt.max_queued_bytes = 1600
        session = await stt.open("call-1")
        await send(session, bytes([0x7F]) * 1600 + tone_burst(200, 0))
        assert session.queued_bytes == 1600 and session.dropped_bytes == 1600
        await asyncio.wait_for(session.wait_ready(), TIMEOUT)
        await fake.wait_for(lambda: fake.last.audio_bytes == 1600)
        await session.aclose()


@parametrize
def test_create_requires_api_key(p: Provider) -> None:
    env = {"openai": "OPENAI_API_KEY", "deepgram": "DEEPGRAM_API_KEY", "xai": "XAI_API_KEY"}[p.id]
    for cfg in ({}, {"apiKey": ""}, {"apiKey": "  "}):
        with pytest.raises(ConfigError) as info:
            p.module.create(cfg)
        assert info.value.path == f"streaming.providers.{p.id}.apiKey"
        assert f"streaming.providers.{p.id}.apiKey" in str(info.value) and env in str(info.value)
    with pytest.raises(ConfigError, match=f"streaming.providers.{p.id}.endpoint"):
        p.module.create({"apiKey": "k", "endpoint": "ftp://example.com"})


@parametrize
def test_provider_shape_and_repr(p: Provider) -> None:
    stt = p.module.create({"apiKey": SECRET, "language": "en"})
    assert isinstance(stt, p.module.STT)
    checked: SttProtocol = stt
    assert checked.name == p.id
    assert stt.capabilities.server_vad and stt.capabilities.interim_results
    assert SECRET not in repr(stt)
