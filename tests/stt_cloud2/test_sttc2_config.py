"""``create(cfg)`` for the elevenlabs and mistral STT providers: keys, defaults, checks."""

from __future__ import annotations

from typing import Any

import pytest

from voicecall.config import Secret
from voicecall.errors import ConfigError
from voicecall.speech.stt import elevenlabs, mistral

EL_ENV = ("ELEVENLABS_API_KEY", "XI_API_KEY")


@pytest.fixture(autouse=True)
def _no_env_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*EL_ENV, "MISTRAL_API_KEY"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("module, provider", [(elevenlabs, "elevenlabs"), (mistral, "mistral")])
def test_missing_api_key_names_the_config_path(module: Any, provider: str) -> None:
    with pytest.raises(ConfigError) as info:
        module.create({})
    assert info.value.path == f"streaming.providers.{provider}.apiKey"
    assert f"streaming.providers.{provider}.apiKey" in str(info.value)


@pytest.mark.parametrize("env", EL_ENV)
def test_elevenlabs_key_from_env(monkeypatch: pytest.MonkeyPatch, env: str) -> None:
    monkeypatch.setenv(env, "from-env-key")
    assert elevenlabs.create({}).cfg.api_key == "from-env-key"


def test_mistral_key_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MISTRAL_API_KEY", "from-env-key")
    assert mistral.create({}).cfg.api_key == "from-env-key"


@pytest.mark.parametrize("module", [elevenlabs, mistral])
def test_secret_key_is_revealed_only_for_the_wire(module: Any) -> None:
    stt = module.create({"apiKey": Secret("sk-secret-value-1")})
    assert stt.cfg.api_key == "sk-secret-value-1"
    assert "sk-secret-value-1" not in repr(stt.cfg)


def test_elevenlabs_defaults() -> None:
    stt = elevenlabs.create({"apiKey": "k"})
    assert stt.name == "elevenlabs"
    assert (stt.capabilities.interim_results, stt.capabilities.server_vad) == (True, True)
    assert stt.cfg.url() == (
        "wss://api.elevenlabs.io/v1/speech-to-text/realtime?model_id=scribe_v2_realtime"
        "&audio_format=ulaw_8000&commit_strategy=vad&include_timestamps=false"
        "&vad_silence_threshold_secs=0.8")


def test_elevenlabs_snake_case_and_base_url_forms() -> None:
    stt = elevenlabs.create({"api_key": "k", "commit_strategy": "manual",
                             "base_url": "https://eu.example.test/v1/"})
    assert stt.cfg.commit_strategy == "manual"
    assert stt.cfg.url().startswith("wss://eu.example.test/v1/speech-to-text/realtime?")
    assert not stt.capabilities.server_vad
    proxied = elevenlabs.create({"apiKey": "k", "endpoint": "ws://proxy.test/stt?tenant=7"})
    assert proxied.cfg.url().startswith("ws://proxy.test/stt?tenant=7&model_id=")


@pytest.mark.parametrize("key, value", [
    ("commitStrategy", "auto"),
    ("audioFormat", "mp3_44100"),
    ("vadSilenceThresholdSecs", 5),
    ("vadThreshold", 0.05),
    ("minSpeechDurationMs", 10.5),
    ("keyterms", "order"),
    ("includeTimestamps", "yes"),
    ("model", 3),
])
def test_elevenlabs_bad_values_name_their_key(key: str, value: Any) -> None:
    with pytest.raises(ConfigError) as info:
        elevenlabs.create({"apiKey": "k", key: value})
    assert info.value.path == f"streaming.providers.elevenlabs.{key}"


def test_mistral_defaults() -> None:
    stt = mistral.create({"apiKey": "k"})
    assert stt.name == "mistral"
    assert (stt.capabilities.interim_results, stt.capabilities.server_vad) == (True, False)
    assert stt.cfg.url() == ("wss://api.mistral.ai/v1/audio/transcriptions/realtime"
                             "?model=voxtral-mini-transcribe-realtime-2602")
    assert stt.cfg.session_update() == {
        "type": "session.update",
        "session": {"audio_format": {"encoding": "pcm_mulaw", "sample_rate": 8000},
                    "target_streaming_delay_ms": 480}}


def test_mistral_aliases_and_base_url() -> None:
    stt = mistral.create({"apiKey": "k", "encoding": "linear16", "sampleRate": 16000,
                          "baseUrl": "https://api.mistral.ai/v1"})
    assert (stt.cfg.encoding, stt.cfg.sample_rate) == ("pcm_s16le", 16000)
    assert stt.cfg.url().startswith("wss://api.mistral.ai/v1/audio/transcriptions/realtime?")
    assert mistral.create({"apiKey": "k", "encoding": "ulaw"}).cfg.encoding == "pcm_mulaw"


@pytest.mark.parametrize("cfg, key", [
    ({"encoding": "opus"}, "encoding"),
    ({"encoding": "pcm_mulaw", "sampleRate": 16000}, "sampleRate"),
    ({"encoding": "pcm_s16le", "sampleRate": 24000}, "sampleRate"),
    ({"targetStreamingDelayMs": -1}, "targetStreamingDelayMs"),
    ({"silenceDurationMs": 20}, "silenceDurationMs"),
    ({"maxQueuedBytes": 10}, "maxQueuedBytes"),
])
def test_mistral_bad_values_name_their_key(cfg: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        mistral.create({"apiKey": "k", **cfg})
    assert info.value.path == f"streaming.providers.mistral.{key}"
