"""Telnyx webhook signatures (Ed25519). Pure apart from PyNaCl's verify.

Mirrors ``telnyx.lib.webhook_verification.verify_webhook_signature`` (telnyx 4.189),
which the tests use as the oracle:

* headers ``telnyx-signature-ed25519`` (base64 of a 64-byte signature) and
  ``telnyx-timestamp`` (Unix seconds), looked up case-insensitively;
* signed message = ``f"{timestamp}|{raw body}"`` as UTF-8 bytes;
* ``|int(now) - timestamp| > 300`` is refused, in both directions.

Where we deliberately differ from the SDK (each covered by a test):

* the public key may also be a base64 DER SubjectPublicKeyInfo or a PEM block, as
  the reference plugin accepts (the SDK takes only the raw 32 bytes, base64);
* the signature may be base64url as well as base64 (padding optional), but it is
  decoded strictly: the SDK's lenient decoder silently skips stray characters;
* the timestamp must be plain ASCII digits: ``int()`` in the SDK also takes
  ``" +1_700_000_000 "``, which no Telnyx server sends;
* the verdict carries the canonical signature bytes, from which ``request_key``
  derives the replay-cache key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from voicecall.errors import SignatureError

if TYPE_CHECKING:
    from nacl.signing import SigningKey, VerifyKey

SIGNATURE_HEADER = "telnyx-signature-ed25519"
TIMESTAMP_HEADER = "telnyx-timestamp"
TOLERANCE_S = 300

KEY_BYTES = 32
SIGNATURE_BYTES = 64
# DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410): SEQUENCE { SEQUENCE { OID
# 1.3.101.112 }, BIT STRING (32 bytes) }.
SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")
_TIMESTAMP = re.compile(r"^[0-9]{1,15}$")
_PEM = re.compile(r"-----BEGIN ([A-Z ]+)-----(.*?)-----END \1-----", re.DOTALL)
_B64_CHARS = re.compile(r"^[A-Za-z0-9+/=_-]+$")


@dataclass(frozen=True)
class SignatureCheck:
    """The outcome of one check; ``signature`` is the decoded signature when ``ok``."""

    ok: bool
    reason: str = ""
    signature: bytes | None = None
    timestamp: str | None = None


def _b64decode(text: str) -> bytes:
    """Strict base64 or base64url, padding optional; ``ValueError`` on anything else."""
    compact = "".join(text.split())
    if not compact or not _B64_CHARS.match(compact):
        raise ValueError("not base64")
    body = compact.rstrip("=")
    if "=" in body:
        raise ValueError("padding inside base64 text")
    padded = body + "=" * (-len(body) % 4)
    if "-" in padded or "_" in padded:
        if "+" in padded or "/" in padded:
            raise ValueError("mixed base64 alphabets")
        padded = padded.replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not base64") from None


def load_public_key(text: str) -> bytes:
    """The 32 raw key bytes from base64 raw, base64 DER SPKI or PEM; ``SignatureError`` else."""
    if not isinstance(text, str) or not text.strip():
        raise SignatureError("Telnyx public key is empty")
    pem = _PEM.search(text)
    if pem is not None:
        if pem.group(1) != "PUBLIC KEY":
            raise SignatureError(f"Telnyx public key PEM must be 'PUBLIC KEY', got {pem.group(1)!r}")
        body = pem.group(2)
    elif "-----" in text:
        raise SignatureError("Telnyx public key looks like a broken PEM block")
    else:
        body = text
    try:
        raw = _b64decode(body)
    except ValueError:
        raise SignatureError("Telnyx public key is not valid base64") from None
    if len(raw) == KEY_BYTES and pem is None:
        return raw
    if len(raw) == len(SPKI_PREFIX) + KEY_BYTES and raw.startswith(SPKI_PREFIX):
        return raw[len(SPKI_PREFIX):]
    raise SignatureError(
        f"Telnyx public key must be 32 raw bytes or an Ed25519 SPKI (got {len(raw)} bytes)")


def decode_signature(text: str) -> bytes | None:
    """The 64 signature bytes from base64/base64url, or None."""
    try:
        raw = _b64decode(text)
    except ValueError:
        return None
    return raw if len(raw) == SIGNATURE_BYTES else None


def _nacl() -> tuple[type[VerifyKey], type[SigningKey], type[Exception]]:
    """PyNaCl (the ``telnyx`` extra), imported on first use so other carriers never need it."""
    try:
        from nacl.exceptions import BadSignatureError
        from nacl.signing import SigningKey, VerifyKey
    except ImportError:  # pragma: no cover - depends on the install
        raise SignatureError("Telnyx signatures need PyNaCl: pip install 'voicecall[telnyx]'") \
            from None
    return VerifyKey, SigningKey, BadSignatureError


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def signed_message(timestamp: str, body: bytes) -> bytes:
    return timestamp.encode("ascii") + b"|" + body


def check_signature(public_key: bytes, headers: Mapping[str, str], body: bytes, *,
                    now: float, tolerance_s: int = TOLERANCE_S) -> SignatureCheck:
    """Check one webhook. Never raises; ``reason`` says what failed."""
    signature_text = _header(headers, SIGNATURE_HEADER)
    timestamp = _header(headers, TIMESTAMP_HEADER)
    if not signature_text:
        return SignatureCheck(False, f"missing {SIGNATURE_HEADER} header")
    if not timestamp:
        return SignatureCheck(False, f"missing {TIMESTAMP_HEADER} header")
    if not _TIMESTAMP.match(timestamp):
        return SignatureCheck(False, f"invalid {TIMESTAMP_HEADER}: {timestamp[:32]!r}")
    if len(public_key) != KEY_BYTES:
        return SignatureCheck(False, "public key must be 32 bytes")
    signature = decode_signature(signature_text)
    if signature is None:
        return SignatureCheck(False, f"{SIGNATURE_HEADER} is not a base64 64-byte signature")
    try:
        body.decode("utf-8")  # the SDK signs text; a non-UTF-8 body is refused as it would be
    except UnicodeDecodeError:
        return SignatureCheck(False, "webhook body is not valid UTF-8")
    try:
        verify_key, _, bad_signature = _nacl()
    except SignatureError as exc:
        return SignatureCheck(False, str(exc))
    try:
        verify_key(public_key).verify(signed_message(timestamp, body), signature)
    except (bad_signature, ValueError, TypeError):
        return SignatureCheck(False, "Invalid signature")
    skew = abs(int(now) - int(timestamp))
    if skew > tolerance_s:
        return SignatureCheck(False, f"Timestamp outside tolerance ({skew}s > {tolerance_s}s)")
    return SignatureCheck(True, signature=signature, timestamp=timestamp)


def verify_signature(public_key: bytes | str, headers: Mapping[str, str], body: bytes, *,
                     now: float, tolerance_s: int = TOLERANCE_S) -> bool:
    """True if the request carries Telnyx's valid, fresh signature. Never raises."""
    try:
        key = load_public_key(public_key) if isinstance(public_key, str) else public_key
    except SignatureError:
        return False
    return check_signature(key, headers, body, now=now, tolerance_s=tolerance_s).ok


def request_key(timestamp: str, signature: bytes, body: bytes) -> str:
    """Replay-cache key: what the signature covers plus the canonical signature.

    The same bytes resent (an attacker replaying a capture, or a proxy retrying) map to
    the same key however the signature was spelled (base64 vs base64url, padding).
    """
    canonical = base64.b64encode(signature).decode("ascii")
    digest = hashlib.sha256(timestamp.encode("ascii") + b"\n" + canonical.encode("ascii")
                            + b"\n" + body).hexdigest()
    return "telnyx:req:" + digest


# --- signing: what Telnyx does (for the fake Telnyx and tests) ---------------------

def public_key_b64(seed: bytes) -> str:
    """The base64 raw public key for an Ed25519 private-key seed (Mission Control's form)."""
    signing_key = _nacl()[1]
    return base64.b64encode(bytes(signing_key(seed).verify_key)).decode("ascii")


def sign(seed: bytes, timestamp: str, body: bytes) -> str:
    """``telnyx-signature-ed25519`` for ``body`` sent at ``timestamp``."""
    signed = _nacl()[1](seed).sign(signed_message(timestamp, body))
    return base64.b64encode(signed.signature).decode("ascii")
