"""Per-number routing and TTS deep merge (reference §2.5, §2.7)."""

from __future__ import annotations

from typing import Any

import pytest

from voicecall.config import (
    Secret,
    TtsConfig,
    VoiceCallConfig,
    digits_only,
    effective_config,
    effective_tts,
    load_config_data,
    merge_tts,
    normalize_e164,
    route_key_for,
)

SEED_ROUTING: dict[str, Any] = {
    "inboundGreeting": "Hello from the main line.",
    "responseSystemPrompt": "You are the default voice assistant.",
    "agentId": "main",
    "responseTimeoutMs": 20000,
    "tts": {"provider": "openai", "providers": {"openai": {"voice": "coral", "model": "tts-1"}}},
    "numbers": {
        "+15550001111": {
            "inboundGreeting": "Silver Fox Cards, how can I help?",
            "responseSystemPrompt": "You are a concise baseball card specialist.",
            "agentId": "cards",
            "tts": {"providers": {"openai": {"voice": "alloy"}}},
        },
        "+15550002222": {"responseModel": "openai/gpt-4o-mini"},
    },
}


@pytest.fixture
def cfg() -> VoiceCallConfig:
    return VoiceCallConfig.model_validate(SEED_ROUTING)


def test_digits_only() -> None:
    assert digits_only("+1 (555) 000-1111") == "15550001111"
    assert digits_only(None) == "" and digits_only("abc") == ""


@pytest.mark.parametrize(("raw", "expected"), [
    ("+15550001111", "+15550001111"),
    ("+1 (555) 000-1111", "+15550001111"),
    ("15550001111", "+15550001111"),
    ("tel:+15550001111", "+15550001111"),
    ("sip:+15550001111@sip.example.com;transport=udp", "+15550001111"),
    ("00441234567890", "+441234567890"),
    ("", None), (None, None), ("anonymous", None), ("+0123", None), ("+1", None),
    ("+1234567890123456", None),
])
def test_normalize_e164(raw: str | None, expected: str | None) -> None:
    assert normalize_e164(raw) == expected


def test_route_key_exact_then_digits(cfg: VoiceCallConfig) -> None:
    assert route_key_for(cfg, "+15550001111") == "+15550001111"
    assert route_key_for(cfg, "15550001111") == "+15550001111"
    assert route_key_for(cfg, "+1 555-000-2222") == "+15550002222"
    assert route_key_for(cfg, "+15550009999") is None
    assert route_key_for(cfg, "5550001111") is None  # suffixes do not match
    assert route_key_for(cfg, None) is None and route_key_for(cfg, "") is None


def test_effective_config_overrides_route_fields(cfg: VoiceCallConfig) -> None:
    eff = effective_config(cfg, "+15550001111")
    assert eff.inbound_greeting == "Silver Fox Cards, how can I help?"
    assert eff.response_system_prompt == "You are a concise baseball card specialist."
    assert eff.agent_id == "cards"
    assert eff.response_timeout_ms == 20000  # not overridden: global value kept
    assert eff.tts.provider == "openai"
    assert eff.tts.providers["openai"] == {"voice": "alloy", "model": "tts-1"}
    assert cfg.inbound_greeting == "Hello from the main line."  # original untouched


def test_effective_config_partial_route(cfg: VoiceCallConfig) -> None:
    eff = effective_config(cfg, "+15550002222")
    assert eff.response_model == "openai/gpt-4o-mini"
    assert eff.inbound_greeting == "Hello from the main line."
    assert eff.tts == cfg.tts


def test_effective_config_without_route(cfg: VoiceCallConfig) -> None:
    assert effective_config(cfg, None) is cfg
    assert effective_config(cfg, "+19999999999") is cfg


def test_merge_tts_deep_and_later_wins() -> None:
    core: dict[str, Any] = {"provider": "openai", "timeoutMs": 9000,
            "providers": {"openai": {"voice": "alloy", "model": "gpt-4o-mini-tts"},
                          "elevenlabs": {"voiceId": "v1"}}}
    plugin = {"provider": "elevenlabs", "providers": {"elevenlabs": {"modelId": "m2"}}}
    route = {"providers": {"openai": {"voice": "marin"}}}
    assert merge_tts(core, plugin, route) == {
        "provider": "elevenlabs", "timeoutMs": 9000,
        "providers": {"openai": {"voice": "marin", "model": "gpt-4o-mini-tts"},
                      "elevenlabs": {"voiceId": "v1", "modelId": "m2"}},
    }
    assert core["providers"]["openai"]["voice"] == "alloy"  # inputs not mutated


def test_merge_tts_ignores_none_and_prototype_keys() -> None:
    merged = merge_tts(
        {"provider": "openai", "providers": {"openai": {"voice": "alloy"}}},
        {"provider": None, "__proto__": {"polluted": True},
         "providers": {"constructor": {"x": 1}, "openai": {"voice": None, "prototype": 1}}},
        None,
    )
    assert merged == {"provider": "openai", "providers": {"openai": {"voice": "alloy"}}}


def test_merge_tts_lists_replace() -> None:
    assert merge_tts({"a": [1, 2]}, {"a": [3]}) == {"a": [3]}


def test_effective_tts_layers_core_plugin_route() -> None:
    doc = {
        "plugins": {"entries": {"voice-call": {"enabled": True, "config": SEED_ROUTING}}},
        "messages": {"tts": {"auto": "always", "providers": {"openai": {"apiKey": "sk-core"}}}},
    }
    loaded = load_config_data(doc, {})
    tts = loaded.tts_for("+15550001111")
    assert tts == {
        "auto": "always", "provider": "openai", "timeoutMs": 8000,
        "providers": {"openai": {"apiKey": Secret("sk-core"), "voice": "alloy",
                                 "model": "tts-1"}},
    }
    assert effective_tts(loaded.config)["providers"]["openai"] == {"voice": "coral",
                                                                   "model": "tts-1"}


def test_effective_tts_default_timeout_does_not_hide_core_timeout() -> None:
    c = VoiceCallConfig.model_validate({"tts": {"provider": "openai"}})
    assert effective_tts(c, None, {"timeoutMs": 12000})["timeoutMs"] == 12000
    assert effective_tts(c)["timeoutMs"] == 8000
    explicit = VoiceCallConfig.model_validate({"tts": {"timeoutMs": 5000}})
    assert effective_tts(explicit, None, {"timeoutMs": 12000})["timeoutMs"] == 5000


def test_route_tts_is_validated_as_tts() -> None:
    route_tts = VoiceCallConfig.model_validate(SEED_ROUTING).numbers["+15550001111"].tts
    assert isinstance(route_tts, TtsConfig)
