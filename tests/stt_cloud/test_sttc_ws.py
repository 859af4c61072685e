"""The shared WebSocket STT plumbing: URLs, config reads, redaction, registry fit."""

from __future__ import annotations

import asyncio
import logging

import pytest
from sttc_kit import PROVIDERS, TIMEOUT, TRANSCRIPT, Provider, collect, send, tone_burst

from voicecall.config import Secret
from voicecall.errors import ConfigError
from voicecall.speech import registry
from voicecall.speech.stt._ws import ProviderConfig, redact, ws_url


@pytest.mark.parametrize(("base", "path", "expected"), [
    ("https://api.x.ai/v1", "/v1/stt", "wss://api.x.ai/v1/stt"),
    ("wss://api.x.ai/v1/stt", "/v1/stt", "wss://api.x.ai/v1/stt"),
    ("https://api.deepgram.com", "/v1/listen", "wss://api.deepgram.com/v1/listen"),
    ("http://127.0.0.1:9000/", "/v1/listen", "ws://127.0.0.1:9000/v1/listen"),
    ("https://api.openai.com/v1", "/realtime", "wss://api.openai.com/v1/realtime"),
    ("https://proxy/stt/v1", "/v1/stt", "wss://proxy/stt/v1/stt"),
    ("wss://host/custom", "", "wss://host/custom"),
])
def test_ws_url_joins_without_doubling(base: str, path: str, expected: str) -> None:
    assert ws_url(base, path) == expected


def test_ws_url_query_merge_and_bad_scheme() -> None:
    assert ws_url("wss://h/p?a=1&b=2", "", [("b", "3"), ("c", "x y")]) == \
        "wss://h/p?a=1&b=3&c=x+y"
    with pytest.raises(ValueError):
        ws_url("ftp://h", "/p")
    with pytest.raises(ValueError):
        ws_url("not a url", "/p")


def test_redact_removes_keys_and_masked_echoes() -> None:
    text = "Incorrect API key provided: sk-ab***yz. Key sk-abc-123 again sk-abc-123"
    out = redact(text, "sk-abc-123")
    assert "sk-abc-123" not in out and "***" not in out
    assert out.startswith("Incorrect API key provided: [redacted]")
    assert len(redact("x" * 1000)) < 400


def test_provider_config_reads() -> None:
    pc = ProviderConfig({"apiKey": Secret(" k "), "silence_duration_ms": 700,
                         "vadThreshold": 1, "interimResults": False, "keyterms": "one"}, "openai")
    assert pc.api_key(["OPENAI_API_KEY"]) == "k"
    assert pc.get_int("silenceDurationMs", 800) == 700          # snake_case spelling accepted
    assert pc.get_number("vadThreshold", 0.5) == 1.0
    assert pc.get_bool("interimResults", True) is False
    assert pc.get_str_list("keyterms") == ["one"]
    assert pc.get_str("language", "en") == "en"
    for cfg, key in (({"silenceDurationMs": True}, "silenceDurationMs"),
                     ({"silenceDurationMs": 1.5}, "silenceDurationMs"),
                     ({"language": 3}, "language"), ({"keyterms": [1]}, "keyterms")):
        bad = ProviderConfig(cfg, "openai")
        with pytest.raises(ConfigError) as info:
            bad.get_int(key, 0) if key == "silenceDurationMs" else \
                bad.get_str(key) if key == "language" else bad.get_str_list(key)
        assert info.value.path == f"streaming.providers.openai.{key}"
    with pytest.raises(ConfigError, match="apiKey"):
        ProviderConfig({"apiKey": 5}, "xai").api_key(["XAI_API_KEY"])


@pytest.mark.parametrize("p", PROVIDERS, ids=[p.id for p in PROVIDERS])
async def test_create_fits_the_registry(p: Provider, caplog: pytest.LogCaptureFixture) -> None:
    """``create`` is an ``SttFactory``: registered under its id, resolved from config."""
    name = f"test-{p.id}"
    registry.register_stt(name, p.module.create)
    try:
        async with p.make_fake() as fake:
            stt = registry.resolve_stt(name, {name: p.config(fake)})
            assert stt is not None
            session = await stt.open("call-1")
            with caplog.at_level(logging.DEBUG, logger="voicecall.stt"):
                await send(session, tone_burst())
                events = await collect(session)
                await asyncio.wait_for(session.aclose(), TIMEOUT)
            assert events[-1].text == TRANSCRIPT
            assert all(fake.api_key not in r.getMessage() + str(r.__dict__)
                       for r in caplog.records)
    finally:
        registry.unregister(name)
