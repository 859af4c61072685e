"""Gateway -> carrier REST, the carrier-neutral part: HTTP Basic credentials."""

from __future__ import annotations

import base64
import binascii
import hmac

from starlette.requests import Request


def basic_auth_matches(request: Request, user: str, password: str) -> bool:
    """Whether ``request`` carries HTTP Basic credentials equal to ``user``/``password``."""
    scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        got_user, _, got_password = (
            base64.b64decode(encoded, validate=True).decode().partition(":"))
    except (binascii.Error, UnicodeDecodeError):
        return False
    return (hmac.compare_digest(got_user.encode(), user.encode())
            and hmac.compare_digest(got_password.encode(), password.encode()))
