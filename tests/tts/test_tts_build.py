"""build_tts: from the merged TTS config to a provider chain."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
from tts_helpers import ELEVEN_KEY, OPENAI_KEY, collect

from voicecall.config import Secret
from voicecall.errors import ConfigError
from voicecall.speech import registry
from voicecall.speech.tts import build, elevenlabs, local, openai
from voicecall.speech.tts.base import TtsCapabilities
from voicecall.speech.tts.build import build_tts, provider_order, timeout_ms
from voicecall.speech.tts.fallback import FallbackTTS
from voicecall.testing.fake_elevenlabs_tts import FakeElevenLabsTTS
from voicecall.testing.fake_openai_tts import FakeOpenAITTS

LOGGER = "voicecall.speech.tts"


def chain_of(tts: object) -> list[object]:
    assert isinstance(tts, FallbackTTS)
    return list(tts.chain)


async def test_primary_first_then_the_others_in_config_order() -> None:
    cfg = {"provider": "elevenlabs", "timeoutMs": 3000, "providers": {
        "openai": {"apiKey": Secret("sk-1")},
        "local": {"voice": "kal"},
        "elevenlabs": {"apiKey": "xi-1", "voiceId": "abc"},
    }}
    assert provider_order(cfg) == ["elevenlabs", "openai", "local"]
    tts = build_tts(cfg)
    try:
        chain = chain_of(tts)
        assert [type(t) for t in chain] == [elevenlabs.TTS, openai.TTS, local.TTS]
        assert isinstance(tts, FallbackTTS) and tts.first_audio_timeout_ms == 3000
        assert tts.name == "elevenlabs -> openai -> local"
    finally:
        if tts is not None:
            await tts.aclose()


def test_timeout_default_and_clamp() -> None:
    assert timeout_ms({}) == 8000
    assert timeout_ms({"timeoutMs": "soon"}) == 8000
    assert timeout_ms({"timeoutMs": 0}) == 8000
    assert timeout_ms({"timeoutMs": float("nan")}) == 8000
    assert timeout_ms({"timeoutMs": 10**9}) == build.TIMEOUT_MS_MAX
    tts = build_tts({"provider": "local"})
    assert isinstance(tts, FallbackTTS) and tts.first_audio_timeout_ms == 8000


def test_misconfigured_primary_raises_naming_the_path() -> None:
    with pytest.raises(ConfigError) as info:
        build_tts({"provider": "openai", "providers": {"openai": {"voice": "marin"},
                                                      "local": {}}})
    assert info.value.path == "tts.providers.openai.apiKey"


def test_misconfigured_fallback_is_skipped_with_a_warning(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    tts = build_tts({"provider": "local", "providers": {"elevenlabs": {"voiceId": "v"}}})
    assert [type(t) for t in chain_of(tts)] == [local.TTS]
    assert "tts.providers.elevenlabs.apiKey" in caplog.text


def test_microsoft_and_unknown_providers_are_skipped(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    tts = build_tts({"provider": "microsoft", "providers": {
        "microsoft": {"voice": "en-US-AvaNeural"}, "edge": {}, "acme-tts": {}, "local": {}}})
    assert [type(t) for t in chain_of(tts)] == [local.TTS]
    messages = [r.getMessage() for r in caplog.records]
    assert any("microsoft ignored" in m for m in messages)
    assert any("edge ignored" in m for m in messages)
    assert any("acme-tts is not available" in m for m in messages)


def test_nothing_usable_is_none_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    assert build_tts({}) is None
    assert build_tts({"provider": "microsoft"}) is None
    assert "no usable telephony TTS provider" in caplog.text
    with pytest.raises(ConfigError):
        build.create({})


def test_legacy_provider_blocks_and_case_are_understood() -> None:
    cfg: dict[str, Any] = {"provider": " OpenAI ", "openai": {"apiKey": "sk-legacy"},
                           "providers": {"Local": {"voice": "kal"}}}
    assert provider_order(cfg) == ["openai", "local"]
    chain = chain_of(build_tts(cfg))
    assert isinstance(chain[0], openai.TTS) and isinstance(chain[1], local.TTS)
    assert chain[1].voice == "kal"


class _Registered:
    name = "acme"
    capabilities = TtsCapabilities()

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        self.cfg = dict(cfg)

    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        yield b"\x7f" * 160

    async def aclose(self) -> None:
        return None


def test_registry_factories_are_used() -> None:
    registry.register_tts("acme", _Registered)
    try:
        chain = chain_of(build_tts({"provider": "acme", "providers": {"acme": {"x": 1}}}))
    finally:
        registry.unregister("acme")
    assert isinstance(chain[0], _Registered) and chain[0].cfg == {"x": 1}


async def test_end_to_end_secret_keys_and_fallback_to_flite(
        openai_fake: FakeOpenAITTS, eleven_fake: FakeElevenLabsTTS, flite: str,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    cfg = {"provider": "openai", "timeoutMs": 5000, "providers": {
        "openai": {"apiKey": Secret(OPENAI_KEY), "baseUrl": openai_fake.base_url,
                   "voice": "marin"},
        "elevenlabs": {"apiKey": Secret(ELEVEN_KEY), "baseUrl": eleven_fake.base_url},
        "local": {"voice": "slt"},
    }}
    tts = build_tts(cfg)
    assert tts is not None
    try:
        spoken = b"".join(await collect(tts.synthesize("Hello.")))
        assert openai_fake.requests[0].headers["authorization"] == f"Bearer {OPENAI_KEY}"
        assert len(spoken) == openai_fake.expected_pcm_samples("Hello.") // 3
        openai_fake.fail_next(500)
        eleven_fake.fail_next(500)
        offline = b"".join(await collect(tts.synthesize("Hello.")))
        assert len(offline) > 2000  # flite said it
    finally:
        await tts.aclose()
    assert ("Telephony TTS fallback used from=openai to=local "
            "attempts=openai -> elevenlabs -> local") in caplog.text
    assert OPENAI_KEY not in caplog.text and ELEVEN_KEY not in caplog.text
