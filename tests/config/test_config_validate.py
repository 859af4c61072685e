"""Cross-field setup rules (reference §2.4), with their exact messages."""

from __future__ import annotations

from typing import Any

import pytest

from voicecall.config import (
    VoiceCallConfig,
    missing_credentials,
    require_setup,
    validate_setup,
)
from voicecall.errors import SetupIncompleteError


def cfg(**data: Any) -> VoiceCallConfig:
    return VoiceCallConfig.model_validate(data)


def test_disabled_config_is_never_checked() -> None:
    c = cfg(enabled=False, provider="twilio")
    assert validate_setup(c) == [] and missing_credentials(c) == []


def test_provider_required() -> None:
    assert validate_setup(cfg()) == ["provider is required", "fromNumber is required"]


def test_mock_needs_nothing() -> None:
    assert validate_setup(cfg(provider="mock")) == []


def test_twilio_missing_everything() -> None:
    assert validate_setup(cfg(provider="twilio")) == [
        "fromNumber is required (or set TWILIO_FROM_NUMBER env)",
        "twilio.accountSid is required (or set TWILIO_ACCOUNT_SID env)",
        "twilio.authToken is required (or set TWILIO_AUTH_TOKEN env)",
    ]


def test_twilio_complete() -> None:
    c = cfg(provider="twilio", fromNumber="+15550001234",
            twilio={"accountSid": "AC1", "authToken": "t"})
    assert validate_setup(c) == []


def test_telnyx_missing_everything() -> None:
    assert validate_setup(cfg(provider="telnyx")) == [
        "fromNumber is required",
        "telnyx.apiKey is required (or set TELNYX_API_KEY env)",
        "telnyx.connectionId is required (or set TELNYX_CONNECTION_ID env)",
        "telnyx.publicKey is required (or set TELNYX_PUBLIC_KEY env)",
    ]


def test_telnyx_public_key_not_needed_when_skipping_verification() -> None:
    c = cfg(provider="telnyx", fromNumber="+15550001234", skipSignatureVerification=True,
            telnyx={"apiKey": "k", "connectionId": "c"})
    assert validate_setup(c) == []


def test_plivo_missing_credentials() -> None:
    assert missing_credentials(cfg(provider="plivo", fromNumber="+15550001234")) == [
        "plivo.authId is required (or set PLIVO_AUTH_ID env)",
        "plivo.authToken is required (or set PLIVO_AUTH_TOKEN env)",
    ]


def test_prefix_for_whole_file_messages() -> None:
    assert validate_setup(cfg(provider="plivo", fromNumber="+15550001234",
                              plivo={"authId": "MA1"}),
                          prefix="plugins.entries.voice-call.config") == [
        "plugins.entries.voice-call.config.plivo.authToken is required "
        "(or set PLIVO_AUTH_TOKEN env)"
    ]


def test_realtime_requires_inbound_policy() -> None:
    c = cfg(provider="mock", realtime={"enabled": True})
    assert validate_setup(c) == [
        'inboundPolicy must not be "disabled" when realtime.enabled is true'
    ]
    assert validate_setup(c.model_copy(update={"inbound_policy": "allowlist"})) == []


def test_realtime_and_streaming_together() -> None:
    # The loader refuses this outright; the rule still reports it for hand-built configs.
    c = cfg(provider="twilio", fromNumber="+15550001234", inboundPolicy="open",
            twilio={"accountSid": "AC1", "authToken": "t"}, realtime={"enabled": True})
    both = c.model_copy(update={"streaming": c.streaming.model_copy(update={"enabled": True})})
    assert validate_setup(both) == [
        "realtime.enabled and streaming.enabled cannot both be true"
    ]
    assert missing_credentials(both) == []


@pytest.mark.parametrize("provider", ["mock"])
def test_streaming_requires_a_media_stream_carrier(provider: str) -> None:
    problems = validate_setup(cfg(provider=provider, streaming={"enabled": True}))
    assert ('provider must be "twilio", "telnyx" or "plivo" when streaming.enabled is true'
            in problems)


def test_streaming_with_plivo_ok() -> None:
    c = cfg(provider="plivo", fromNumber="+15550001234", streaming={"enabled": True},
            plivo={"authId": "MA" + "1" * 18, "authToken": "t"})
    assert validate_setup(c) == []


def test_streaming_with_telnyx_ok() -> None:
    c = cfg(provider="telnyx", fromNumber="+15550001234", streaming={"enabled": True},
            telnyx={"apiKey": "k", "connectionId": "c", "publicKey": "pk"})
    assert validate_setup(c) == []


def test_streaming_with_twilio_ok() -> None:
    c = cfg(provider="twilio", fromNumber="+15550001234", streaming={"enabled": True},
            twilio={"accountSid": "AC1", "authToken": "t"})
    assert validate_setup(c) == []


@pytest.mark.parametrize(("provider", "allowed"),
                         [("twilio", True), ("telnyx", True), ("mock", True), ("plivo", False)])
def test_realtime_provider_support(provider: str, allowed: bool) -> None:
    problems = validate_setup(cfg(provider=provider, inboundPolicy="allowlist",
                                  realtime={"enabled": True}))
    msg = 'provider must be "twilio", "telnyx", or "mock" when realtime.enabled is true'
    assert (msg in problems) is not allowed


def test_require_setup_raises_setup_incomplete() -> None:
    with pytest.raises(SetupIncompleteError) as info:
        require_setup(cfg(provider="plivo"))
    assert info.value.missing[0] == "fromNumber is required"
    assert str(info.value).startswith("setup incomplete: fromNumber is required; plivo.authId")
    require_setup(cfg(provider="mock"))
