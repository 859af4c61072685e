"""The frozen model: defaults, Secret masking, strict validation and error paths."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from voicecall.config import (
    DEFAULT_REALTIME_INSTRUCTIONS,
    ConfigValidationError,
    Secret,
    VoiceCallConfig,
    load_config_data,
)
from voicecall.errors import ConfigError


def errors_of(doc: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigValidationError) as info:
        load_config_data(doc, env={})
    assert isinstance(info.value, ConfigError)
    return info.value.errors


# --- defaults -------------------------------------------------------------------

def test_top_level_defaults() -> None:
    c = VoiceCallConfig()
    assert c.provider is None
    assert c.from_number is None and c.to_number is None
    assert c.inbound_policy == "disabled"
    assert c.allow_from == []
    assert c.inbound_greeting is None
    assert c.numbers == {}
    assert c.outbound.default_mode == "notify"
    assert c.outbound.notify_hangup_delay_sec == 3
    assert c.max_duration_seconds == 300
    assert c.stale_call_reaper_seconds == 0
    assert c.silence_timeout_ms == 800
    assert c.transcript_timeout_ms == 180000
    assert c.ring_timeout_ms == 30000
    assert c.max_concurrent_calls == 1
    assert c.session_scope == "per-phone"
    assert c.public_url is None
    assert c.skip_signature_verification is False
    assert c.store is None and c.agent_id is None
    assert c.response_model is None and c.response_system_prompt is None
    assert c.response_timeout_ms == 30000


def test_listener_and_exposure_defaults() -> None:
    c = VoiceCallConfig()
    assert (c.serve.port, c.serve.bind, c.serve.path) == (3334, "127.0.0.1", "/voice/webhook")
    assert (c.tailscale.mode, c.tailscale.path, c.tailscale.port) == ("off", "/voice/webhook", 443)
    assert c.tunnel.provider == "none"
    assert c.tunnel.ngrok_auth_token is None and c.tunnel.ngrok_domain is None
    assert c.tunnel.allow_ngrok_free_tier_loopback_bypass is False
    assert c.webhook_security.allowed_hosts == []
    assert c.webhook_security.trust_forwarding_headers is False
    assert c.webhook_security.trusted_proxy_ips == []
    assert (c.control.bind, c.control.port) == ("127.0.0.1", 3335)


def test_carrier_and_extension_defaults() -> None:
    c = VoiceCallConfig()
    assert c.twilio.account_sid is None and c.twilio.auth_token is None
    assert c.twilio.region == "us1"
    assert c.telnyx.api_key is None and c.telnyx.public_key is None
    assert c.plivo.auth_id is None and c.plivo.auth_token is None
    assert c.responder.kind == "scripted"
    assert c.responder.base_url is None  # the kind picks its usual address
    assert c.responder.api_key is None and c.responder.script is None
    m = c.mock
    assert (m.ring_delay_ms, m.answer_delay_ms, m.reply_delay_ms) == (200, 300, 300)
    assert m.callee_replies == [
        "Hi, yes, this is a good time.",
        "Could you tell me the opening hours?",
        "Great, thank you. Goodbye.",
    ]
    assert m.hangup_after_replies is True and m.answer == "answer"
    assert (c.log.level, c.log.include_pii) == ("info", False)


def test_audio_mode_defaults() -> None:
    s = VoiceCallConfig().streaming
    assert s.enabled is False and s.provider is None
    assert s.stream_path == "/voice/stream" and s.providers == {}
    assert (s.pre_start_timeout_ms, s.max_pending_connections) == (5000, 32)
    assert (s.max_pending_connections_per_ip, s.max_connections) == (4, 128)
    r = VoiceCallConfig().realtime
    assert r.enabled is False and r.provider is None and r.stream_path is None
    assert r.instructions == DEFAULT_REALTIME_INSTRUCTIONS
    assert "openclaw_agent_consult" in r.instructions
    assert (r.tool_policy, r.consult_policy) == ("safe-read-only", "auto")
    assert r.consult_thinking_level is None and r.consult_fast_mode is None
    assert r.tools == [] and r.providers == {}
    f = r.fast_context
    assert (f.enabled, f.timeout_ms, f.max_results) == (False, 800, 3)
    assert f.sources == ["memory", "sessions"] and f.fallback_to_consult is False
    a = r.agent_context
    assert (a.enabled, a.max_chars) == (False, 6000)
    assert a.include_identity and a.include_system_prompt and a.include_workspace_files
    assert a.files == ["SOUL.md", "IDENTITY.md", "USER.md"]
    t = VoiceCallConfig().tts
    assert t.provider is None and t.providers == {} and t.timeout_ms == 8000


def test_default_lists_are_not_shared() -> None:
    a, b = VoiceCallConfig(), VoiceCallConfig()
    a.realtime.agent_context.files.append("X.md")
    assert b.realtime.agent_context.files == ["SOUL.md", "IDENTITY.md", "USER.md"]


@pytest.mark.parametrize(
    ("serve_path", "expected"),
    [
        ("/voice/webhook", "/voice/stream/realtime"),
        ("/voice/webhook/", "/voice/stream/realtime"),
        ("/hooks/twilio/webhook", "/hooks/twilio/stream/realtime"),
        ("/calls", "/calls/stream/realtime"),
        ("/", "/voice/stream/realtime"),
    ],
)
def test_realtime_stream_path_derivation(serve_path: str, expected: str) -> None:
    c = VoiceCallConfig.model_validate({"serve": {"path": serve_path}})
    assert c.effective_realtime_stream_path == expected


def test_explicit_realtime_stream_path_wins() -> None:
    c = VoiceCallConfig.model_validate({"realtime": {"streamPath": "/rt"}})
    assert c.effective_realtime_stream_path == "/rt"


def test_camel_case_and_snake_case_both_accepted() -> None:
    a = VoiceCallConfig.model_validate({"fromNumber": "+15550001234"})
    b = VoiceCallConfig.model_validate({"from_number": "+15550001234"})
    assert a.from_number == b.from_number == "+15550001234"
    c = VoiceCallConfig.model_validate({"webhookSecurity": {"trustedProxyIPs": ["10.0.0.1"]}})
    assert c.webhook_security.trusted_proxy_ips == ["10.0.0.1"]


def test_model_is_frozen() -> None:
    c = VoiceCallConfig()
    with pytest.raises(ValidationError):
        c.provider = "mock"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        c.serve.port = 1  # type: ignore[misc]


def test_store_expands_home(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/tester")
    assert VoiceCallConfig.model_validate({"store": "~/calls"}).store == "/home/tester/calls"


def test_mock_from_number_fallback() -> None:
    assert VoiceCallConfig(provider="mock").effective_from_number == "+15550000000"
    assert VoiceCallConfig(provider="twilio").effective_from_number is None


# --- Secret -----------------------------------------------------------------------

def test_secret_is_masked_and_compares_by_value() -> None:
    s = Secret("hunter2")
    assert repr(s) == "Secret('**********')"
    assert str(s) == "**********" and f"{s}" == "**********"
    assert s.reveal() == "hunter2"
    assert s == Secret("hunter2") and s != Secret("other")
    assert hash(s) == hash(Secret("hunter2"))
    assert s != "hunter2"


def test_secret_fields_accept_str_and_serialize_masked() -> None:
    c = VoiceCallConfig.model_validate(
        {
            "twilio": {"authToken": "tw-secret"},
            "tunnel": {"ngrokAuthToken": "ng-secret"},
            "responder": {"apiKey": "sk-responder"},
            "realtime": {"providers": {"openai": {"apiKey": "sk-rt", "model": "gpt"}}},
            "streaming": {"providers": {"xai": {"apiKey": "xai-secret"}}},
            "tts": {"providers": {"elevenlabs": {"apiKey": "el-secret", "voiceId": "v"}}},
        }
    )
    text = repr(c) + str(c) + str(c.model_dump()) + str(c.model_dump(mode="json"))
    for secret in ("tw-secret", "ng-secret", "sk-responder", "sk-rt", "xai-secret", "el-secret"):
        assert secret not in text
    assert isinstance(c.twilio.auth_token, Secret)
    assert c.twilio.auth_token.reveal() == "tw-secret"
    rt_key = c.realtime.providers["openai"]["apiKey"]
    assert isinstance(rt_key, Secret) and rt_key.reveal() == "sk-rt"
    assert c.realtime.providers["openai"]["model"] == "gpt"
    dumped = c.model_dump(mode="json", by_alias=True)
    assert dumped["twilio"]["authToken"] == "**********"
    assert dumped["tts"]["providers"]["elevenlabs"] == {"apiKey": "**********", "voiceId": "v"}
    revealed = c.model_dump(mode="json", by_alias=True, context={"reveal_secrets": True})
    assert revealed["twilio"]["authToken"] == "tw-secret"
    assert revealed["streaming"]["providers"]["xai"]["apiKey"] == "xai-secret"


def test_empty_secret_is_rejected() -> None:
    assert errors_of({"twilio": {"authToken": ""}}) == [
        "twilio.authToken: String should have at least 1 character"
    ]


# --- validation errors ----------------------------------------------------------

def test_unknown_key_names_full_path_plugin_shape() -> None:
    errs = errors_of({"serve": {"prot": 1}, "bogus": True, "numbers": {"+15550001111": {"x": 1}}})
    assert "serve.prot: unknown key" in errs
    assert "bogus: unknown key" in errs
    assert "numbers.+15550001111.x: unknown key" in errs


def test_unknown_key_names_full_path_whole_shape() -> None:
    doc = {"plugins": {"entries": {"voice-call": {"enabled": True,
                                                  "config": {"twilio": {"from_": "x"}}}}}}
    assert errors_of(doc) == [
        "plugins.entries.voice-call.config.twilio.from_: unknown key"
    ]


def test_literal_errors_list_allowed_values() -> None:
    errs = errors_of({"provider": "vonage", "sessionScope": "forever",
                      "tailscale": {"mode": "on"}})
    assert (
        "provider: Input should be 'twilio', 'telnyx', 'plivo' or 'mock' "
        "(allowed: twilio, telnyx, plivo, mock)" in errs
    )
    assert any(e.startswith("sessionScope:") and
               e.endswith("(allowed: per-phone, per-call, main)") for e in errs)
    assert any(e.startswith("tailscale.mode:") and
               e.endswith("(allowed: off, serve, funnel)") for e in errs)


def test_e164_errors_and_all_problems_reported_at_once() -> None:
    errs = errors_of({"fromNumber": "5550001234", "allowFrom": ["+15550001234", "+0123"],
                      "numbers": {"not-a-number": {}}, "serve": {"port": "3334"}})
    assert "fromNumber: Expected E.164 format, e.g. +15550001234" in errs
    assert "allowFrom[1]: Expected E.164 format, e.g. +15550001234" in errs
    assert "numbers.not-a-number: Expected E.164 format, e.g. +15550001234" in errs
    assert "serve.port: Input should be a valid integer" in errs
    assert len(errs) == 4


def test_error_message_lists_every_problem() -> None:
    with pytest.raises(ConfigValidationError) as info:
        load_config_data({"provider": "x", "serve": {"port": 0}}, env={})
    text = str(info.value)
    assert "2 problems" in text
    assert "provider: Input should be" in text and "serve.port: Input should be greater" in text
    assert info.value.exit_code == 2


def test_legacy_tts_provider_key_rejected_by_strict_model() -> None:
    with pytest.raises(ValidationError):
        VoiceCallConfig.model_validate({"tts": {"openai": {"voice": "alloy"}}})


def test_number_route_is_strict() -> None:
    errs = errors_of({"numbers": {"+15550001111": {"inboundGreeting": "hi", "provider": "x"}}})
    assert errs == ["numbers.+15550001111.provider: unknown key"]


@pytest.mark.parametrize("port", [443, 8443, 10000])
def test_funnel_ports_allowed(port: int) -> None:
    VoiceCallConfig.model_validate({"tailscale": {"mode": "funnel", "port": port}})
    VoiceCallConfig.model_validate({"tunnel": {"provider": "tailscale-funnel"},
                                    "tailscale": {"port": port}})


def test_funnel_port_rejected_but_serve_any_port() -> None:
    assert errors_of({"tailscale": {"mode": "funnel", "port": 8080}}) == [
        "tailscale.port: Tailscale Funnel HTTPS port must be one of 443, 8443, 10000"
    ]
    VoiceCallConfig.model_validate({"tailscale": {"mode": "serve", "port": 4545}})


def test_public_url_must_be_absolute_http() -> None:
    assert errors_of({"publicUrl": "voice.example.com/hook"}) == [
        "publicUrl: Expected an absolute http(s) URL"
    ]


def test_trusted_proxy_ips_validated() -> None:
    ok = VoiceCallConfig.model_validate(
        {"webhookSecurity": {"trustedProxyIPs": ["100.64.0.1", "10.0.0.0/8", "::1"]}})
    assert ok.webhook_security.trusted_proxy_ips == ["100.64.0.1", "10.0.0.0/8", "::1"]
    errs = errors_of({"webhookSecurity": {"trustedProxyIPs": ["proxy.local"]}})
    assert errs == ["webhookSecurity.trustedProxyIPs[0]: "
                    "Expected an IP address or CIDR range, e.g. 203.0.113.7"]


def test_realtime_tools_shape_checked() -> None:
    good = {"type": "function", "name": "lookup", "description": "d",
            "parameters": {"type": "object", "properties": {}}}
    assert VoiceCallConfig.model_validate({"realtime": {"tools": [good]}}).realtime.tools == [good]
    errs = errors_of({"realtime": {"tools": [{"name": "x"}]}})
    assert len(errs) == 1 and errs[0].startswith("realtime.tools: Value error, tool 0")


def test_thinking_level_literal() -> None:
    c = VoiceCallConfig.model_validate({"realtime": {"consultThinkingLevel": "ultra"}})
    assert c.realtime.consult_thinking_level == "ultra"
    errs = errors_of({"realtime": {"consultThinkingLevel": "huge"}})
    assert errs[0].startswith("realtime.consultThinkingLevel:")
    assert "(allowed: off, minimal, low, medium, high, xhigh, adaptive, max, ultra)" in errs[0]
