"""``voicecall verify-webhook`` on Plivo captures runs the gateway's own check."""

from __future__ import annotations

from typing import Any

import pytest
from plivo.utils.signature_v3 import validate_v3_signature  # type: ignore[import-untyped]

from voicecall.carriers.plivo.signature import compute_v2, compute_v3
from voicecall.errors import ConfigError
from voicecall.webhook_verify import verify_capture

TOKEN = "capture-token"
URL = "https://voice.example.com/voice/webhook?flow=answer&callId=abc"
BODY = "CallUUID=u1&CallStatus=in-progress&Digits=&From=15550001111"
PARAMS = {"CallUUID": "u1", "CallStatus": "in-progress", "Digits": "", "From": "15550001111"}


def capture(headers: dict[str, str], **over: Any) -> dict[str, Any]:
    return {"provider": "plivo", "method": "POST", "url": URL, "body": BODY,
            "headers": {"Content-Type": "application/x-www-form-urlencoded", **headers},
            "secret_or_public_key": TOKEN, **over}


def test_valid_v3_capture_and_the_sdk_agrees() -> None:
    sig = compute_v3(TOKEN, URL, "31337", PARAMS)
    assert validate_v3_signature("POST", URL, "31337", TOKEN, sig, params=PARAMS)
    assert verify_capture(capture({"X-Plivo-Signature-V3": sig,
                                   "X-Plivo-Signature-V3-Nonce": "31337"})) == (
        True, "signature matches")


def test_tampered_body_or_wrong_token_is_invalid() -> None:
    sig = compute_v3(TOKEN, URL, "1", PARAMS)
    headers = {"X-Plivo-Signature-V3": sig, "X-Plivo-Signature-V3-Nonce": "1"}
    ok, reason = verify_capture(capture(headers, body=BODY.replace("u1", "u2")))
    assert not ok and reason == f"Invalid signature for URL: {URL}"
    assert verify_capture(capture(headers, secret_or_public_key="other"))[0] is False


def test_v2_capture_is_checked_when_v3_is_absent() -> None:
    v2 = compute_v2(TOKEN, URL, "9")
    assert verify_capture(capture({"X-Plivo-Signature-V2": v2,
                                   "X-Plivo-Signature-V2-Nonce": "9"}))[0] is True
    assert verify_capture(capture({"X-Plivo-Signature-V2": v2,
                                   "X-Plivo-Signature-V2-Nonce": "8"}))[0] is False


def test_unsigned_capture_says_what_is_missing() -> None:
    assert verify_capture(capture({})) == (False, "missing X-Plivo-Signature-V3 header")


def test_secret_is_required() -> None:
    with pytest.raises(ConfigError, match="secret_or_public_key"):
        verify_capture(capture({}, secret_or_public_key=""))
