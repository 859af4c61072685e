"""Finding and loading config files: shapes, precedence, env fallbacks, SecretRefs."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from voicecall.config import (
    ConfigValidationError,
    Secret,
    find_config_path,
    home_dir,
    load_config,
    load_config_data,
)
from voicecall.errors import ConfigError

PREFIX = "plugins.entries.voice-call.config"


def whole(config: dict[str, Any], enabled: bool | None = True, **top: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"config": config}
    if enabled is not None:
        entry["enabled"] = enabled
    return {"plugins": {"entries": {"voice-call": entry}}, **top}


def write(path: Path, data: Any) -> Path:
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


# --- locations ------------------------------------------------------------------

def test_home_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert home_dir({"VOICECALL_HOME": str(tmp_path)}) == tmp_path
    monkeypatch.setenv("HOME", str(tmp_path))
    assert home_dir({}) == tmp_path / ".voicecall"


def test_find_config_path_precedence(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    home_file = write(home / "config.json5", "{}")
    env_file = write(tmp_path / "env.json5", "{}")
    cli_file = write(tmp_path / "cli.json5", "{}")
    env = {"VOICECALL_HOME": str(home), "VOICECALL_CONFIG": str(env_file)}
    assert find_config_path(cli_file, env) == cli_file
    assert find_config_path(str(cli_file), env) == cli_file
    assert find_config_path(None, env) == env_file
    assert find_config_path(None, {"VOICECALL_HOME": str(home)}) == home_file
    assert find_config_path(None, {"VOICECALL_HOME": str(tmp_path / "nohome")}) is None


def test_missing_explicit_or_env_path_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        find_config_path(tmp_path / "missing.json5", {})
    with pytest.raises(ConfigError, match=r"\$VOICECALL_CONFIG"):
        find_config_path(None, {"VOICECALL_CONFIG": str(tmp_path / "missing.json5")})
    with pytest.raises(ConfigError, match="is a directory"):
        find_config_path(tmp_path, {})


def test_no_file_uses_embedded_mock_defaults(tmp_path: Path) -> None:
    loaded = load_config(None, {"VOICECALL_HOME": str(tmp_path)})
    assert loaded.path is None
    assert loaded.config.enabled is True and loaded.config.provider == "mock"
    assert loaded.raw == {"enabled": True, "provider": "mock"}
    assert loaded.core_tts == {} and loaded.legacy_keys == [] and loaded.warnings == []


def test_load_from_home_file(tmp_path: Path) -> None:
    write(tmp_path / "config.json5", '{provider: "mock", maxConcurrentCalls: 3, // comment\n}')
    loaded = load_config(None, {"VOICECALL_HOME": str(tmp_path)})
    assert loaded.path == tmp_path / "config.json5"
    assert loaded.config.max_concurrent_calls == 3


def test_json5_syntax_error_has_line_info(tmp_path: Path) -> None:
    f = write(tmp_path / "bad.json5", '{\n  provider: "mock",\n  serve: {port: 3334,\n}')
    with pytest.raises(ConfigError) as info:
        load_config(f, {})
    text = str(info.value)
    assert str(f) in text and "invalid JSON5" in text and "line 4" in text


def test_top_level_must_be_object(tmp_path: Path) -> None:
    with pytest.raises(ConfigValidationError, match="expected an object"):
        load_config(write(tmp_path / "c.json5", "[1, 2]"), {})


# --- shapes -----------------------------------------------------------------------

def test_plugin_shape_enabled_by_default(tmp_path: Path) -> None:
    loaded = load_config(write(tmp_path / "c.json5", {"provider": "mock"}), {})
    assert loaded.config.enabled is True
    assert loaded.raw == {"provider": "mock"}
    assert loaded.prefix == ""


def test_plugin_shape_can_disable(tmp_path: Path) -> None:
    loaded = load_config(write(tmp_path / "c.json5", {"enabled": False}), {})
    assert loaded.config.enabled is False


def test_whole_shape_reads_entry_and_core_tts(tmp_path: Path) -> None:
    doc = whole({"provider": "mock", "inboundGreeting": "Hello"},
                messages={"tts": {"provider": "openai",
                                  "providers": {"openai": {"voice": "alloy"}}}},
                agents={"list": []})
    loaded = load_config(write(tmp_path / "openclaw.json5", doc), {})
    assert loaded.config.enabled is True
    assert loaded.config.inbound_greeting == "Hello"
    assert loaded.core_tts == {"provider": "openai", "providers": {"openai": {"voice": "alloy"}}}
    assert loaded.raw == {"provider": "mock", "inboundGreeting": "Hello"}
    assert loaded.prefix == PREFIX


@pytest.mark.parametrize(
    ("entry_enabled", "config_enabled", "expected"),
    [(None, None, False), (True, None, True), (False, None, False),
     (True, False, False), (None, True, False), (True, True, True)],
)
def test_whole_shape_enabled_switch(
    entry_enabled: bool | None, config_enabled: bool | None, expected: bool
) -> None:
    config: dict[str, Any] = {"provider": "mock"}
    if config_enabled is not None:
        config["enabled"] = config_enabled
    assert load_config_data(whole(config, entry_enabled), {}).config.enabled is expected


def test_whole_shape_without_entry_is_disabled() -> None:
    loaded = load_config_data({"plugins": {"entries": {}}}, {})
    assert loaded.config.enabled is False
    assert loaded.warnings and "voice-call is disabled" in loaded.warnings[0]


def test_whole_shape_bad_entry_enabled() -> None:
    with pytest.raises(ConfigValidationError) as info:
        load_config_data(whole({}, enabled="yes"), {})  # type: ignore[arg-type]
    assert info.value.errors == [
        "plugins.entries.voice-call.enabled: Input should be a valid boolean"
    ]


def test_whole_shape_seed_example_loads() -> None:
    seed = whole({
        "provider": "twilio", "fromNumber": "+15550001234", "toNumber": "+15550005678",
        "sessionScope": "per-phone",
        "numbers": {"+15550009999": {
            "inboundGreeting": "Silver Fox Cards, how can I help?",
            "responseSystemPrompt": "You are a concise baseball card specialist.",
            "tts": {"providers": {"openai": {"voice": "alloy"}}}}},
        "twilio": {"accountSid": "ACxxxxxxxx", "authToken": "..."},
        "telnyx": {"apiKey": "...", "connectionId": "...", "publicKey": "..."},
        "plivo": {"authId": "MAxxxxxxxxxxxxxxxxxxxx", "authToken": "..."},
        "serve": {"port": 3334, "path": "/voice/webhook"},
        "webhookSecurity": {"allowedHosts": ["voice.example.com"],
                            "trustedProxyIPs": ["100.64.0.1"]},
        "outbound": {"defaultMode": "notify"},
        "streaming": {"enabled": True},
        "realtime": {"enabled": False},
    })
    cfg = load_config_data(seed, {}).config
    assert cfg.provider == "twilio" and cfg.streaming.enabled
    assert cfg.webhook_security.trusted_proxy_ips == ["100.64.0.1"]


def test_realtime_with_streaming_is_a_load_error() -> None:
    with pytest.raises(ConfigValidationError) as info:
        load_config_data(whole({"realtime": {"enabled": True}, "streaming": {"enabled": True}}),
                         {})
    assert info.value.errors[0].startswith(f"{PREFIX}.realtime.enabled: ")
    assert "cannot both be true" in info.value.errors[0]


def test_skip_signature_verification_warns() -> None:
    loaded = load_config_data({"skipSignatureVerification": True}, {})
    assert any("NOT verified" in w for w in loaded.warnings)


# --- env fallbacks ------------------------------------------------------------------

CARRIER_ENV = {
    "TWILIO_ACCOUNT_SID": "AC-env", "TWILIO_AUTH_TOKEN": "tw-env",
    "TWILIO_FROM_NUMBER": "+15550002222",
    "TELNYX_API_KEY": "tx-env", "TELNYX_CONNECTION_ID": "conn-env", "TELNYX_PUBLIC_KEY": "pk-env",
    "PLIVO_AUTH_ID": "MA-env", "PLIVO_AUTH_TOKEN": "pl-env",
}


def test_env_fallbacks_twilio_only() -> None:
    cfg = load_config_data({"provider": "twilio"}, CARRIER_ENV).config
    assert cfg.twilio.account_sid == "AC-env"
    assert cfg.twilio.auth_token == Secret("tw-env")
    assert cfg.from_number == "+15550002222"
    assert cfg.telnyx.api_key is None and cfg.plivo.auth_id is None


def test_env_fallbacks_telnyx_only() -> None:
    cfg = load_config_data({"provider": "telnyx", "fromNumber": "+15550001234"},
                           CARRIER_ENV).config
    assert cfg.telnyx.api_key == Secret("tx-env")
    assert (cfg.telnyx.connection_id, cfg.telnyx.public_key) == ("conn-env", "pk-env")
    assert cfg.twilio.account_sid is None and cfg.twilio.auth_token is None
    assert cfg.from_number == "+15550001234"  # TWILIO_FROM_NUMBER is twilio-only


def test_env_fallbacks_plivo_only() -> None:
    cfg = load_config_data({"provider": "plivo"}, CARRIER_ENV).config
    assert cfg.plivo.auth_id == "MA-env" and cfg.plivo.auth_token == Secret("pl-env")
    assert cfg.telnyx.api_key is None and cfg.from_number is None


def test_env_does_not_override_file_values() -> None:
    doc = {"provider": "twilio", "fromNumber": "+15550001111",
           "twilio": {"accountSid": "AC-file", "auth_token": "tw-file"}}
    cfg = load_config_data(doc, CARRIER_ENV).config
    assert cfg.twilio.account_sid == "AC-file"
    assert cfg.twilio.auth_token == Secret("tw-file")  # snake_case spelling counts as present
    assert cfg.from_number == "+15550001111"


def test_empty_env_values_are_ignored() -> None:
    cfg = load_config_data({"provider": "twilio"}, {"TWILIO_ACCOUNT_SID": "  "}).config
    assert cfg.twilio.account_sid is None


def test_invalid_env_from_number_is_reported() -> None:
    with pytest.raises(ConfigValidationError) as info:
        load_config_data({"provider": "twilio"}, {"TWILIO_FROM_NUMBER": "555-1234"})
    assert info.value.errors == ["fromNumber: Expected E.164 format, e.g. +15550001234"]


def test_ngrok_env_only_for_ngrok_tunnel() -> None:
    env = {"NGROK_AUTHTOKEN": "ng-env", "NGROK_DOMAIN": "voice.ngrok.app"}
    cfg = load_config_data({"tunnel": {"provider": "ngrok"}}, env).config
    assert cfg.tunnel.ngrok_auth_token == Secret("ng-env")
    assert cfg.tunnel.ngrok_domain == "voice.ngrok.app"
    cfg = load_config_data({}, env).config
    assert cfg.tunnel.ngrok_auth_token is None and cfg.tunnel.ngrok_domain is None


def test_speech_provider_keys_from_env() -> None:
    env = {"OPENAI_API_KEY": "sk-env", "GOOGLE_API_KEY": "g-low", "GEMINI_API_KEY": "g-high",
           "XAI_API_KEY": "xai-env", "DEEPGRAM_API_KEY": "dg-env"}
    doc = {
        "streaming": {"provider": "xai", "providers": {"deepgram": {"model": "nova"}}},
        "realtime": {"provider": "google", "providers": {"openai": {"apiKey": "sk-file"}}},
    }
    cfg = load_config_data(doc, env).config
    assert cfg.streaming.providers["xai"]["apiKey"] == Secret("xai-env")
    assert cfg.streaming.providers["deepgram"] == {"model": "nova", "apiKey": Secret("dg-env")}
    assert "openai" not in cfg.streaming.providers  # not selected, not configured
    assert cfg.realtime.providers["google"]["apiKey"] == Secret("g-high")  # GEMINI first
    assert cfg.realtime.providers["openai"]["apiKey"] == Secret("sk-file")


def test_tts_env_key_respects_core_tts() -> None:
    env = {"OPENAI_API_KEY": "sk-env", "ELEVENLABS_API_KEY": "el-env"}
    doc = whole({"tts": {"provider": "elevenlabs"}},
                messages={"tts": {"providers": {"openai": {"apiKey": "sk-core"}}}})
    loaded = load_config_data(doc, env)
    assert loaded.config.tts.providers == {"elevenlabs": {"apiKey": Secret("el-env")}}
    assert loaded.tts_for()["providers"]["openai"]["apiKey"] == Secret("sk-core")


def test_responder_key_only_for_openai_endpoint() -> None:
    env = {"OPENAI_API_KEY": "sk-env"}
    cfg = load_config_data({"responder": {"kind": "openai"}}, env).config
    assert cfg.responder.api_key == Secret("sk-env")
    local = {"responder": {"kind": "openai", "baseUrl": "http://127.0.0.1:11434/v1"}}
    assert load_config_data(local, env).config.responder.api_key is None
    assert load_config_data({}, env).config.responder.api_key is None


# --- SecretRefs -----------------------------------------------------------------------

def test_env_string_secret_ref() -> None:
    doc = {"realtime": {"providers": {"google": {"apiKey": "${GEMINI_API_KEY}"}}},
           "twilio": {"authToken": "${env:TW_TOKEN}"}}
    cfg = load_config_data(doc, {"GEMINI_API_KEY": "g-1", "TW_TOKEN": "t-1"}).config
    assert cfg.realtime.providers["google"]["apiKey"] == Secret("g-1")
    assert cfg.twilio.auth_token == Secret("t-1")


def test_env_string_ref_must_be_whole_string() -> None:
    doc = {"twilio": {"authToken": "prefix-${TW_TOKEN}"}}
    cfg = load_config_data(doc, {"TW_TOKEN": "t-1"}).config
    assert cfg.twilio.auth_token == Secret("prefix-${TW_TOKEN}")


def test_missing_env_ref_names_path_and_variable() -> None:
    doc = whole({"twilio": {"authToken": "${NOPE_TOKEN}"}})
    with pytest.raises(ConfigError) as info:
        load_config_data(doc, {})
    assert str(info.value) == (
        f"{PREFIX}.twilio.authToken: environment variable NOPE_TOKEN is not set"
    )


def test_env_object_ref() -> None:
    doc = {"telnyx": {"apiKey": {"source": "env", "provider": "default", "id": "TX"}}}
    assert load_config_data(doc, {"TX": "tx-1"}).config.telnyx.api_key == Secret("tx-1")


def test_file_ref(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("file-secret\n")
    doc = {"plivo": {"authToken": {"source": "file", "path": str(tmp_path / "token")}},
           "responder": {"apiKey": {"source": "file", "id": str(tmp_path / "token")}}}
    cfg = load_config_data(doc, {}).config
    assert cfg.plivo.auth_token == Secret("file-secret")
    assert cfg.responder.api_key == Secret("file-secret")


def test_file_ref_relative_to_config_file(tmp_path: Path) -> None:
    (tmp_path / "ngrok.txt").write_text("ng-file\r\n")
    f = write(tmp_path / "c.json5", {"tunnel": {"provider": "ngrok", "ngrokAuthToken":
                                                {"source": "file", "path": "ngrok.txt"}}})
    assert load_config(f, {}).config.tunnel.ngrok_auth_token == Secret("ng-file")


def test_missing_file_ref(tmp_path: Path) -> None:
    doc = {"twilio": {"authToken": {"source": "file", "path": str(tmp_path / "nope")}}}
    with pytest.raises(ConfigError, match=r"^twilio\.authToken: secret file .*nope does not exist"):
        load_config_data(doc, {})


def test_exec_ref_list_and_string() -> None:
    argv = [sys.executable, "-c", "print('exec-secret')"]
    doc = {"twilio": {"authToken": {"source": "exec", "command": argv}},
           "streaming": {"providers": {"openai": {"apiKey": {"source": "exec",
                                                             "id": f"{sys.executable} -V"}}}}}
    cfg = load_config_data(doc, {}).config
    assert cfg.twilio.auth_token == Secret("exec-secret")
    assert cfg.streaming.providers["openai"]["apiKey"].reveal().startswith("Python 3")


def test_exec_ref_failure_never_shows_output() -> None:
    argv = [sys.executable, "-c",
            "import sys; print('leaked-secret'); print('leaked-err', file=sys.stderr); sys.exit(3)"]
    doc = {"twilio": {"authToken": {"source": "exec", "command": argv}}}
    with pytest.raises(ConfigError) as info:
        load_config_data(doc, {})
    text = str(info.value)
    assert text.startswith("twilio.authToken: secret command ")
    assert "exited with status 3" in text
    assert "leaked" not in text


def test_exec_ref_missing_command() -> None:
    doc = {"twilio": {"authToken": {"source": "exec", "command": ["/no/such/tool-xyz"]}}}
    with pytest.raises(ConfigError, match="secret command not found: /no/such/tool-xyz"):
        load_config_data(doc, {})


def test_unsupported_ref_source() -> None:
    doc = {"twilio": {"authToken": {"source": "vault", "id": "x"}}}
    with pytest.raises(ConfigError) as info:
        load_config_data(doc, {})
    assert str(info.value) == (
        "twilio.authToken: unsupported SecretRef source 'vault' (allowed: env, file, exec)"
    )


def test_core_tts_secret_refs_resolved_and_masked() -> None:
    doc = whole({}, messages={"tts": {"providers": {"openai": {"apiKey": "${OPENAI_KEY}"}}}})
    loaded = load_config_data(doc, {"OPENAI_KEY": "sk-core"})
    assert loaded.core_tts["providers"]["openai"]["apiKey"] == Secret("sk-core")
    assert "sk-core" not in repr(loaded)


def test_loaded_repr_never_contains_secrets(tmp_path: Path) -> None:
    (tmp_path / "tok").write_text("from-file-secret")
    doc = whole({
        "provider": "twilio",
        "twilio": {"accountSid": "AC1", "authToken": "plain-file-secret"},
        "tunnel": {"provider": "ngrok", "ngrokAuthToken": {"source": "file",
                                                           "path": str(tmp_path / "tok")}},
        "realtime": {"providers": {"openai": {"apiKey": "${OPENAI_API_KEY}"}}},
    })
    loaded = load_config_data(doc, {"OPENAI_API_KEY": "env-secret"})
    text = repr(loaded) + str(loaded.config.model_dump(mode="json"))
    for secret in ("plain-file-secret", "from-file-secret", "env-secret"):
        assert secret not in text


def test_legacy_keys_migrated_in_memory_with_warning() -> None:
    doc = whole({"provider": "log", "twilio": {"from": "+15550003333"},
                 "streaming": {"sttProvider": "openai", "sttModel": "gpt-4o-transcribe"}})
    loaded = load_config_data(doc, {})
    assert loaded.config.provider == "mock"
    assert loaded.config.from_number == "+15550003333"
    assert loaded.config.streaming.provider == "openai"
    assert loaded.config.streaming.providers["openai"] == {"model": "gpt-4o-transcribe"}
    assert loaded.legacy_keys == ["provider", "twilio.from", "streaming.sttProvider",
                                  "streaming.sttModel"]
    assert len(loaded.warnings) == 1
    warning = loaded.warnings[0]
    assert warning.startswith("legacy config keys detected: ")
    assert f"{PREFIX}.twilio.from" in warning
    assert warning.endswith('Run "voicecall doctor --fix".')
    # raw stays as written so doctor and tools can see the original
    assert loaded.raw["provider"] == "log"


def test_empty_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="the file is empty"):
        load_config(write(tmp_path / "c.json5", "  \n"), {})
