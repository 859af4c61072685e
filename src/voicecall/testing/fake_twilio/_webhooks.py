"""Twilio -> gateway HTTP: URL routing (public -> loopback) and signed webhook delivery.

The gateway signs and verifies against its *public* URL (``https://voice.example.com/...``)
while tests serve it on ``127.0.0.1:PORT``. The fake therefore signs the public URL,
as Twilio would, and delivers to the local listener, as a tunnel would. It refuses to
contact anything that is not loopback, so a misrouted test can never reach the internet.
"""

from __future__ import annotations

import ipaddress
import uuid
from collections.abc import AsyncIterable, Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit, urlunsplit

import httpx

from voicecall.carriers.twilio.signature import SIGNATURE_HEADER, compute_signature
from voicecall.testing.fake_twilio._model import FakeCall, SentWebhook, Timings

USER_AGENT = "TwilioProxy/1.1"
WS_USER_AGENT = "Twilio.TmeWs/1.0"
_DOWNGRADE = {"https": "http", "wss": "ws"}


class FakeRoutingError(Exception):
    """A URL the fake will not contact (not loopback after rewriting)."""


@dataclass(frozen=True)
class Target:
    public: str  # the URL as the gateway wrote it (what gets signed)
    local: str  # where the fake actually connects
    host_header: str | None  # Host to present, when it differs from the local one


def _is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _netloc(value: str) -> str:
    # public_to_local values may be "127.0.0.1:8080" or "http://127.0.0.1:8080".
    return urlsplit(value).netloc if "//" in value else value


class Router:
    """Maps public gateway URLs to the loopback listener that serves them."""

    def __init__(self, *, public_to_local: Mapping[str, str] | None = None,
                 url_rewrite: Callable[[str], str] | None = None,
                 ws_url_rewrite: Callable[[str], str] | None = None,
                 preserve_host: bool = True) -> None:
        self.public_to_local = dict(public_to_local or {})
        self.url_rewrite = url_rewrite
        self.ws_url_rewrite = ws_url_rewrite
        self.preserve_host = preserve_host

    def resolve(self, url: str) -> Target:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https", "ws", "wss") or not parts.hostname:
            raise FakeRoutingError(f"not an absolute http(s)/ws(s) URL: {url!r}")
        rewrite = self.url_rewrite
        if parts.scheme in ("ws", "wss") and self.ws_url_rewrite is not None:
            rewrite = self.ws_url_rewrite
        if rewrite is not None:
            local = rewrite(url)
        else:
            mapped = self.public_to_local.get(parts.netloc) or self.public_to_local.get(
                parts.hostname)
            local = urlunsplit(parts._replace(netloc=_netloc(mapped))) if mapped else url
        lparts = urlsplit(local)
        if not _is_loopback(lparts.hostname):
            raise FakeRoutingError(
                f"refusing to contact non-loopback host {lparts.hostname!r} for {url!r}; "
                "map it with public_to_local or url_rewrite")
        # The gateway serves plain HTTP/WS locally; TLS ends at the (imaginary) tunnel.
        lparts = lparts._replace(scheme=_DOWNGRADE.get(lparts.scheme, lparts.scheme))
        host = parts.netloc.rpartition("@")[2]
        host_header = host if self.preserve_host and host != lparts.netloc else None
        return Target(url, urlunsplit(lparts), host_header)


def with_query(url: str, params: Mapping[str, str]) -> str:
    """Twilio's GET webhooks: params appended to the query (and signed as part of the URL)."""
    if not params:
        return url
    return url + ("&" if urlsplit(url).query else "?") + urlencode(params)


def tamper(signature: str) -> str:
    """A same-length signature that is certainly wrong."""
    if not signature:
        return "AAAA"
    first = "B" if signature[0] != "B" else "C"
    return first + signature[1:]


class WebhookSender:
    """Signs and delivers webhooks, recording each one."""

    def __init__(self, auth_token: str, router: Router, timings: Timings, *,
                 forwarded_headers: bool, forwarded_for: str,
                 record: Callable[[SentWebhook, FakeCall | None], None]) -> None:
        self.router = router
        self.timings = timings
        self.signing_token = auth_token
        self.signature_override: str | None = None
        self.tamper_remaining = 0
        self.forwarded_headers = forwarded_headers
        self.forwarded_for = forwarded_for
        self._record = record
        self._client: httpx.AsyncClient | None = None

    async def start(self) -> None:
        # trust_env=False: a developer's HTTP(S)_PROXY must not capture loopback traffic.
        self._client = httpx.AsyncClient(trust_env=False, follow_redirects=False,
                                         timeout=self.timings.webhook_timeout)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def signature_for(self, call: FakeCall | None, url: str,
                      params: Mapping[str, str] | None) -> str:
        """The X-Twilio-Signature to send, after overrides and tampering."""
        if call is not None and call.signature_override is not None:
            signature = call.signature_override
        elif self.signature_override is not None:
            signature = self.signature_override
        else:
            signature = compute_signature(self.signing_token, url, params)
        if self.tamper_remaining > 0:
            self.tamper_remaining -= 1
            signature = tamper(signature)
        return signature

    def headers_for(self, target: Target) -> dict[str, str]:
        headers: dict[str, str] = {}
        if target.host_header:
            headers["Host"] = target.host_header
        if self.forwarded_headers:
            parts = urlsplit(target.public)
            headers["X-Forwarded-Proto"] = {"wss": "https", "ws": "http"}.get(
                parts.scheme, parts.scheme)
            headers["X-Forwarded-Host"] = parts.netloc
            headers["X-Forwarded-For"] = self.forwarded_for
        return headers

    async def deliver(self, kind: str, url: str, params: Mapping[str, str], *,
                      method: str = "POST", call: FakeCall | None = None, sign: bool = True,
                      signature: str | None = None,
                      extra_headers: Mapping[str, str] | None = None,
                      body: bytes | AsyncIterable[bytes] | None = None,
                      raise_errors: bool = False,
                      ) -> tuple[SentWebhook, httpx.Response | None]:
        """Send one webhook. Transport failures are recorded (or raised if asked)."""
        if self._client is None:
            raise RuntimeError("FakeTwilio is not running")
        method = method.upper()
        form = dict(params)
        public = with_query(url, form) if method == "GET" else url
        signed_params = None if method == "GET" else form
        target = self.router.resolve(public)
        headers = {"User-Agent": USER_AGENT, "Accept": "*/*",
                   "I-Twilio-Idempotency-Token": str(uuid.uuid4())}
        headers.update(self.headers_for(target))
        sig: str | None = None
        if sign:
            sig = signature if signature is not None else self.signature_for(
                call, public, signed_params)
            headers[SIGNATURE_HEADER] = sig
        content: bytes | AsyncIterable[bytes] | None = None
        if method != "GET":
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            content = body if body is not None else urlencode(form).encode("utf-8")
        headers.update(extra_headers or {})
        sent = SentWebhook(kind=kind, method=method, url=public, target=target.local,
                           params=form, signature=sig, headers=headers,
                           call_sid=call.sid if call is not None else None)
        response: httpx.Response | None = None
        try:
            response = await self._client.request(method, target.local, headers=headers,
                                                   content=content)
        except httpx.HTTPError as exc:
            sent.error = f"{type(exc).__name__}: {exc}"
            self._record(sent, call)
            if raise_errors:
                raise
            return sent, None
        sent.status_code = response.status_code
        sent.response_body = response.text
        sent.response_headers = dict(response.headers)
        self._record(sent, call)
        return sent, response
