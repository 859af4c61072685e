"""FallbackTTS: provider chains over the real fakes, plus edge cases with stubs."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import cast

import pytest
from tts_helpers import ELEVEN_KEY, OPENAI_KEY, collect

from voicecall.errors import ConfigError, ProviderError
from voicecall.speech.tts import elevenlabs, local, openai
from voicecall.speech.tts.base import TTS, TtsCapabilities
from voicecall.speech.tts.fallback import FallbackTTS
from voicecall.testing.fake_elevenlabs_tts import FakeElevenLabsTTS
from voicecall.testing.fake_openai_tts import FakeOpenAITTS

TEXT = "Your appointment is confirmed."
LOGGER = "voicecall.speech.tts"


class Stub:
    """A scripted TTS: fails before audio, fails after N chunks, stalls, or speaks."""

    capabilities = TtsCapabilities(streaming=True, telephony_native=True)

    def __init__(self, name: str, chunks: Sequence[bytes] = (b"\x7f" * 160,) * 3, *,
                 fail_before: Exception | None = None, fail_after: int | None = None,
                 first_delay: float = 0.0, gap: float = 0.0) -> None:
        self.name = name
        self.chunks = list(chunks)
        self.fail_before = fail_before
        self.fail_after = fail_after
        self.first_delay = first_delay
        self.gap = gap
        self.calls = 0
        self.finished_streams = 0
        self.closed = False

    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        self.calls += 1
        try:
            await asyncio.sleep(self.first_delay)
            if self.fail_before is not None:
                raise self.fail_before
            for index, chunk in enumerate(self.chunks):
                if index == self.fail_after:
                    raise ProviderError(f"{self.name} broke mid-stream", retryable=True)
                if index and self.gap:
                    await asyncio.sleep(self.gap)
                yield chunk
        finally:
            self.finished_streams += 1

    async def aclose(self) -> None:
        self.closed = True


def fallback_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == LOGGER and r.getMessage().startswith("Telephony TTS fallback used")]


def openai_tts(srv: FakeOpenAITTS, key: str = OPENAI_KEY) -> openai.TTS:
    return openai.create({"apiKey": key, "baseUrl": srv.base_url})


def eleven_tts(srv: FakeElevenLabsTTS) -> elevenlabs.TTS:
    return elevenlabs.create({"apiKey": ELEVEN_KEY, "baseUrl": srv.base_url})


async def test_primary_500_falls_back_and_logs_the_chain(
        openai_fake: FakeOpenAITTS, eleven_fake: FakeElevenLabsTTS,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    openai_fake.fail_next(500)
    tts = FallbackTTS([openai_tts(openai_fake), eleven_tts(eleven_fake)])
    try:
        audio = b"".join(await collect(tts.synthesize(TEXT)))
    finally:
        await tts.aclose()
    assert len(audio) == eleven_fake.expected_bytes(TEXT)
    assert len(openai_fake.requests) == 1 and len(eleven_fake.requests) == 1
    assert fallback_warnings(caplog) == [
        "Telephony TTS fallback used from=openai to=elevenlabs attempts=openai -> elevenlabs"]
    record = next(r for r in caplog.records if "fallback used" in r.getMessage())
    assert record.levelno == logging.WARNING
    assert tts.last_provider == "elevenlabs"


async def test_three_step_chain_ends_offline(
        openai_fake: FakeOpenAITTS, eleven_fake: FakeElevenLabsTTS, flite: str,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    openai_fake.fail_next(503)
    eleven_fake.fail_next(429, retry_after=2)
    tts = FallbackTTS([openai_tts(openai_fake), eleven_tts(eleven_fake), local.create({})])
    try:
        audio = b"".join(await collect(tts.synthesize(TEXT)))
    finally:
        await tts.aclose()
    assert len(audio) > 8000 // 2
    assert fallback_warnings(caplog) == [
        "Telephony TTS fallback used from=openai to=local "
        "attempts=openai -> elevenlabs -> local"]


async def test_no_warning_when_the_primary_speaks(
        openai_fake: FakeOpenAITTS, eleven_fake: FakeElevenLabsTTS,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    tts = FallbackTTS([openai_tts(openai_fake), eleven_tts(eleven_fake)])
    try:
        await collect(tts.synthesize(TEXT))
    finally:
        await tts.aclose()
    assert fallback_warnings(caplog) == [] and eleven_fake.requests == []
    assert tts.last_provider == "openai"


async def test_failure_after_audio_is_raised_not_retried(
        openai_fake: FakeOpenAITTS, eleven_fake: FakeElevenLabsTTS,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    openai_fake.cut_next(after_ms=300)
    tts = FallbackTTS([openai_tts(openai_fake), eleven_tts(eleven_fake)])
    got: list[bytes] = []
    try:
        with pytest.raises(ProviderError, match="mid-stream"):
            async for chunk in tts.synthesize(TEXT):
                got.append(chunk)
    finally:
        await tts.aclose()
    assert got  # some speech had already gone out...
    assert eleven_fake.requests == []  # ...so nothing was spoken twice
    assert fallback_warnings(caplog) == []


async def test_first_audio_timeout_moves_on(
        openai_fake: FakeOpenAITTS, eleven_fake: FakeElevenLabsTTS,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    openai_fake.first_byte_delay = 3.0
    tts = FallbackTTS([openai_tts(openai_fake), eleven_tts(eleven_fake)],
                      first_audio_timeout_ms=250)
    started = time.monotonic()
    try:
        audio = b"".join(await collect(tts.synthesize(TEXT)))
    finally:
        await tts.aclose()
    assert time.monotonic() - started < 2.0
    assert len(audio) == eleven_fake.expected_bytes(TEXT)
    assert any("no audio within 250 ms" in r.getMessage() for r in caplog.records)
    assert fallback_warnings(caplog) == [
        "Telephony TTS fallback used from=openai to=elevenlabs attempts=openai -> elevenlabs"]


async def test_timeout_alone_is_a_provider_error(openai_fake: FakeOpenAITTS) -> None:
    openai_fake.first_byte_delay = 3.0
    tts = FallbackTTS([openai_tts(openai_fake)], first_audio_timeout_ms=200)
    started = time.monotonic()
    try:
        with pytest.raises(ProviderError, match="openai TTS produced no audio within 200 ms") \
                as info:
            await collect(tts.synthesize(TEXT))
    finally:
        await tts.aclose()
    assert info.value.retryable and time.monotonic() - started < 1.5


async def test_timeout_covers_only_the_first_audio() -> None:
    slow = Stub("slow", gap=0.3)  # first chunk at once, then 300 ms gaps
    tts = FallbackTTS([slow], first_audio_timeout_ms=100)
    assert len(await collect(tts.synthesize(TEXT))) == 3


async def test_microsoft_voices_are_skipped_with_a_warning(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    microsoft, edge, ok = Stub("microsoft"), Stub("Edge"), Stub("openai")
    tts = FallbackTTS([microsoft, edge, ok])
    assert tts.providers == ["openai"] and tts.name == "openai"
    assert len(await collect(tts.synthesize(TEXT))) == 3
    assert microsoft.calls == edge.calls == 0
    ignored = [r.getMessage() for r in caplog.records if "ignored" in r.getMessage()]
    assert len(ignored) == 2 and "microsoft" in ignored[0] and "Edge" in ignored[1]
    await tts.aclose()
    assert microsoft.closed and edge.closed and ok.closed
    with pytest.raises(ConfigError):
        FallbackTTS([Stub("microsoft")])


async def test_all_failing_raises_one_summary() -> None:
    a = Stub("a", fail_before=ProviderError("a is down", retryable=True, status_code=503))
    b = Stub("b", fail_before=ProviderError("b refused", status_code=401))
    tts = FallbackTTS([a, b])
    with pytest.raises(ProviderError) as info:
        await collect(tts.synthesize(TEXT))
    assert "a: a is down" in str(info.value) and "b: b refused" in str(info.value)
    assert info.value.retryable and info.value.status_code == 401
    solo = ProviderError("only one", status_code=500)
    with pytest.raises(ProviderError) as single:
        await collect(FallbackTTS([Stub("x", fail_before=solo)]).synthesize(TEXT))
    assert single.value is solo


async def test_silence_counts_as_failure_and_blank_text_as_nothing() -> None:
    mute, ok = Stub("mute", chunks=[b"", b""]), Stub("ok")
    tts = FallbackTTS([mute, ok])
    assert len(await collect(tts.synthesize(TEXT))) == 3
    assert tts.last_provider == "ok"
    assert await collect(tts.synthesize("  \n")) == []
    assert mute.calls == ok.calls == 1


async def test_mid_stream_failure_of_a_stub_is_raised() -> None:
    first, second = Stub("first", fail_after=2), Stub("second")
    tts = FallbackTTS([first, second])
    got: list[bytes] = []
    with pytest.raises(ProviderError, match="first broke mid-stream"):
        async for chunk in tts.synthesize(TEXT):
            got.append(chunk)
    assert len(got) == 2 and second.calls == 0


async def test_closing_early_closes_the_provider_stream() -> None:
    stub = Stub("s", gap=0.05)
    tts = FallbackTTS([stub])
    stream = cast(AsyncGenerator[bytes, None], tts.synthesize(TEXT))
    assert await anext(stream)
    await stream.aclose()  # barge-in
    assert stub.finished_streams == 1


def test_capabilities_and_protocol() -> None:
    tts: TTS = FallbackTTS([Stub("a"), Stub("b")])
    assert tts.name == "a -> b"
    assert tts.capabilities == TtsCapabilities(streaming=True, telephony_native=True)
