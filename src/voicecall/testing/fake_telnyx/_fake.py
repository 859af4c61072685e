"""``FakeTelnyx``: the Ed25519 webhook key, Call Control knobs and parked inbound legs.

Server, lifecycle and the shared stream controls: ``fake_carrier._server``.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import os
import time
import uuid
from collections.abc import AsyncIterable, Mapping
from typing import Any

import httpx

from voicecall.carriers.telnyx.signature import SPKI_PREFIX, public_key_b64
from voicecall.testing.fake_telnyx._engine import CallEngine, Live
from voicecall.testing.fake_telnyx._model import (
    CalleeScript,
    FakeCall,
    RestRequest,
    SentWebhook,
    StreamRecord,
    Timings,
)
from voicecall.testing.fake_telnyx._rest import RestApi
from voicecall.testing.fake_telnyx._webhooks import Router, WebhookSender, envelope


class FakeTelnyx(CallEngine):
    """A loopback Telnyx: Call Control REST in, Ed25519-signed webhooks and media out."""

    fake_name = "FakeTelnyx"
    task_prefix = "fake-telnyx"
    event_call_key = "call_control_id"

    _rest: RestApi

    def __init__(self, api_key: str = "KEY-fake-telnyx", connection_id: str = "1234567890",
                 *, callee: CalleeScript | None = None, timings: Timings | None = None,
                 public_to_local: Mapping[str, str] | None = None,
                 connection_webhook_url: str | None = None, seed: bytes | None = None,
                 realtime: bool | None = None, raise_task_errors: bool = True) -> None:
        super().__init__(raise_task_errors=raise_task_errors)
        self.api_key = api_key
        self.connection_id = connection_id
        self.connection_webhook_url = connection_webhook_url
        self.callee = callee or CalleeScript()
        self.callees: dict[str, CalleeScript] = {}
        self.timings = timings or Timings()
        if realtime is not None:
            self.timings = dataclasses.replace(self.timings, realtime=realtime)
        self.seed = seed or os.urandom(32)
        self.requests: list[RestRequest] = []
        self.webhooks: list[SentWebhook] = []
        self._live: dict[str, Live] = {}
        self._router = Router(public_to_local)
        self._webhooks = WebhookSender(self.seed, self._router, self.timings,
                                       record=self._record_webhook)
        self._rest = RestApi(self)

    # -- the API base -----------------------------------------------------------------

    @property
    def api_base(self) -> str:
        """What the gateway uses instead of ``https://api.telnyx.com/v2``."""
        return f"{self.base_url}/v2"

    # -- the account's webhook key (Mission Control: Keys & Credentials -> Public Key) ----

    @property
    def public_key(self) -> str:
        """Base64 of the raw 32-byte Ed25519 public key (the portal's form)."""
        return public_key_b64(self.seed)

    @property
    def public_key_der(self) -> str:
        """The same key as base64 DER SubjectPublicKeyInfo."""
        raw = base64.b64decode(self.public_key)
        return base64.b64encode(SPKI_PREFIX + raw).decode("ascii")

    @property
    def public_key_pem(self) -> str:
        return ("-----BEGIN PUBLIC KEY-----\n" + self.public_key_der
                + "\n-----END PUBLIC KEY-----\n")

    # -- test controls -----------------------------------------------------------------

    def fail_next(self, status: int = 500, count: int = 1, *, code: str | None = None,
                  title: str | None = None, retry_after: float | None = None,
                  action: str | None = None) -> None:
        """Answer the next ``count`` REST requests (of ``action``, if given: ``dial``,
        ``answer``, ``speak`` ...) with a Telnyx-shaped error."""
        self._rest.fail_next(status, count, code, title, retry_after, action)

    def sign_with(self, seed: bytes | None) -> None:
        """Sign webhooks with another key (``None`` restores the account key)."""
        self._webhooks.signing_seed = self.seed if seed is None else seed

    @property
    def timestamp_skew(self) -> float:
        return self._webhooks.timestamp_skew

    @timestamp_skew.setter
    def timestamp_skew(self, seconds: float) -> None:
        """Shift ``telnyx-timestamp`` (the signature still matches the shifted value)."""
        self._webhooks.timestamp_skew = seconds

    @property
    def signature_override(self) -> str | None:
        return self._webhooks.signature_override

    @signature_override.setter
    def signature_override(self, value: str | None) -> None:
        self._webhooks.signature_override = value

    def tamper_next_webhook(self, count: int = 1) -> None:
        self._webhooks.tamper_remaining += count

    def webhook_url_for(self, call: FakeCall | None = None) -> str:
        url = (call.webhook_url if call is not None else None) or self.connection_webhook_url
        if not url:
            raise RuntimeError("no webhook URL: pass connection_webhook_url")
        return url

    async def send_webhook(self, event_type: str, payload: Mapping[str, Any], *,
                           url: str | None = None, sign: bool = True,
                           timestamp: str | None = None, signature: str | None = None,
                           event_id: str | None = None,
                           body_override: bytes | AsyncIterable[bytes] | None = None,
                           raw_body: bytes | None = None,
                           extra_headers: Mapping[str, str] | None = None,
                           drop_headers: tuple[str, ...] = ()) -> httpx.Response:
        """Send one arbitrary (signed, unsigned or mis-signed) event to the gateway.

        ``body_override`` replaces the body on the wire (the signature still covers the
        event); an async iterable of chunks makes a slow upload. ``raw_body`` replaces the
        envelope and is what gets signed (a validly signed malformed body).
        """
        target_url = url or self.webhook_url_for()
        body = raw_body if raw_body is not None else envelope(
            event_type, payload, event_id=event_id or str(uuid.uuid4()), attempt=1,
            delivered_to=target_url)
        headers = self._webhooks.headers_for(body, sign_it=sign, timestamp=timestamp)
        if signature is not None:
            headers["telnyx-signature-ed25519"] = signature
        headers.update(extra_headers or {})
        for name in drop_headers:
            headers.pop(name, None)
        _, response = await self._webhooks.post(
            target_url, body if body_override is None else body_override, headers,
            kind="raw", call=None, raise_errors=True)
        assert response is not None
        return response

    async def replay(self, webhook: SentWebhook) -> httpx.Response:
        """Send a recorded webhook again: same body, same timestamp, same signature."""
        headers = {k: v for k, v in webhook.headers.items() if k != "host"}
        _, response = await self._webhooks.post(webhook.url, webhook.body, headers,
                                                kind="raw", call=None, raise_errors=True)
        assert response is not None
        return response

    async def place_inbound(self, from_: str, to: str, *, callee: CalleeScript | None = None,
                            webhook_url: str | None = None) -> str:
        """Ring the gateway: ``call.initiated`` (incoming, parked) to the connection's
        webhook URL. Returns the call_control_id once that webhook has been answered; the
        call waits for ``answer``/``reject``/``hangup`` (or the caller gives up after
        ``Timings.inbound_answer_timeout``)."""
        call = self._new_call(direction="incoming", from_=from_, to=to,
                              callee=callee or self.callee,
                              webhook_url=webhook_url or self.connection_webhook_url,
                              state="parked")
        live = self._register(call)
        self._emit(call, "call.initiated", direction="incoming", state="parked",
                   caller_id_name="", start_time=time.strftime("%Y-%m-%dT%H:%M:%SZ"))
        live.lifecycle = self._spawn(self._inbound_patience(call, live),
                                     f"{call.call_control_id}:ringing")
        await self.wait_for(lambda: call.events("call.initiated"), self.timings.webhook_timeout,
                            what="call.initiated delivered")
        return call.call_control_id

    async def _inbound_patience(self, call: FakeCall, live: Live) -> None:
        try:
            await asyncio.wait_for(live.answered.wait(), self.timings.inbound_answer_timeout)
        except TimeoutError:
            if call.state == "parked":
                call.errors.append("inbound call was never answered")
                self._end(call, "originator_cancel", source="caller", by="caller")

    async def hangup(self, call_control_id: str) -> None:
        """The far end hangs up."""
        call = self.calls[call_control_id]
        source = "callee" if call.direction == "outgoing" else "caller"
        cause = "normal_clearing" if call.answered is not None else "originator_cancel"
        self._end(call, cause, source=source, by="callee")

    async def press(self, call_control_id: str, digits: str) -> None:
        """The callee presses keys now (webhooks, plus stream frames when streaming)."""
        call = self.calls[call_control_id]
        call.callee_said.append(f"dtmf:{digits}")
        await self._press(call, self._live[call_control_id], digits)

    async def say(self, call_control_id: str, text: str, *, is_final: bool = True) -> None:
        """The callee's words as Telnyx transcription reports them (``call.transcription``),
        whether or not a transcription window is open."""
        call = self.calls[call_control_id]
        call.callee_said.append(text)
        self._emit(call, "call.transcription", transcription_data={
            "transcript": text, "is_final": is_final, "confidence": 0.9,
            "transcription_track": "inbound"})

    async def reconnect_stream(self, call_control_id: str) -> str:
        """Dial the call's stream URL again (new stream_id), as a restarted stream would."""
        call = self.calls[call_control_id]
        live = self._live[call_control_id]
        if live.session is not None and live.session.is_open:
            raise RuntimeError(f"{call_control_id} still has an open stream; drop it first")
        if not call.stream_params.get("stream_url"):
            raise RuntimeError(f"{call_control_id} never had a stream")
        await self._open_stream(call, live, call.stream_params)
        stream = call.stream
        assert stream is not None
        return stream.stream_id

    async def wait_for_stream(self, call_control_id: str, timeout: float = 5.0,  # noqa: ASYNC109
                              ) -> StreamRecord:
        """Wait until the call's stream is up (``start`` sent); its record."""
        await self._wait_stream_up(call_control_id, timeout)
        stream = self.calls[call_control_id].stream
        assert stream is not None
        return stream
