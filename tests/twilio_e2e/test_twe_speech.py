"""A Twilio (fake) streamed conversation with each STT and TTS provider through its fake."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from twe_kit import CALLEE, rig

from voicecall.audio.g711 import mulaw_to_pcm16
from voicecall.speech import registry
from voicecall.testing import fake_speech
from voicecall.testing.fake_elevenlabs_stt import FakeElevenLabsSTT
from voicecall.testing.fake_elevenlabs_tts import FakeElevenLabsTTS
from voicecall.testing.fake_mistral import FakeMistral
from voicecall.testing.fake_openai_tts import FakeOpenAITTS
from voicecall.testing.fake_stt import FakeDeepgram, FakeOpenAITranscription, FakeXai
from voicecall.testing.fake_twilio import CalleeScript

BOUND = 30.0
TRANSCRIPTS = ["Yes, go ahead.", "What time do you open?"]


@contextlib.asynccontextmanager
async def stt_fake(name: str) -> AsyncIterator[dict[str, Any]]:
    """Start the named provider's fake; yield its ``streaming.providers.<name>`` block."""
    if name in ("openai", "deepgram", "xai"):
        cls = {"openai": FakeOpenAITranscription, "deepgram": FakeDeepgram, "xai": FakeXai}[name]
        async with cls(TRANSCRIPTS) as fake:
            yield {"apiKey": fake.api_key, "endpoint": fake.url}
    elif name == "elevenlabs":
        async with FakeElevenLabsSTT(TRANSCRIPTS) as fake11:
            yield {"apiKey": fake11.api_key, "baseUrl": fake11.url}
    else:
        async with FakeMistral(TRANSCRIPTS) as fakem:
            yield {"apiKey": fakem.api_key, "baseUrl": fakem.url}


@pytest.fixture
def tone_tts() -> Iterator[fake_speech.ToneTTS]:
    tts = fake_speech.ToneTTS(word_ms=40)
    registry.register_tts("tone", lambda cfg: tts)
    yield tts
    registry.unregister("tone")


@pytest.mark.parametrize("provider", ["openai", "deepgram", "elevenlabs", "mistral", "xai"])
async def test_streamed_call_with_each_stt_provider(tmp_path: Path, provider: str,
                                                    tone_tts: fake_speech.ToneTTS) -> None:
    callee = CalleeScript(replies=["one", "two"], hangup_when_done=True)

    async def run() -> None:
        async with stt_fake(provider) as block, rig(
                tmp_path, callee=callee,
                streaming={"enabled": True, "provider": provider,
                           "providers": {provider: block}},
                tts={"provider": "tone"}) as r:
            placed = await r.rpc("voicecall.initiate", {
                "to": CALLEE, "message": "Hello, this is the clinic.", "mode": "conversation"})
            call = await r.wait_call(placed["callId"], lambda c: c.terminal, timeout=20)
            users = [t.text for t in call.transcript if t.speaker == "user"]
            assert users[:2] == TRANSCRIPTS, (provider, call.transcript)
            turns = [e for e in r.events() if e["type"] == "turn"]
            assert turns and all(t["breakdown"].get("firstFrameMs") is not None for t in turns)
    await asyncio.wait_for(run(), BOUND)


@contextlib.asynccontextmanager
async def tts_fake(name: str) -> AsyncIterator[dict[str, Any]]:
    if name == "openai":
        async with FakeOpenAITTS() as fake:
            yield {"provider": "openai", "providers": {"openai": {
                "apiKey": fake.api_key, "baseUrl": fake.base_url}}}
    elif name == "elevenlabs":
        async with FakeElevenLabsTTS() as fake11:
            yield {"provider": "elevenlabs", "providers": {"elevenlabs": {
                "apiKey": fake11.api_key, "baseUrl": fake11.base_url}}}
    else:
        yield {"provider": "local", "providers": {"local": {"voice": "slt"}}}


@pytest.mark.parametrize("provider", ["openai", "elevenlabs", "local"])
async def test_streamed_call_with_each_tts_provider(tmp_path: Path, provider: str) -> None:
    stt = fake_speech.ScriptedSTT(["Thanks, goodbye."])
    registry.register_stt("scripted", lambda cfg: stt)
    callee = CalleeScript(replies=["bye"], hangup_when_done=True)
    try:
        async def run() -> None:
            async with tts_fake(provider) as tts_cfg, rig(
                    tmp_path, callee=callee, tts=tts_cfg,
                    streaming={"enabled": True, "provider": "scripted"}) as r:
                placed = await r.rpc("voicecall.initiate", {
                    "to": CALLEE, "message": "Your appointment is confirmed.",
                    "mode": "conversation"})
                await r.wait_call(placed["callId"], lambda c: c.terminal, timeout=20)
                audio = bytes(r.fake.latest_call.outbound_audio)
                assert len(audio) >= 8000  # at least a second of speech went down the stream
                pcm = mulaw_to_pcm16(audio).astype(np.float32)
                assert float(np.sqrt(np.mean(pcm * pcm))) > 300  # not silence
        await asyncio.wait_for(run(), BOUND)
    finally:
        registry.unregister("scripted")
