"""``voicecall verify-webhook``: run a captured request through the gateway's own checks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from voicecall.errors import ConfigError

PROVIDERS = ("twilio", "telnyx", "plivo", "mock")
_FIELDS = ("provider", "method", "url", "headers", "body")


def verify_capture(capture: Any) -> tuple[bool, str]:
    """``(valid, reason)`` for a capture ``{provider, method, url, headers, body, ...}``."""
    if not isinstance(capture, Mapping):
        raise ConfigError("capture must be a JSON object")
    missing = [k for k in _FIELDS if k not in capture]
    if missing:
        raise ConfigError(f"capture is missing: {', '.join(missing)}")
    provider = capture["provider"]
    if provider not in PROVIDERS:
        raise ConfigError("unknown provider", path="provider", allowed=PROVIDERS)
    if not isinstance(capture["headers"], Mapping) or not isinstance(capture["body"], str):
        raise ConfigError("headers must be an object and body the raw body text")
    if provider == "mock":
        return True, "mock webhooks are unsigned"
    return False, f"{provider} signature verification is not available in this build"
