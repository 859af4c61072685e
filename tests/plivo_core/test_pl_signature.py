"""Plivo signatures agree with the official SDK (plivo 4.63) on generated valid and tampered cases."""

from __future__ import annotations

import random
import string
from urllib.parse import quote

import pytest
from plivo.utils import validate_signature  # type: ignore[import-untyped]
from plivo.utils.signature_v3 import validate_v3_signature  # type: ignore[import-untyped]

from voicecall.carriers.plivo.carrier import verify_request
from voicecall.carriers.plivo.signature import (
    build_v3_url,
    compute_v2,
    compute_v3,
    request_key,
    verify_v2,
    verify_v3,
)
from voicecall.gateway.security import RequestView

TOKEN = "MzQ4NjY0NTQ3ZTk0YTFmNmE0ODQxNDQ0NDQ0"
OTHER = "a-different-auth-token"

# ASCII only where the SDK can cope (it raises on non-ASCII decoded queries); values
# still carry the characters that matter: + & = % space and quotes.
ASCII = string.ascii_letters + string.digits + " -_.~+&=%/?#'\"<>;:,"
BODY_CHARS = ASCII + "éü漢字😀\u00a0"


def rand_text(rng: random.Random, alphabet: str, max_len: int = 10) -> str:
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, max_len)))


def rand_url(rng: random.Random) -> str:
    scheme = rng.choice(["https", "http"])
    host = rng.choice(["voice.example.com", "example.ngrok.app", "203.0.113.7",
                       "voice.example.com:8443", "[2001:db8::1]:3334"])
    path = rng.choice(["/voice/webhook", "/", "/plivo/answer/", "/p%20ath/x", "/a;b=1/c"])
    items = [f"{quote(rand_text(rng, ASCII, 5) or 'q', safe='')}="
             f"{quote(rand_text(rng, ASCII, 8), safe='')}" for _ in range(rng.randint(0, 3))]
    items += rng.choice([[], ["callId=abc-123"], ["flow=answer", "callId=c1"],
                         ["b=2", "a=1", "a=0"], ["x=a+b", "y=%2B1"], ["empty="]])
    rng.shuffle(items)
    return f"{scheme}://{host}{path}" + ("?" + "&".join(items) if items else "")


def rand_params(rng: random.Random) -> dict[str, list[str]]:
    params: dict[str, list[str]] = {}
    for _ in range(rng.randint(0, 7)):
        name = rng.choice(["CallUUID", "From", "To", "Digits", "Speech", "CallStatus", "a",
                           "B", rand_text(rng, string.ascii_letters, 6) or "k"])
        params.setdefault(name, []).append(rand_text(rng, BODY_CHARS))
    return params


def sdk_params(params: dict[str, list[str]]) -> dict[str, str | list[str]]:
    # What a form parser hands the SDK: a str per single value, a list for repeats.
    return {k: v[0] if len(v) == 1 else list(v) for k, v in params.items()}


def rand_nonce(rng: random.Random) -> str:
    return rng.choice(["".join(rng.choice(string.digits) for _ in range(20)),
                       rand_text(rng, string.ascii_letters + string.digits, 16) or "n"])


CASES = list(range(300))


@pytest.mark.parametrize("seed", CASES)
def test_v3_agrees_with_sdk(seed: int) -> None:
    rng = random.Random(seed)
    url, params, nonce = rand_url(rng), rand_params(rng), rand_nonce(rng)
    method = rng.choice(["POST", "POST", "GET", "post", "get"])
    signed = None if method.upper() == "GET" else params
    sig = compute_v3(TOKEN, url, nonce, signed, method=method)
    # The SDK accepts our signature ...
    assert validate_v3_signature(method, url, nonce, TOKEN, sig,
                                 params=sdk_params(params) if signed else None) is True
    # ... and we accept it, reporting which one matched.
    assert verify_v3(TOKEN, url, nonce, sig, signed, method=method) == sig


@pytest.mark.parametrize("seed", CASES[:150])
def test_tampered_v3_rejected_by_both(seed: int) -> None:
    rng = random.Random(seed)
    url, params, nonce = rand_url(rng), rand_params(rng), rand_nonce(rng)
    params.setdefault("CallUUID", ["1f0c0b1e-0000-4000-8000-000000000001"])
    sig = compute_v3(TOKEN, url, nonce, params)
    tampered_params = {k: list(v) for k, v in params.items()}
    tampered_params["CallUUID"] = [tampered_params["CallUUID"][0] + "x"]
    cases = [
        (url, nonce, tampered_params, sig),                                  # body changed
        (url.replace("://", "://evil.", 1), nonce, params, sig),             # host changed
        (url, nonce + "1", params, sig),                                     # nonce changed
        (url, nonce, params, compute_v3(OTHER, url, nonce, params)),         # wrong token
        (url + ("&" if "?" in url else "?") + "injected=1", nonce, params, sig),  # query added
    ]
    for u, n, p, s in cases:
        assert validate_v3_signature("POST", u, n, TOKEN, s, params=sdk_params(p)) is False
        assert verify_v3(TOKEN, u, n, s, p) is None


def test_several_comma_separated_signatures_any_one_matches() -> None:
    url = "https://voice.example.com/voice/webhook?callId=c1&flow=answer"
    params = {"CallUUID": ["u1"], "CallStatus": ["in-progress"]}
    good = compute_v3(TOKEN, url, "123", params)
    stale = compute_v3(OTHER, url, "123", params)
    for header in (f"{stale},{good}", f"{good},{stale}", f"{stale},{good},{stale}"):
        assert validate_v3_signature("POST", url, "123", TOKEN, header,
                                     params=sdk_params(params)) is True
        assert verify_v3(TOKEN, url, "123", header, params) == good
    # ", " (with a space) is not Plivo's separator: neither side trims.
    spaced = f"{stale}, {good}"
    assert validate_v3_signature("POST", url, "123", TOKEN, spaced,
                                 params=sdk_params(params)) is False
    assert verify_v3(TOKEN, url, "123", spaced, params) is None
    assert verify_v3(TOKEN, url, "123", f"{stale},{stale}", params) is None


def test_query_order_and_encoding_do_not_matter() -> None:
    # V3 signs the query parsed, decoded and sorted: reordered or re-encoded queries
    # are the same request (unlike Twilio's verbatim URL).
    params = {"CallUUID": ["u1"]}
    a = "https://voice.example.com/voice/webhook?flow=answer&callId=c1&x=a+b"
    b = "https://voice.example.com/voice/webhook?x=a%20b&callId=c1&flow=answer"
    sig = compute_v3(TOKEN, a, "9", params)
    assert compute_v3(TOKEN, b, "9", params) == sig
    assert validate_v3_signature("POST", b, "9", TOKEN, sig, params=sdk_params(params)) is True
    assert verify_v3(TOKEN, b, "9", sig, params) == sig


@pytest.mark.parametrize(("url", "params", "method", "built"), [
    ("https://h/p", {"b": ["2"], "a": ["1"]}, "POST", "https://h/p?a1b2"),
    ("https://h/p?z=1&y=2", {"b": ["2"]}, "POST", "https://h/p?y=2&z=1.b2"),
    ("https://h/p?z=1&y=2", {}, "POST", "https://h/p?y=2&z=1"),
    ("https://h/p", {}, "POST", "https://h/p"),
    ("https://h/p?z=1&y=2", None, "GET", "https://h/p?y=2&z=1"),
    ("https://h:8443/p;x=1?q=a+b#frag", {"Digits": [""]}, "POST", "https://h:8443/p?q=a b.Digits"),
    ("https://h/p", {"k": ["b", "a"]}, "POST", "https://h/p?kakb"),
])
def test_built_url_shapes(url: str, params: dict[str, list[str]] | None, method: str,
                          built: str) -> None:
    assert build_v3_url(url, params, method=method) == built


def test_get_params_join_the_query_like_the_sdk() -> None:
    url = "https://h/p?b=2"
    sig = compute_v3(TOKEN, url, "1", {"a": "1"}, method="GET")
    assert validate_v3_signature("GET", url, "1", TOKEN, sig, params={"a": "1"}) is True


def test_non_ascii_query_is_read_as_utf8() -> None:
    # The SDK raises on such URLs (Python 3's parse_qs on bytes); we read UTF-8.
    url = "https://h/p?name=%C3%A9"
    assert build_v3_url(url, {}, method="POST") == "https://h/p?name=é"
    with pytest.raises(UnicodeError):
        validate_v3_signature("POST", url, "1", TOKEN, "x", params={})


@pytest.mark.parametrize("seed", CASES[:120])
def test_v2_agrees_with_sdk(seed: int) -> None:
    rng = random.Random(seed)
    url, nonce = rand_url(rng), rand_nonce(rng)
    sig = compute_v2(TOKEN, url, nonce)
    assert validate_signature(url, nonce, sig, TOKEN) is True
    assert verify_v2(TOKEN, url, nonce, sig) == sig
    # V2 covers neither the query nor the body; it does cover the path and nonce.
    moved = url.replace("://", "://x", 1)
    assert validate_signature(moved, nonce, sig, TOKEN) is False
    assert verify_v2(TOKEN, moved, nonce, sig) is None
    assert verify_v2(TOKEN, url, nonce + "0", sig) is None


@pytest.mark.parametrize("bad", ["", "not-base64!", "A" * 44, "\u00e9\u00e9"])
def test_garbage_signatures_never_raise(bad: str) -> None:
    assert verify_v3(TOKEN, "https://h/p", "1", bad, {"a": ["1"]}) is None
    assert verify_v2(TOKEN, "https://h/p", "1", bad) is None


def test_empty_token_or_nonce_never_validates() -> None:
    sig = compute_v3("", "https://h/p", "1", {})
    assert verify_v3("", "https://h/p", "1", sig, {}) is None
    assert verify_v3(TOKEN, "https://h/p", "", compute_v3(TOKEN, "https://h/p", "", {}), {}) \
        is None


def test_request_key_is_nonce_and_matched_signature() -> None:
    k = request_key("v3", "123", "sig")
    assert k.startswith("plivo:v3:") and k == request_key("v3", "123", "sig")
    assert k != request_key("v3", "124", "sig")
    assert k != request_key("v3", "123", "sig2")
    assert k != request_key("v2", "123", "sig")


def _view(url: str, headers: dict[str, str], method: str = "POST") -> RequestView:
    path, _, query = url.partition("://")[2].partition("/")[2].partition("?")
    hdrs = {"host": "voice.example.com",
            "content-type": "application/x-www-form-urlencoded"}
    hdrs.update({k.lower(): v for k, v in headers.items()})
    return RequestView(method, "/" + path, query, hdrs, "127.0.0.1", "http")


URL = "https://voice.example.com/voice/webhook?callId=c1&flow=answer"
BODY = b"CallUUID=u1&CallStatus=in-progress&Direction=outbound"
PARAMS = {"CallUUID": ["u1"], "CallStatus": ["in-progress"], "Direction": ["outbound"]}


def test_verify_request_v3_and_key_ignores_header_padding() -> None:
    sig = compute_v3(TOKEN, URL, "555", PARAMS)
    ok = verify_request(_view(URL, {"X-Plivo-Signature-V3": sig,
                                    "X-Plivo-Signature-V3-Nonce": "555"}),
                        BODY, TOKEN, URL, public_url=URL)
    assert ok.ok and ok.request_key == request_key("v3", "555", sig)
    padded = verify_request(_view(URL, {"X-Plivo-Signature-V3": f"{compute_v3(OTHER, URL, '555', PARAMS)},{sig}",
                                        "X-Plivo-Signature-V3-Nonce": "555"}),
                            BODY, TOKEN, URL, public_url=URL)
    assert padded.ok and padded.request_key == ok.request_key


def test_verify_request_v2_only_when_v3_absent() -> None:
    v2 = compute_v2(TOKEN, URL, "777")
    only_v2 = verify_request(_view(URL, {"X-Plivo-Signature-V2": v2,
                                         "X-Plivo-Signature-V2-Nonce": "777"}),
                             BODY, TOKEN, URL, public_url=URL)
    assert only_v2.ok and (only_v2.request_key or "").startswith("plivo:v2:")
    # A wrong V3 is not rescued by a valid V2.
    both = verify_request(_view(URL, {"X-Plivo-Signature-V3": "bm9wZQ==",
                                      "X-Plivo-Signature-V3-Nonce": "777",
                                      "X-Plivo-Signature-V2": v2,
                                      "X-Plivo-Signature-V2-Nonce": "777"}),
                          BODY, TOKEN, URL, public_url=URL)
    assert not both.ok and "Invalid signature" in both.reason


@pytest.mark.parametrize(("headers", "reason"), [
    ({}, "missing X-Plivo-Signature-V3"),
    ({"X-Plivo-Signature-V3": "x"}, "missing X-Plivo-Signature-V3-Nonce"),
    ({"X-Plivo-Signature-V3-Nonce": "1"}, "missing X-Plivo-Signature-V3 header"),
])
def test_verify_request_missing_headers(headers: dict[str, str], reason: str) -> None:
    verdict = verify_request(_view(URL, headers), BODY, TOKEN, URL, public_url=URL)
    assert not verdict.ok and reason in verdict.reason


def test_verify_request_bad_body_is_refused_not_raised() -> None:
    sig = compute_v3(TOKEN, URL, "1", PARAMS)
    verdict = verify_request(_view(URL, {"X-Plivo-Signature-V3": sig,
                                         "X-Plivo-Signature-V3-Nonce": "1"}),
                             b"\xff\xfe", TOKEN, URL, public_url=URL)
    assert not verdict.ok and "UTF-8" in verdict.reason


def test_verify_request_port_variants() -> None:
    # Plivo signs the URL exactly as configured; a :443 in publicUrl must still verify
    # requests whose Host has no port, and the reverse.
    with_port = "https://voice.example.com:443/voice/webhook?callId=c1"
    plain = "https://voice.example.com/voice/webhook?callId=c1"
    sig = compute_v3(TOKEN, with_port, "2", PARAMS)
    verdict = verify_request(_view(plain, {"X-Plivo-Signature-V3": sig,
                                           "X-Plivo-Signature-V3-Nonce": "2"}),
                             BODY, TOKEN, plain, public_url=with_port)
    assert verdict.ok
    sig2 = compute_v3(TOKEN, plain, "3", PARAMS)
    verdict2 = verify_request(_view(with_port, {"X-Plivo-Signature-V3": sig2,
                                                "X-Plivo-Signature-V3-Nonce": "3"}),
                              BODY, TOKEN, with_port, public_url=with_port)
    assert verdict2.ok
