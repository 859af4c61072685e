"""Plivo -> gateway HTTP: signed callback delivery (routing is in ``fake_carrier``).

The gateway verifies against its *public* URL (``https://voice.example.com/...``)
while tests serve it on ``127.0.0.1:PORT``; the fake signs the public URL, as
Plivo would, and delivers to the loopback listener, as a tunnel would. It refuses
to contact anything that is not loopback.

Signatures use the V3 algorithm of the official SDK (``validate_v3_signature``
accepts them; the tests check that), with a fresh numeric nonce per request, the
main-account twin header, and the V2 headers alongside (Plivo sends both).
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterable, Callable, Mapping, Sequence
from urllib.parse import urlencode

import httpx

from voicecall.carriers.plivo.signature import (
    V2_HEADER,
    V2_MAIN_ACCOUNT_HEADER,
    V2_NONCE_HEADER,
    V3_HEADER,
    V3_MAIN_ACCOUNT_HEADER,
    V3_NONCE_HEADER,
    compute_v2,
    compute_v3,
)
from voicecall.testing.fake_carrier._webhooks import (
    FakeRoutingError,
    HttpSender,
    Router,
    Target,
    tamper,
    with_query,
)
from voicecall.testing.fake_plivo._model import FakeCall, SentWebhook, Timings

USER_AGENT = "PlivoHTTP/1.0"
WS_USER_AGENT = "PlivoStream/1.0"

__all__ = ["FakeRoutingError", "Router", "Target", "WebhookSender", "new_nonce", "tamper",
           "with_query"]


def new_nonce() -> str:
    """A Plivo-looking nonce: 20 decimal digits."""
    return "".join(secrets.choice("0123456789") for _ in range(20))


class WebhookSender(HttpSender[SentWebhook, FakeCall]):
    """Signs and delivers callbacks, recording each one."""

    fake_name = "FakePlivo"

    def __init__(self, auth_token: str, router: Router, timings: Timings, *,
                 record: Callable[[SentWebhook, FakeCall | None], None]) -> None:
        super().__init__(timings, record)
        self.router = router
        self.auth_token = auth_token
        self.signing_token = auth_token
        self.extra_tokens: list[str] = []  # more tokens -> several comma-separated signatures
        self.send_v3 = True
        self.send_v2 = True
        self.signature_override: str | None = None
        self.tamper_remaining = 0

    def v3_signature(self, call: FakeCall | None, url: str, nonce: str,
                     params: Mapping[str, str] | None, method: str = "POST") -> str:
        """The ``X-Plivo-Signature-V3`` value to send, after overrides and tampering."""
        if call is not None and call.signature_override is not None:
            sig = call.signature_override
        elif self.signature_override is not None:
            sig = self.signature_override
        else:
            sigs = [compute_v3(t, url, nonce, params, method=method)
                    for t in (*self.extra_tokens, self.signing_token)]
            sig = ",".join(sigs)
        if self.tamper_remaining > 0:
            self.tamper_remaining -= 1
            sig = tamper(sig)
        return sig

    def signature_headers(self, call: FakeCall | None, url: str,
                          params: Mapping[str, str] | None, method: str = "POST",
                          nonce: str | None = None) -> tuple[dict[str, str], str, str]:
        """Headers Plivo signs a request with, plus the nonce and the V3 value."""
        nonce = nonce or new_nonce()
        v3 = self.v3_signature(call, url, nonce, params, method)
        headers: dict[str, str] = {}
        if self.send_v3:
            headers[V3_HEADER] = v3
            headers[V3_MAIN_ACCOUNT_HEADER] = compute_v3(self.auth_token, url, nonce, params,
                                                         method=method)
            headers[V3_NONCE_HEADER] = nonce
        if self.send_v2:
            headers[V2_HEADER] = compute_v2(self.signing_token, url, nonce)
            headers[V2_MAIN_ACCOUNT_HEADER] = compute_v2(self.auth_token, url, nonce)
            headers[V2_NONCE_HEADER] = nonce
        return headers, nonce, v3

    async def deliver(self, kind: str, url: str, params: Mapping[str, str], *,
                      method: str = "POST", call: FakeCall | None = None, sign: bool = True,
                      nonce: str | None = None,
                      headers_override: Mapping[str, str] | None = None,
                      drop_headers: Sequence[str] = (),
                      body: bytes | AsyncIterable[bytes] | None = None,
                      raise_errors: bool = False,
                      ) -> tuple[SentWebhook, httpx.Response | None]:
        """Send one callback. Transport failures are recorded (or raised if asked)."""
        self._running()
        method = method.upper()
        form = dict(params)
        public = with_query(url, form) if method == "GET" else url
        signed_params = None if method == "GET" else form
        target = self.router.resolve(public)
        headers = {"User-Agent": USER_AGENT, "Accept": "*/*"}
        if target.host_header:
            headers["Host"] = target.host_header
        used_nonce: str | None = None
        v3: str | None = None
        if sign:
            signed, used_nonce, v3 = self.signature_headers(call, public, signed_params,
                                                            method, nonce)
            headers.update(signed)
        content: bytes | AsyncIterable[bytes] | None = None
        if method != "GET":
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            content = body if body is not None else urlencode(form).encode("utf-8")
        headers.update(headers_override or {})
        for name in drop_headers:
            headers.pop(name, None)
        sent = SentWebhook(kind=kind, method=method, url=public, target=target.local,
                           params=form, nonce=used_nonce, signature=headers.get(V3_HEADER, v3),
                           headers=headers, call_uuid=call.call_uuid if call else None)
        return await self._exchange(sent, call, method, target.local, headers, content,
                                    raise_errors=raise_errors)
