"""Ed25519 webhook signatures agree with the official SDK (telnyx 4.189) and PyNaCl.

Two SDK oracles: ``telnyx.lib.webhook_verification.verify_webhook_signature`` (which
``telnyx.lib`` also patches in as ``client.webhooks.unwrap``) and the generated,
strict-base64 ``unwrap`` that the patch keeps as ``client.webhooks._unwrap_hmac`` (in
4.189 it is Ed25519 despite the name). Where we deliberately differ (more key
forms, base64url signatures, strict decoding, digit-only timestamps) a test says so.
"""

from __future__ import annotations

import base64
import json
import random
import time
from collections.abc import Iterator

import pytest
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey
from telnyx import Telnyx
from telnyx.lib.webhook_verification import WebhookVerificationError, verify_webhook_signature

from voicecall.carriers.telnyx.signature import (
    SIGNATURE_HEADER,
    SPKI_PREFIX,
    TIMESTAMP_HEADER,
    check_signature,
    decode_signature,
    load_public_key,
    public_key_b64,
    request_key,
    sign,
    verify_signature,
)
from voicecall.errors import SignatureError

NOW = 1_800_000_000
client = Telnyx(api_key="KEY-test", public_key=None)


@pytest.fixture(autouse=True)
def frozen_clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(time, "time", lambda: float(NOW))
    yield


def sdk_lib(body: bytes, headers: dict[str, str], key: str) -> bool:
    try:
        verify_webhook_signature(body, headers, key)
    except (WebhookVerificationError, UnicodeDecodeError):  # the latter escapes the SDK
        return False
    return True


def sdk_unwrap(body: bytes, headers: dict[str, str], key: str) -> bool:
    generated_unwrap = client.webhooks._unwrap_hmac  # type: ignore[attr-defined]
    try:
        generated_unwrap(body.decode("utf-8"), headers=headers, key=key)
    except ValueError as exc:
        assert not isinstance(exc, json.JSONDecodeError), "bodies here are JSON"
        return False
    return True


def nacl_ok(key: bytes, timestamp: str, body: bytes, signature: bytes) -> bool:
    try:
        VerifyKey(key).verify(timestamp.encode() + b"|" + body, signature)
    except (BadSignatureError, ValueError):
        return False
    return True


def rand_text(rng: random.Random) -> str:
    alphabet = "abcXYZ 019|\"\\/é漢😀\u00a0\n{}"
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 20)))


def rand_body(rng: random.Random) -> bytes:
    doc = {"data": {"event_type": rng.choice(["call.initiated", "call.hangup",
                                              "call.transcription"]),
                    "id": str(rng.getrandbits(64)),
                    "payload": {"call_control_id": "v3:" + rand_text(rng),
                                "client_state": rand_text(rng),
                                "n": rng.randint(-5, 10**9)}},
           "meta": {"attempt": rng.randint(1, 3)}}
    if rng.random() < 0.5:
        return json.dumps(doc, ensure_ascii=rng.random() < 0.5).encode("utf-8")
    return json.dumps(doc, indent=rng.choice([None, 2]), separators=(",", ":") if
                      rng.random() < 0.5 else None).encode("utf-8")


def casing(rng: random.Random, name: str) -> str:
    return "".join(c.upper() if rng.random() < 0.5 else c for c in name)


MUTATIONS = ("none", "body", "body-reserialised", "timestamp", "wrong-key", "sig-byte",
             "sig-truncated", "sig-missing", "ts-missing", "sig-garbage")


def make_case(rng: random.Random) -> tuple[bytes, dict[str, str], str, str]:
    seed = rng.randbytes(32)
    key_b64 = public_key_b64(seed)
    body = rand_body(rng)
    skew = rng.choice([0, 1, -1, 299, -299, 300, -300, 301, -301, 5000, -5000,
                       rng.randint(-600, 600)])
    timestamp = str(NOW + skew)
    signature = sign(seed, timestamp, body)
    mutation = rng.choice(MUTATIONS)
    if mutation == "body":
        body = body.replace(b"1", b"2", 1) if b"1" in body else body + b" "
    elif mutation == "body-reserialised":
        body = json.dumps(json.loads(body), indent=1).encode()
    elif mutation == "timestamp":
        timestamp = str(int(timestamp) + rng.choice([1, -1, 60]))
    elif mutation == "wrong-key":
        key_b64 = public_key_b64(rng.randbytes(32))
    elif mutation == "sig-byte":
        raw = bytearray(base64.b64decode(signature))
        raw[rng.randrange(64)] ^= 1 << rng.randrange(8)
        signature = base64.b64encode(bytes(raw)).decode()
    elif mutation == "sig-truncated":
        signature = base64.b64encode(base64.b64decode(signature)[:63]).decode()
    elif mutation == "sig-garbage":
        signature = rng.choice(["", "not base64 at all!", "AAAA", "=" * 88])
    headers = {casing(rng, SIGNATURE_HEADER): signature,
               casing(rng, TIMESTAMP_HEADER): timestamp}
    if mutation == "sig-missing":
        headers = {k: v for k, v in headers.items() if k.lower() != SIGNATURE_HEADER}
    if mutation == "ts-missing":
        headers = {k: v for k, v in headers.items() if k.lower() != TIMESTAMP_HEADER}
    return body, headers, key_b64, mutation


def test_generated_cases_agree_with_both_sdk_verifiers() -> None:
    rng = random.Random(20261125)
    outcomes: dict[tuple[str, bool], int] = {}
    for _ in range(600):
        body, headers, key_b64, mutation = make_case(rng)
        ours = verify_signature(key_b64, headers, body, now=NOW)
        assert ours == sdk_unwrap(body, headers, key_b64), (mutation, headers, body)
        if mutation != "sig-garbage":  # the lib decodes leniently, see below
            assert ours == sdk_lib(body, headers, key_b64), (mutation, headers, body)
        outcomes[(mutation, ours)] = outcomes.get((mutation, ours), 0) + 1
    # Both verdicts were exercised, by valid and by tampered cases.
    assert outcomes.get(("none", True), 0) > 10
    assert outcomes.get(("none", False), 0) > 5  # timestamps out of tolerance
    for mutation in MUTATIONS[1:]:
        assert outcomes.get((mutation, True), 0) == 0, mutation


@pytest.mark.parametrize("skew", [-301, -300, -1, 0, 1, 299, 300, 301, 86400])
def test_timestamp_tolerance_is_300s_both_ways(skew: int) -> None:
    seed = bytes(range(32))
    body = b'{"data":{"event_type":"call.answered"}}'
    timestamp = str(NOW + skew)
    headers = {SIGNATURE_HEADER: sign(seed, timestamp, body), TIMESTAMP_HEADER: timestamp}
    key = public_key_b64(seed)
    expected = abs(skew) <= 300
    assert verify_signature(key, headers, body, now=NOW) is expected
    assert sdk_lib(body, headers, key) is expected
    assert sdk_unwrap(body, headers, key) is expected
    # ``now`` is injectable: the same request is fresh at its own time.
    assert verify_signature(key, headers, body, now=NOW + skew) is True
    check = check_signature(load_public_key(key), headers, body, now=NOW)
    assert check.ok is expected
    if not expected:
        assert "tolerance" in check.reason


def test_key_forms_raw_der_and_pem_are_the_same_key() -> None:
    rng = random.Random(7)
    for _ in range(50):
        seed = rng.randbytes(32)
        raw = bytes(SigningKey(seed).verify_key)
        raw_b64 = base64.b64encode(raw).decode()
        der_b64 = base64.b64encode(SPKI_PREFIX + raw).decode()
        pem = "-----BEGIN PUBLIC KEY-----\n" + der_b64 + "\n-----END PUBLIC KEY-----\n"
        for form in (raw_b64, der_b64, pem, " " + raw_b64 + "\n",
                     base64.urlsafe_b64encode(raw).decode().rstrip("=")):
            assert load_public_key(form) == raw
        body = rand_body(rng)
        timestamp = str(NOW - rng.randint(0, 300))
        signature = sign(seed, timestamp, body)
        headers = {SIGNATURE_HEADER: signature, TIMESTAMP_HEADER: timestamp}
        expected = nacl_ok(raw, timestamp, body, base64.b64decode(signature))
        assert expected is True
        for form in (raw_b64, der_b64, pem):
            assert verify_signature(form, headers, body, now=NOW) is expected
        # The SDK takes only the raw form; it agrees there.
        assert sdk_lib(body, headers, raw_b64) is expected


def test_base64url_signatures_are_accepted_deliberately() -> None:
    """The reference plugin accepts base64url; the SDK's strict unwrap does not."""
    rng = random.Random(11)
    seen_url_chars = False
    for _ in range(40):
        seed = rng.randbytes(32)
        body = rand_body(rng)
        timestamp = str(NOW)
        standard = sign(seed, timestamp, body)
        url = base64.urlsafe_b64encode(base64.b64decode(standard)).decode()
        for spelled in (url, url.rstrip("=")):
            headers = {SIGNATURE_HEADER: spelled, TIMESTAMP_HEADER: timestamp}
            assert verify_signature(public_key_b64(seed), headers, body, now=NOW)
        if "-" in url or "_" in url:
            seen_url_chars = True
            headers = {SIGNATURE_HEADER: url, TIMESTAMP_HEADER: timestamp}
            assert not sdk_unwrap(body, headers, public_key_b64(seed))
        # The replay key does not depend on the spelling.
        sig_bytes = base64.b64decode(standard)
        assert decode_signature(url) == decode_signature(standard) == sig_bytes
    assert seen_url_chars


def test_lenient_sdk_decoding_is_not_copied() -> None:
    """The lib's ``b64decode`` skips characters outside the alphabet; we refuse them."""
    seed = bytes(32)
    body = b'{"data":{}}'
    timestamp = str(NOW)
    signature = sign(seed, timestamp, body)
    junk = signature[:10] + "!$" + signature[10:]
    headers = {SIGNATURE_HEADER: junk, TIMESTAMP_HEADER: timestamp}
    key = public_key_b64(seed)
    assert sdk_lib(body, headers, key) is True
    assert sdk_unwrap(body, headers, key) is False
    assert verify_signature(key, headers, body, now=NOW) is False


@pytest.mark.parametrize("timestamp", [" 1800000000", "+1800000000", "1_800_000_000",
                                       "1800000000.0", "", "0x6B49D200", "١٨٠٠٠٠٠٠٠٠"])
def test_timestamps_must_be_plain_digits(timestamp: str) -> None:
    seed = bytes(range(1, 33))
    body = b'{"data":{}}'
    signed = SigningKey(seed).sign(timestamp.encode("utf-8") + b"|" + body).signature
    headers = {SIGNATURE_HEADER: base64.b64encode(signed).decode(), TIMESTAMP_HEADER: timestamp}
    assert verify_signature(public_key_b64(seed), headers, body, now=NOW) is False


def test_non_utf8_bodies_are_refused_like_the_sdk() -> None:
    seed = bytes(range(2, 34))
    body = b'{"data":"\xff"}'
    headers = {SIGNATURE_HEADER: sign(seed, str(NOW), body), TIMESTAMP_HEADER: str(NOW)}
    assert verify_signature(public_key_b64(seed), headers, body, now=NOW) is False
    assert sdk_lib(body, headers, public_key_b64(seed)) is False


@pytest.mark.parametrize("bad", [
    "", "   ", "not base64!", base64.b64encode(bytes(31)).decode(),
    base64.b64encode(bytes(33)).decode(),
    base64.b64encode(bytes.fromhex("302a300506032b6571032100") + bytes(32)).decode(),  # X448 OID
    "-----BEGIN RSA PUBLIC KEY-----\nAAAA\n-----END RSA PUBLIC KEY-----",
    "-----BEGIN PUBLIC KEY-----\nAAAA",
    "-----BEGIN PUBLIC KEY-----\n" + base64.b64encode(bytes(32)).decode()
    + "\n-----END PUBLIC KEY-----",
])
def test_bad_public_keys_are_config_errors(bad: str) -> None:
    with pytest.raises(SignatureError):
        load_public_key(bad)
    assert verify_signature(bad, {SIGNATURE_HEADER: "x", TIMESTAMP_HEADER: str(NOW)}, b"{}",
                            now=NOW) is False


def test_request_key_covers_timestamp_body_and_signature() -> None:
    seed = bytes(range(3, 35))
    body = b'{"data":{"id":"1"}}'
    sig = base64.b64decode(sign(seed, "100", body))
    key = request_key("100", sig, body)
    assert key.startswith("telnyx:req:")
    assert key == request_key("100", sig, body)
    assert key != request_key("101", sig, body)
    assert key != request_key("100", sig, body + b" ")
    assert key != request_key("100", bytes(64), body)
    check = check_signature(bytes(SigningKey(seed).verify_key),
                            {SIGNATURE_HEADER: base64.urlsafe_b64encode(sig).decode(),
                             TIMESTAMP_HEADER: "100"}, body, now=100)
    assert check.ok and check.signature == sig and check.timestamp == "100"


def test_missing_headers_have_reasons() -> None:
    key = load_public_key(public_key_b64(bytes(32)))
    assert "missing telnyx-signature-ed25519" in check_signature(
        key, {TIMESTAMP_HEADER: "1"}, b"{}", now=1).reason
    assert "missing telnyx-timestamp" in check_signature(
        key, {SIGNATURE_HEADER: "x"}, b"{}", now=1).reason
