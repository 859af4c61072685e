"""Twilio webhook signatures (``X-Twilio-Signature``), pure and dependency-free.

Mirrors ``twilio.request_validator.RequestValidator`` (twilio 9.13), which the tests
use as the oracle:

* signed string = URL exactly as requested (query verbatim) + for each param name in
  sorted order, its sorted, de-duplicated values appended as ``name + value``;
* ``base64(HMAC(key, signed string))`` with SHA-1 (Auth Token) or SHA-256 (SharedKey,
  announced by ``X-Twilio-Webhooks-Signature-Settings``);
* a request is valid if the URL with the port removed *or* with the default port added
  matches, because Twilio's signers disagree about ports;
* JSON webhooks carry ``bodySHA256`` in the query: the body is checked by hash and the
  URL alone is signed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from typing import Literal
from urllib.parse import parse_qs, quote, urlparse, urlsplit, urlunparse

from voicecall.errors import SignatureError

Algorithm = Literal["sha1", "sha256"]
Params = Mapping[str, str | Sequence[str]]

SIGNATURE_HEADER = "X-Twilio-Signature"
SIGNATURE_SETTINGS_HEADER = "X-Twilio-Webhooks-Signature-Settings"

_HASHES = {"sha1": hashlib.sha1, "sha256": hashlib.sha256}


def _values(value: str | Sequence[str]) -> list[str]:
    # A bare str is one value, not a sequence of characters.
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def _signed_string(url: str, params: Params | None) -> str:
    parts = [url]
    if params:
        for name in sorted(params):
            for value in sorted(set(_values(params[name]))):
                parts.append(name + value)
    return "".join(parts)


def compute_signature(
    auth_token: str,
    url: str,
    params: Params | None = None,
    *,
    algorithm: Algorithm = "sha1",
) -> str:
    """The ``X-Twilio-Signature`` value Twilio would send for ``url`` + form ``params``."""
    mac = hmac.new(auth_token.encode("utf-8"), _signed_string(url, params).encode("utf-8"),
                   _HASHES[algorithm])
    return base64.b64encode(mac.digest()).decode("ascii")


def _port_variants(url: str) -> list[str]:
    """The URL as given plus the SDK's two forms: port removed, default port added.

    A non-default port is stripped by the first and kept by the second, exactly as the
    SDK's ``remove_port``/``add_port`` do, so "signed without port, received with
    :8443" passes but "signed with :8443, checked without" does not. Unlike the SDK we
    keep bracketed IPv6 hosts intact, and we also try the URL verbatim because
    ``urlparse().geturl()`` drops an empty ``?``.
    """
    parts = urlparse(url)
    port = parts.port  # ValueError on a garbage port; verify_signature catches it
    userinfo, at, hostport = parts.netloc.rpartition("@")
    prefix = userinfo + at
    if hostport.startswith("["):
        host = hostport[: hostport.index("]") + 1]
    else:
        host = hostport.split(":", 1)[0]
    without = urlunparse(parts._replace(netloc=prefix + host))
    if port:
        with_port = parts.geturl()
    else:
        default = 443 if parts.scheme in ("https", "wss") else 80
        with_port = urlunparse(parts._replace(netloc=f"{prefix}{host}:{default}"))
    return [without, with_port, url]


def _body_sha256(url: str) -> str | None:
    query = urlsplit(url).query
    if "bodySHA256" not in query:
        return None
    values = parse_qs(query, keep_blank_values=True).get("bodySHA256")
    return values[0] if values else None


def verify_signature(
    auth_token: str,
    url: str,
    params: Params | None,
    signature: str,
    *,
    raw_body: bytes | None = None,
    extra_urls: Sequence[str] = (),
    algorithm: Algorithm = "sha1",
) -> bool:
    """True if ``signature`` is Twilio's for this request. Never raises.

    ``extra_urls`` are further candidate public URLs (e.g. with the port of
    ``publicUrl`` or of the ``Host`` header); each gets the same two port variants.
    When the URL carries ``bodySHA256`` the raw body must hash to it; a missing
    ``raw_body`` then fails (the SDK silently skips the check for parsed params --
    we refuse to).
    """
    try:
        if not signature or not auth_token or algorithm not in _HASHES:
            return False
        expected = signature.strip().encode("utf-8")
        candidates: list[str] = []
        for candidate in (url, *extra_urls):
            for variant in _port_variants(candidate):
                if variant not in candidates:
                    candidates.append(variant)
        ok = False
        for candidate in candidates:
            body_hash = _body_sha256(candidate)
            use_params: Params | None = params
            if body_hash is not None:
                if raw_body is None:
                    continue
                actual = hashlib.sha256(raw_body).hexdigest()
                if not hmac.compare_digest(actual.encode(), body_hash.encode("utf-8")):
                    continue
                use_params = None
            computed = compute_signature(auth_token, candidate, use_params,
                                         algorithm=algorithm).encode("ascii")
            # No early exit: every candidate costs the same whether or not one matched.
            ok |= hmac.compare_digest(computed, expected)
        return ok
    except (ValueError, TypeError, UnicodeError, AttributeError):
        return False


def signature_algorithm(header_value: str | None) -> Algorithm:
    """Algorithm named by ``X-Twilio-Webhooks-Signature-Settings`` (absent -> SHA-1).

    Twilio sends ``key=<sharedKeyId>,algorithm=HMAC_SHA256``. An algorithm we do not
    know raises ``SignatureError`` so the request is rejected (401) instead of being
    checked with the wrong hash (the SDK logs and fails validation the same way).
    """
    for part in (header_value or "").split(","):
        name, sep, value = part.partition("=")
        if sep and name.strip() == "algorithm" and value.strip():
            algo = value.strip().upper()
            if algo == "HMAC_SHA1":
                return "sha1"
            if algo == "HMAC_SHA256":
                return "sha256"
            raise SignatureError(f"unsupported Twilio signature algorithm: {value.strip()!r}")
    return "sha1"


def request_key(url: str, params: Mapping[str, Sequence[str]], signature: str) -> str:
    """Replay-cache key for a signed webhook.

    Built from what the signature covers (URL + params) plus the signature, and
    nothing else, so a retry with a fresh ``X-Twilio-Idempotency-Token`` header
    still maps to the same key. Names and values are percent-encoded so that
    ``a="1&b=2"`` and ``a="1", b="2"`` cannot collide.
    """
    canonical = "&".join(
        f"{quote(name, safe='')}={quote(value, safe='')}"
        for name in sorted(params)
        for value in sorted(_values(params[name]))
    )
    digest = hashlib.sha256(f"{url}\n{canonical}\n{signature}".encode()).hexdigest()
    return "twilio:req:" + digest
