"""Plivo webhook signatures (V3 and V2), pure and dependency-free.

Mirrors ``plivo.utils.validate_v3_signature`` / ``validate_signature`` (plivo 4.63),
which the tests use as the oracle, quirks included (carriers.md §3.3):

* V3 signs a *built* URL, not the raw one: ``scheme://host[:port]/path`` (``;params``,
  query and fragment dropped by ``urlparse``), then ``?`` + the URL's query parsed,
  percent-decoded (``+`` is a space), sorted by key and by value and re-joined as
  ``k=v&k=v`` *without* re-encoding; for POST with form params, ``.`` (only when
  that query is non-empty) and the params sorted and concatenated as ``k1v1k2v2``.
  A POST without params is built like a GET. The signed string is
  ``built + "." + nonce``; the signature ``base64(HMAC-SHA256(auth_token, signed))``.
* The nonce's UTF-8 bytes become text one byte per character (the SDK's
  ``string_format``) before being signed as UTF-8 again. Plivo's nonces are digits,
  so it rarely matters, but agreeing with the SDK byte for byte is the point. (The
  SDK cannot verify URLs whose decoded query is not ASCII at all -- Python 3's
  ``parse_qs`` on bytes raises; we read such queries as UTF-8.)
* ``X-Plivo-Signature-V3`` may carry several signatures separated by ``,`` (one per
  auth token of the account); any one matching is enough. No whitespace trimming.
* V2 signs ``scheme://host[:port]/path`` + nonce only: no query, no body.

Comparisons are constant time and never stop at the first match.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from urllib.parse import parse_qs, urlparse, urlunparse

V3_HEADER = "X-Plivo-Signature-V3"
V3_MAIN_ACCOUNT_HEADER = "X-Plivo-Signature-Ma-V3"
V3_NONCE_HEADER = "X-Plivo-Signature-V3-Nonce"
V2_HEADER = "X-Plivo-Signature-V2"
V2_MAIN_ACCOUNT_HEADER = "X-Plivo-Signature-Ma-V2"
V2_NONCE_HEADER = "X-Plivo-Signature-V2-Nonce"

Params = Mapping[str, str | Sequence[str]]


def _latin1(raw: bytes) -> str:
    # The SDK's string_format(bytes): one character per byte.
    return raw.decode("latin-1")


def _values(value: str | Sequence[str]) -> list[str]:
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def _base(url: str) -> tuple[bytes, bytes]:
    """``scheme://netloc/path`` (as bytes) and the raw query, parsed like the SDK does."""
    parts = urlparse(url.encode("utf-8"))
    base = urlunparse((parts.scheme.decode("utf-8"), parts.netloc.decode("utf-8"),
                       parts.path.decode("utf-8"), "", "", "")).encode("utf-8")
    return base, parts.query


def _query_map(query: bytes) -> dict[str, list[str]]:
    # The SDK parses the query as bytes, which Python 3 only manages for ASCII results
    # (anything else raises inside parse_qs); decoding as UTF-8 gives the same text for
    # every query the SDK can handle, and the natural reading for the rest.
    return parse_qs(query.decode("utf-8", "replace"), keep_blank_values=True,
                    encoding="utf-8", errors="replace")


def _sorted_query(params: Params) -> str:
    return "&".join("&".join(f"{key}={value}" for value in sorted(_values(params[key])))
                    for key in sorted(params))


def _sorted_params(params: Params) -> str:
    return "".join(f"{key}{value}" for key in sorted(params)
                   for value in sorted(_values(params[key])))


def build_v3_url(url: str, params: Params | None = None, *, method: str = "POST") -> str:
    """The string V3 signs before ``.nonce``.

    A GET's ``params`` join the query (as in the SDK); any other method is built as
    a POST, where ``params`` is the form body. The method is case-insensitive (the
    SDK's argument validator upper-cases it).
    """
    base, query = _base(url)
    is_get = method.upper() == "GET"
    if is_get:
        # The SDK merges the URL's query into the caller's params (the query wins).
        merged: dict[str, str | Sequence[str]] = dict(params or {})
        merged.update(_query_map(query))
        q = _sorted_query(merged)
    else:
        q = _sorted_query(_query_map(query))
    has_params = not is_get and bool(params)
    out = base.decode("utf-8")
    if q or has_params:
        out += "?" + q
    if q and has_params:
        out += "."
    if has_params:
        assert params is not None
        out += _sorted_params(params)
    return out


def _b64_hmac(key: str, msg: bytes) -> str:
    return base64.b64encode(hmac.new(key.encode("utf-8"), msg, hashlib.sha256).digest()
                            ).decode("ascii")


def compute_v3(auth_token: str, url: str, nonce: str, params: Params | None = None, *,
               method: str = "POST") -> str:
    """The ``X-Plivo-Signature-V3`` value for one token (what Plivo sends, or one of them)."""
    signed = build_v3_url(url, params, method=method) + "." + _latin1(nonce.encode("utf-8"))
    return _b64_hmac(auth_token, signed.encode("utf-8"))


def compute_v2(auth_token: str, url: str, nonce: str) -> str:
    """The ``X-Plivo-Signature-V2`` value: URL without query, then the nonce."""
    base, _ = _base(url)
    return _b64_hmac(auth_token, base + nonce.encode("utf-8"))


def _match(expected: Sequence[str], computed: Sequence[str]) -> str | None:
    """The first given signature equal to any computed one; every pair is compared."""
    found: str | None = None
    for given in expected:
        g = given.encode("utf-8")
        hit = False
        for candidate in computed:
            hit |= hmac.compare_digest(candidate.encode("ascii"), g)
        if hit and found is None:
            found = given
    return found


def verify_v3(auth_token: str, url: str, nonce: str, signature: str,
              params: Params | None = None, *, method: str = "POST",
              extra_urls: Sequence[str] = ()) -> str | None:
    """The matching signature from ``X-Plivo-Signature-V3`` (``None``: no match). Never raises.

    ``extra_urls`` are further candidate public URLs (port variants); each costs one
    more HMAC whether or not an earlier one matched.
    """
    try:
        if not auth_token or not nonce or not signature:
            return None
        computed = [compute_v3(auth_token, u, nonce, params, method=method)
                    for u in dict.fromkeys((url, *extra_urls))]
        return _match(signature.split(","), computed)
    except (ValueError, TypeError, UnicodeError, AttributeError):
        return None


def verify_v2(auth_token: str, url: str, nonce: str, signature: str, *,
              extra_urls: Sequence[str] = ()) -> str | None:
    """``signature`` if it is the V2 signature of ``url`` + ``nonce`` (exact, as the SDK)."""
    try:
        if not auth_token or not nonce or not signature:
            return None
        computed = [compute_v2(auth_token, u, nonce) for u in dict.fromkeys((url, *extra_urls))]
        return _match([signature], computed)
    except (ValueError, TypeError, UnicodeError, AttributeError):
        return None


def request_key(version: str, nonce: str, signature: str) -> str:
    """Replay-cache key: the nonce and the signature that matched.

    The signature covers the URL, the body (V3) and the nonce, so these two
    identify the request; the *matched* signature (not the whole header) is used,
    so reordering or padding a multi-signature header does not make a new key.
    """
    digest = hashlib.sha256(f"{version}\n{nonce}\n{signature}".encode()).hexdigest()
    return f"plivo:{version}:{digest}"
