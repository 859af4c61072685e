"""``voicecall verify-webhook``: run a captured request through the gateway's own checks."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from voicecall.errors import ConfigError
from voicecall.gateway.security import RequestView

if TYPE_CHECKING:
    from voicecall.carriers.base import Verification

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
    if provider == "telnyx":
        return _telnyx(capture)
    if provider == "twilio":
        from voicecall.carriers.twilio.carrier import verify_request
    else:
        from voicecall.carriers.plivo.carrier import verify_request
    return _url_signed(capture, verify_request)


def _view(capture: Mapping[str, Any]) -> tuple[RequestView, str]:
    url = str(capture["url"])
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https", "ws", "wss") or not parts.netloc:
        raise ConfigError("url must be the absolute URL the carrier requested", path="url")
    headers = {str(k).lower(): str(v) for k, v in capture["headers"].items()}
    headers.setdefault("host", parts.netloc)
    view = RequestView(str(capture["method"]).upper(), parts.path or "/", parts.query,
                       headers, None, parts.scheme)
    return view, url


def _secret(capture: Mapping[str, Any]) -> str:
    secret = capture.get("secret_or_public_key")
    if not isinstance(secret, str) or not secret:
        raise ConfigError("secret_or_public_key is required", path="secret_or_public_key")
    return secret


def _url_signed(capture: Mapping[str, Any],
                verify_request: Callable[..., Verification]) -> tuple[bool, str]:
    """Twilio and Plivo: ``verify_request(view, body, auth_token, url, *, public_url)``."""
    view, url = _view(capture)
    verdict = verify_request(view, capture["body"].encode(), _secret(capture), url,
                             public_url=url)
    return verdict.ok, verdict.reason or "signature matches"


def _telnyx(capture: Mapping[str, Any]) -> tuple[bool, str]:
    """Ed25519 over ``timestamp|body``; ``now`` (Unix seconds) in the capture pins the clock."""
    import time

    from voicecall.carriers.telnyx.carrier import verify_request
    from voicecall.carriers.telnyx.signature import load_public_key
    from voicecall.errors import SignatureError

    view, _ = _view(capture)
    try:
        key = load_public_key(_secret(capture))
    except SignatureError as exc:
        raise ConfigError(str(exc), path="secret_or_public_key") from None
    now = capture.get("now", None)
    if now is None:
        now = time.time()
    elif isinstance(now, bool) or not isinstance(now, int | float):
        raise ConfigError("now must be Unix seconds", path="now")
    verdict = verify_request(view, capture["body"].encode(), key, now=float(now))
    return verdict.ok, verdict.reason or "signature matches"
