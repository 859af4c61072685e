"""Twilio -> gateway HTTP: signed webhook delivery (routing is in ``fake_carrier``).

The gateway signs and verifies against its *public* URL (``https://voice.example.com/...``)
while tests serve it on ``127.0.0.1:PORT``. The fake therefore signs the public URL,
as Twilio would, and delivers to the local listener, as a tunnel would. It refuses to
contact anything that is not loopback, so a misrouted test can never reach the internet.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterable, Callable, Mapping
from urllib.parse import urlencode, urlsplit

import httpx

from voicecall.carriers.twilio.signature import SIGNATURE_HEADER, compute_signature
from voicecall.testing.fake_carrier._webhooks import (
    FakeRoutingError,
    HttpSender,
    Router,
    Target,
    tamper,
    with_query,
)
from voicecall.testing.fake_twilio._model import FakeCall, SentWebhook, Timings

USER_AGENT = "TwilioProxy/1.1"
WS_USER_AGENT = "Twilio.TmeWs/1.0"

__all__ = ["FakeRoutingError", "Router", "Target", "WebhookSender", "tamper", "with_query"]


class WebhookSender(HttpSender[SentWebhook, FakeCall]):
    """Signs and delivers webhooks, recording each one."""

    fake_name = "FakeTwilio"

    def __init__(self, auth_token: str, router: Router, timings: Timings, *,
                 forwarded_headers: bool, forwarded_for: str,
                 record: Callable[[SentWebhook, FakeCall | None], None]) -> None:
        super().__init__(timings, record)
        self.router = router
        self.signing_token = auth_token
        self.signature_override: str | None = None
        self.tamper_remaining = 0
        self.forwarded_headers = forwarded_headers
        self.forwarded_for = forwarded_for

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
        self._running()
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
        return await self._exchange(sent, call, method, target.local, headers, content,
                                    raise_errors=raise_errors)
