"""Telnyx -> gateway HTTP: URL routing (public -> loopback) and Ed25519-signed delivery.

The gateway's public URL (``https://voice.example.com/...``) is served on
``127.0.0.1:PORT`` in tests: the fake delivers there, as a tunnel would. It refuses to
contact anything that is not loopback, so a misrouted test never reaches the internet.
Telnyx signs ``f"{timestamp}|{raw body}"`` (not the URL) with the account's Ed25519 key.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterable, Callable, Mapping
from typing import Any

import httpx

from voicecall.carriers.telnyx.signature import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from voicecall.testing.fake_carrier._webhooks import (
    FakeRoutingError,
    HttpSender,
    Target,
    tamper,
)
from voicecall.testing.fake_carrier._webhooks import Router as BaseRouter
from voicecall.testing.fake_telnyx._model import FakeCall, SentWebhook, Timings

USER_AGENT = "telnyx-webhooks"

__all__ = ["FakeRoutingError", "Router", "Target", "WebhookSender", "envelope", "tamper"]


class Router(BaseRouter):
    """Maps public gateway URLs to the loopback listener that serves them."""

    hint = "public_to_local"

    def __init__(self, public_to_local: Mapping[str, str] | None = None) -> None:
        super().__init__(public_to_local=public_to_local)


def envelope(event_type: str, payload: Mapping[str, Any], *, event_id: str,
             attempt: int, delivered_to: str, occurred_at: str | None = None) -> bytes:
    """The JSON body Telnyx posts (``data`` + ``meta``)."""
    occurred = occurred_at or time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
    doc = {"data": {"record_type": "event", "event_type": event_type, "id": event_id,
                    "occurred_at": occurred, "payload": dict(payload)},
           "meta": {"attempt": attempt, "delivered_to": delivered_to}}
    return json.dumps(doc, separators=(",", ":")).encode("utf-8")


class WebhookSender(HttpSender[SentWebhook, FakeCall]):
    """Signs and delivers webhooks, recording each one."""

    fake_name = "FakeTelnyx"
    timings: Timings

    def __init__(self, seed: bytes, router: Router, timings: Timings, *,
                 record: Callable[[SentWebhook, FakeCall | None], None]) -> None:
        super().__init__(timings, record)
        self.seed = seed
        self.signing_seed = seed
        self.router = router
        self.timestamp_skew = 0.0  # seconds added to the signed timestamp
        self.signature_override: str | None = None
        self.tamper_remaining = 0

    def headers_for(self, body: bytes, *, sign_it: bool = True,
                    timestamp: str | None = None) -> dict[str, str]:
        ts = timestamp or str(int(time.time() + self.timestamp_skew))
        headers = {"content-type": "application/json", "user-agent": USER_AGENT,
                   "accept": "*/*", TIMESTAMP_HEADER: ts}
        if sign_it:
            signature = self.signature_override or sign(self.signing_seed, ts, body)
            if self.tamper_remaining > 0:
                self.tamper_remaining -= 1
                signature = tamper(signature)
            headers[SIGNATURE_HEADER] = signature
        return headers

    async def post(self, url: str, body: bytes | AsyncIterable[bytes],
                   headers: Mapping[str, str], *, kind: str, call: FakeCall | None,
                   event_id: str | None = None, attempt: int = 1, raise_errors: bool = False,
                   ) -> tuple[SentWebhook, httpx.Response | None]:
        self._running()
        target = self.router.resolve(url)
        send_headers = dict(headers)
        if target.host_header:
            send_headers["host"] = target.host_header
        sent = SentWebhook(kind=kind, url=url, target=target.local,
                           body=body if isinstance(body, bytes) else b"",
                           headers=dict(headers), event_id=event_id,
                           call_control_id=call.call_control_id if call else None,
                           attempt=attempt)
        return await self._exchange(sent, call, "POST", target.local, send_headers, body,
                                    raise_errors=raise_errors)

    async def deliver(self, url: str, event_type: str, payload: Mapping[str, Any], *,
                      call: FakeCall | None, event_id: str | None = None,
                      ) -> tuple[SentWebhook, httpx.Response | None]:
        """Send one event, redelivering (fresh timestamp and signature, same event id,
        ``meta.attempt`` + 1) while the gateway does not answer 2xx."""
        event_id = event_id or str(uuid.uuid4())
        attempts = 1 + max(0, self.timings.webhook_retries)
        sent: SentWebhook | None = None
        response: httpx.Response | None = None
        for attempt in range(1, attempts + 1):
            body = envelope(event_type, payload, event_id=event_id, attempt=attempt,
                            delivered_to=url)
            sent, response = await self.post(url, body, self.headers_for(body),
                                             kind=event_type, call=call, event_id=event_id,
                                             attempt=attempt)
            if response is not None and 200 <= response.status_code < 300:
                break
            if attempt < attempts:
                await asyncio.sleep(self.timings.webhook_retry_delay)
        assert sent is not None
        return sent, response
