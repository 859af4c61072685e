"""Signatures agree with the official SDK (twilio 9.13 RequestValidator) on generated cases."""

from __future__ import annotations

import hashlib
import random
import string
from urllib.parse import quote

import pytest
from twilio.request_validator import RequestValidator, get_signature_algorithm  # type: ignore[import-untyped]

from voicecall.carriers.twilio.signature import (
    compute_signature,
    request_key,
    signature_algorithm,
    verify_signature,
)
from voicecall.errors import SignatureError

TOKEN = "12345678901234567890123456789012"


class MultiParams(dict[str, list[str]]):
    """What a form parser hands the SDK for repeated keys (Django-style ``getlist``)."""

    def getlist(self, name: str) -> list[str]:
        return self[name]


def sdk_params(params: dict[str, list[str]]) -> MultiParams:
    return MultiParams({k: list(v) for k, v in params.items()})


ALPHABET = string.ascii_letters + string.digits + " -_.~+&=%/?#'\"<>" + "éü漢字😀\u00a0"


def rand_text(rng: random.Random, max_len: int = 12) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, max_len)))


def rand_params(rng: random.Random) -> dict[str, list[str]]:
    params: dict[str, list[str]] = {}
    for _ in range(rng.randint(0, 8)):
        name = rng.choice(["CallSid", "From", "To", "Digits", "SpeechResult", "a", "A", "b",
                           "Zeta", "émoji😀", rand_text(rng, 6) or "k"])
        values = [rand_text(rng) for _ in range(rng.choice([1, 1, 1, 2, 3]))]
        if rng.random() < 0.2:
            values.append(values[0])  # duplicate value: the SDK de-duplicates
        params.setdefault(name, []).extend(values)
    return params


def rand_url(rng: random.Random) -> str:
    scheme = rng.choice(["https", "http"])
    host = rng.choice(["voice.example.com", "example.ngrok.app", "203.0.113.7", "a-b.example"])
    port = rng.choice(["", "", ":443", ":80", ":8443", ":3334"])
    path = rng.choice(["/voice/webhook", "/", "/twilio/status", "/p%20ath/x"])
    query_items = [f"{quote(rand_text(rng, 5) or 'q')}={quote(rand_text(rng, 8))}"
                   for _ in range(rng.randint(0, 3))]
    query_items += rng.choice([[], ["callId=abc-123"], ["turnToken=t1", "type=status"],
                               ["b=2", "a=1"], ["x=a+b", "y=%2B1"]])
    rng.shuffle(query_items)
    query = ("?" + "&".join(query_items)) if query_items else ""
    return f"{scheme}://{host}{port}{path}{query}"


CASES = list(range(400))


@pytest.mark.parametrize("seed", CASES)
def test_compute_and_verify_agree_with_sdk(seed: int) -> None:
    rng = random.Random(seed)
    url = rand_url(rng)
    params = rand_params(rng)
    sdk = RequestValidator(TOKEN)
    expected = sdk.compute_signature(url, sdk_params(params))
    assert compute_signature(TOKEN, url, params) == expected

    assert verify_signature(TOKEN, url, params, expected) is True
    assert sdk.validate(url, sdk_params(params), expected) is True

    # Tampering with anything signed makes both reject.
    tampered = dict(params)
    tampered["Injected"] = ["1"]
    assert verify_signature(TOKEN, url, tampered, expected) is False
    assert sdk.validate(url, sdk_params(tampered), expected) is False

    other_url = url.replace("://", "://x", 1)
    assert verify_signature(TOKEN, other_url, params, expected) is False
    assert sdk.validate(other_url, sdk_params(params), expected) is False

    bad_sig = ("A" if expected[0] != "A" else "B") + expected[1:]
    assert verify_signature(TOKEN, url, params, bad_sig) is False
    assert sdk.validate(url, sdk_params(params), bad_sig) is False

    assert verify_signature("wrong-token", url, params, expected) is False


@pytest.mark.parametrize("seed", range(100))
def test_changed_param_value_rejected_by_both(seed: int) -> None:
    rng = random.Random(10_000 + seed)
    url = rand_url(rng)
    params = rand_params(rng) or {"CallSid": ["CA1"]}
    sig = compute_signature(TOKEN, url, params)
    name = rng.choice(sorted(params))
    changed = {**params, name: [v + "x" for v in params[name]]}
    sdk = RequestValidator(TOKEN)
    assert verify_signature(TOKEN, url, changed, sig) is False
    assert sdk.validate(url, sdk_params(changed), sig) is False


def test_plain_str_values_same_as_single_item_lists() -> None:
    url = "https://voice.example.com/voice/webhook?callId=1"
    flat = {"CallSid": "CA123", "From": "+15550001111", "Digits": ""}
    listed = {k: [v] for k, v in flat.items()}
    sig = RequestValidator(TOKEN).compute_signature(url, flat)
    assert compute_signature(TOKEN, url, flat) == sig
    assert compute_signature(TOKEN, url, listed) == sig


def test_repeated_values_sorted_and_deduplicated() -> None:
    url = "https://voice.example.com/hook"
    params = {"StatusCallbackEvent": ["ringing", "answered", "ringing", "initiated"]}
    expected = RequestValidator(TOKEN).compute_signature(url, sdk_params(params))
    assert compute_signature(TOKEN, url, params) == expected
    # Order of repeated values does not matter, as in the SDK.
    shuffled = {"StatusCallbackEvent": ["initiated", "ringing", "answered"]}
    assert compute_signature(TOKEN, url, shuffled) == expected


def test_empty_params_and_none_sign_url_alone() -> None:
    url = "wss://voice.example.com/voice/stream"
    sig = RequestValidator(TOKEN).compute_signature(url, {})
    assert compute_signature(TOKEN, url) == sig
    assert compute_signature(TOKEN, url, {}) == sig
    assert verify_signature(TOKEN, url, None, sig)


def test_query_string_verbatim_reordered_query_rejected() -> None:
    signed = "https://voice.example.com/voice/webhook?b=2&a=1"
    reordered = "https://voice.example.com/voice/webhook?a=1&b=2"
    params = {"CallSid": ["CA1"]}
    sig = compute_signature(TOKEN, signed, params)
    sdk = RequestValidator(TOKEN)
    assert verify_signature(TOKEN, signed, params, sig)
    assert verify_signature(TOKEN, reordered, params, sig) is False
    assert sdk.validate(reordered, sdk_params(params), sig) is False
    # Percent-encoding is part of the signed string too.
    reencoded = "https://voice.example.com/voice/webhook?b=%32&a=1"
    assert verify_signature(TOKEN, reencoded, params, sig) is False


# carriers.md vectors 3a-3e: which port forms validate.
PORT_CASES = [
    # (signed URL, received URL, valid)
    ("https://h.example.com/p", "https://h.example.com:443/p", True),      # 3a
    ("https://h.example.com:443/p", "https://h.example.com/p", True),      # 3b
    ("https://h.example.com/p", "https://h.example.com:8443/p", True),     # 3c
    ("https://h.example.com:8443/p", "https://h.example.com/p", False),    # 3d
    ("https://h.example.com:8443/p", "https://h.example.com:8443/p", True),  # 3e
    ("http://h.example.com/p", "http://h.example.com:80/p", True),
    ("http://h.example.com:80/p", "http://h.example.com/p", True),
    ("http://h.example.com:3334/p", "http://h.example.com/p", False),
    ("https://h.example.com:443/p", "https://h.example.com:8443/p", False),
    ("http://h.example.com/p?x=1", "http://h.example.com:80/p?x=1", True),
]


@pytest.mark.parametrize(("signed", "received", "valid"), PORT_CASES)
def test_port_variants_match_sdk(signed: str, received: str, valid: bool) -> None:
    params = {"CallSid": ["CA1"], "CallStatus": ["ringing"]}
    sig = compute_signature(TOKEN, signed, params)
    assert RequestValidator(TOKEN).validate(received, sdk_params(params), sig) is valid
    assert verify_signature(TOKEN, received, params, sig) is valid


def test_extra_urls_are_tried_with_their_port_variants() -> None:
    signed = "https://h.example.com:8443/p"
    params = {"A": ["1"]}
    sig = compute_signature(TOKEN, signed, params)
    assert verify_signature(TOKEN, "https://h.example.com/p", params, sig) is False
    assert verify_signature(TOKEN, "https://h.example.com/p", params, sig,
                            extra_urls=["https://h.example.com:8443/p"])
    assert verify_signature(TOKEN, "https://other.example.com/p", params, sig,
                            extra_urls=["https://h.example.com:8443/p"])
    assert verify_signature(TOKEN, "https://h.example.com/p", params, sig,
                            extra_urls=["https://h.example.com:9999/p"]) is False


def test_bracketed_ipv6_host_keeps_brackets() -> None:
    # The SDK's remove_port() splits on ":" and mangles IPv6; we keep the host intact.
    signed = "https://[2001:db8::1]/p"
    sig = compute_signature(TOKEN, signed, {"A": "1"})
    assert verify_signature(TOKEN, "https://[2001:db8::1]:443/p", {"A": "1"}, sig)
    assert verify_signature(TOKEN, "https://[2001:db8::1]:8443/p", {"A": "1"}, sig)


# bodySHA256: JSON-bodied webhooks.

def _json_case(body: str) -> tuple[str, str]:
    digest = hashlib.sha256(body.encode()).hexdigest()
    url = f"https://voice.example.com/hook?a=1&bodySHA256={digest}"
    return url, compute_signature(TOKEN, url)


@pytest.mark.parametrize("body", ['{"CallSid":"CA1"}', "", '{"text":"漢字 😀"}', "[]"])
def test_body_sha256_valid(body: str) -> None:
    url, sig = _json_case(body)
    assert RequestValidator(TOKEN).validate(url, body, sig) is True
    assert verify_signature(TOKEN, url, None, sig, raw_body=body.encode()) is True
    assert verify_signature(TOKEN, url.replace("https://voice.example.com",
                                               "https://voice.example.com:443"),
                            None, sig, raw_body=body.encode()) is True


def test_body_sha256_tampered_body_rejected() -> None:
    body = '{"CallSid":"CA1"}'
    url, sig = _json_case(body)
    tampered = '{"CallSid":"CA2"}'
    assert RequestValidator(TOKEN).validate(url, tampered, sig) is False
    assert verify_signature(TOKEN, url, None, sig, raw_body=tampered.encode()) is False


def test_body_sha256_tampered_hash_rejected() -> None:
    body = '{"CallSid":"CA1"}'
    url, sig = _json_case(body)
    other = hashlib.sha256(b"x").hexdigest()
    forged = url.split("bodySHA256=")[0] + "bodySHA256=" + other
    assert RequestValidator(TOKEN).validate(forged, "x", sig) is False
    assert verify_signature(TOKEN, forged, None, sig, raw_body=b"x") is False


def test_body_sha256_without_raw_body_fails_closed() -> None:
    # The SDK silently skips the body check for parsed params; we refuse instead.
    url, sig = _json_case('{"a":1}')
    assert verify_signature(TOKEN, url, None, sig) is False
    assert verify_signature(TOKEN, url, {}, sig) is False


# HMAC-SHA256 (Webhooks SharedKey).

@pytest.mark.parametrize("seed", range(50))
def test_sha256_agrees_with_sdk(seed: int) -> None:
    rng = random.Random(50_000 + seed)
    url, params = rand_url(rng), rand_params(rng)
    sdk = RequestValidator(TOKEN)
    expected = sdk.compute_signature(url, sdk_params(params), "HMAC_SHA256")
    assert compute_signature(TOKEN, url, params, algorithm="sha256") == expected
    assert verify_signature(TOKEN, url, params, expected, algorithm="sha256")
    assert sdk.validate(url, sdk_params(params), expected, "HMAC_SHA256")
    # The wrong algorithm never matches.
    assert verify_signature(TOKEN, url, params, expected, algorithm="sha1") is False


@pytest.mark.parametrize(("header", "algo"), [
    (None, "sha1"),
    ("", "sha1"),
    ("key=webhooks_sharedkey_1,algorithm=HMAC_SHA256", "sha256"),
    ("algorithm=HMAC_SHA1", "sha1"),
    (" key = k , algorithm = hmac_sha256 ", "sha256"),
    ("key=only", "sha1"),
])
def test_signature_algorithm_header(header: str | None, algo: str) -> None:
    assert signature_algorithm(header) == algo
    assert get_signature_algorithm(header).upper() == f"HMAC_{algo.upper()}"


def test_signature_algorithm_unknown_raises() -> None:
    with pytest.raises(SignatureError):
        signature_algorithm("algorithm=HMAC_SHA512")


# Garbage never raises.

@pytest.mark.parametrize("url", ["", "not a url", "https://h:99999999/p", "https://h:abc/p",
                                 "https://[::1/p", "://", "https://h/p?bodySHA256"])
def test_garbage_urls_return_false(url: str) -> None:
    assert verify_signature(TOKEN, url, {"a": "1"}, "abc=") is False


@pytest.mark.parametrize("sig", ["", "  ", "not base64!", "é", "\x00"])
def test_garbage_signatures_return_false(sig: str) -> None:
    assert verify_signature(TOKEN, "https://h/p", {"a": "1"}, sig) is False


def test_empty_token_never_validates() -> None:
    sig = compute_signature("", "https://h/p")
    assert verify_signature("", "https://h/p", None, sig) is False


def test_signature_with_surrounding_whitespace_accepted() -> None:
    sig = compute_signature(TOKEN, "https://h/p", {"a": "1"})
    assert verify_signature(TOKEN, "https://h/p", {"a": "1"}, f" {sig}\n")


# Replay keys.

def test_request_key_stable_and_prefixed() -> None:
    url = "https://voice.example.com/hook?callId=1"
    params = {"CallSid": ["CA1"], "CallStatus": ["ringing"]}
    key = request_key(url, params, "sig=")
    assert key.startswith("twilio:req:")
    assert len(key) == len("twilio:req:") + 64
    assert key == request_key(url, {"CallStatus": ["ringing"], "CallSid": ["CA1"]}, "sig=")


def test_request_key_ignores_headers_but_tracks_signed_content() -> None:
    url = "https://voice.example.com/hook"
    params = {"CallSid": ["CA1"]}
    key = request_key(url, params, "sig=")
    # Headers (e.g. X-Twilio-Idempotency-Token) are not inputs at all; anything signed is.
    assert request_key(url + "?x=1", params, "sig=") != key
    assert request_key(url, {"CallSid": ["CA2"]}, "sig=") != key
    assert request_key(url, params, "other=") != key
    assert request_key(url, {"CallSid": ["CA1"], "Digits": [""]}, "sig=") != key


def test_request_key_unambiguous() -> None:
    url = "https://h/p"
    assert request_key(url, {"a": ["1&b=2"]}, "s") != request_key(url, {"a": ["1"], "b": ["2"]},
                                                                   "s")


def test_request_key_repeated_value_order_irrelevant() -> None:
    url = "https://h/p"
    assert request_key(url, {"a": ["2", "1"]}, "s") == request_key(url, {"a": ["1", "2"]}, "s")
