"""``FakePlivo``: V2/V3 signing knobs, callback retries and XML-driven calls.

Server, lifecycle and the shared stream controls: ``fake_carrier._server``.
"""

from __future__ import annotations

import dataclasses
import re
import uuid
from collections.abc import AsyncIterable, Callable, Mapping, Sequence

import httpx

from voicecall.carriers.plivo.media import StreamFormat
from voicecall.carriers.plivo.signature import compute_v3
from voicecall.testing.fake_plivo._engine import CallEngine, CallOver, Live
from voicecall.testing.fake_plivo._model import (
    CalleeRun,
    CalleeScript,
    FakeCall,
    RestRequest,
    SentWebhook,
    StreamRecord,
    Timings,
)
from voicecall.testing.fake_plivo._rest import RestApi
from voicecall.testing.fake_plivo._webhooks import Router, WebhookSender

_AUTH_ID = re.compile(r"^(MA|SA)[A-Z0-9]{18}$")


def _digits(number: str) -> str:
    return number[1:] if number.startswith("+") else number


class FakePlivo(CallEngine):
    """A loopback Plivo: REST API in, signed callbacks and audio streams out."""

    fake_name = "FakePlivo"
    task_prefix = "fake-plivo"
    event_call_key = "call_uuid"
    stream_noun = "audio stream"

    _rest: RestApi

    def __init__(self, auth_id: str, auth_token: str, *,
                 callee: CalleeScript | None = None,
                 timings: Timings | None = None,
                 realtime: bool | None = None,
                 public_to_local: Mapping[str, str] | None = None,
                 url_rewrite: Callable[[str], str] | None = None,
                 ws_url_rewrite: Callable[[str], str] | None = None,
                 preserve_host: bool = True,
                 force_stream_format: StreamFormat | None = None,
                 raise_task_errors: bool = True) -> None:
        super().__init__(raise_task_errors=raise_task_errors)
        if not _AUTH_ID.match(auth_id):
            raise ValueError("auth_id must be 'MA' or 'SA' followed by 18 upper-case "
                             "letters or digits")
        self.auth_id = auth_id
        self.auth_token = auth_token
        self.callee = callee or CalleeScript()
        self.callees: dict[str, CalleeScript] = {}
        self.timings = timings or Timings()
        if realtime is not None:
            self.timings = dataclasses.replace(self.timings, realtime=realtime)
        self.force_stream_format = force_stream_format
        self.requests: list[RestRequest] = []
        self.webhooks: list[SentWebhook] = []
        self._live: dict[str, Live] = {}
        self._duplicates: dict[str, int] = {}
        self._router = Router(public_to_local=public_to_local, url_rewrite=url_rewrite,
                              ws_url_rewrite=ws_url_rewrite, preserve_host=preserve_host)
        self._webhooks = WebhookSender(auth_token, self._router, self.timings,
                                       record=self._record_webhook)
        self._rest = RestApi(self)

    # -- the API base -----------------------------------------------------------------

    @property
    def api_base(self) -> str:
        """What the gateway uses instead of ``https://api.plivo.com`` (``plivo.apiBaseUrl``)."""
        return self.base_url

    # -- test controls ---------------------------------------------------------------

    def fail_next(self, status: int = 500, count: int = 1, *, error: str | None = None,
                  retry_after: float | None = None) -> None:
        """Answer the next ``count`` REST requests with a Plivo-shaped error."""
        self._rest.fail_next(status, count, error, retry_after)

    def sign_with(self, token: str | None) -> None:
        """Sign callbacks with ``token`` (a wrong one, say); ``None`` restores the real one."""
        self._webhooks.signing_token = self.auth_token if token is None else token

    def sign_also_with(self, tokens: Sequence[str]) -> None:
        """More auth tokens: ``X-Plivo-Signature-V3`` then holds one signature per token."""
        self._webhooks.extra_tokens = list(tokens)

    def signature_versions(self, *, v3: bool = True, v2: bool = True) -> None:
        """Which signature header families callbacks carry (Plivo sends both)."""
        self._webhooks.send_v3 = v3
        self._webhooks.send_v2 = v2

    @property
    def signature_override(self) -> str | None:
        return self._webhooks.signature_override

    @signature_override.setter
    def signature_override(self, value: str | None) -> None:
        self._webhooks.signature_override = value

    def tamper_next_webhook(self, count: int = 1) -> None:
        self._webhooks.tamper_remaining += count

    def retry_next(self, kind: str, count: int = 1) -> None:
        """Deliver the next ``count`` callbacks of ``kind`` twice, as Plivo's retry would
        (same URL and body, fresh nonce and signature; recorded as ``<kind>-retry``)."""
        self._duplicates[kind] = self._duplicates.get(kind, 0) + count

    def sign(self, url: str, params: Mapping[str, str] | None, nonce: str,
             method: str = "POST") -> str:
        """The V3 signature Plivo would send (current token)."""
        return compute_v3(self._webhooks.signing_token, url, nonce, params, method=method)

    async def send_webhook(self, url: str, params: Mapping[str, str] | None = None, *,
                           method: str = "POST", sign: bool = True,
                           nonce: str | None = None,
                           headers: Mapping[str, str] | None = None,
                           drop_headers: Sequence[str] = (),
                           body_override: bytes | AsyncIterable[bytes] | None = None,
                           ) -> httpx.Response:
        """Send one arbitrary (signed, unsigned or mis-signed) request to the gateway.

        ``headers`` replace the signed ones (a forged signature, say); ``drop_headers``
        removes some (V3 only, to test the V2 fallback).
        """
        _, response = await self._webhooks.deliver(
            "raw", url, dict(params or {}), method=method, sign=sign, nonce=nonce,
            headers_override=headers, drop_headers=drop_headers, body=body_override,
            raise_errors=True)
        assert response is not None
        return response

    async def replay(self, webhook: SentWebhook, *, fresh_nonce: bool = False
                     ) -> httpx.Response:
        """Send a recorded callback again.

        By default byte for byte (same nonce and signatures: an attacker's replay);
        ``fresh_nonce`` re-signs it with a new nonce, as Plivo's own retry would.
        """
        if fresh_nonce:
            return await self.send_webhook(webhook.url, None if webhook.method == "GET"
                                           else webhook.params, method=webhook.method)
        keep = {k: v for k, v in webhook.headers.items()
                if k.lower().startswith("x-plivo-signature")}
        return await self.send_webhook(
            webhook.url, None if webhook.method == "GET" else webhook.params,
            method=webhook.method, sign=False, headers=keep)

    async def place_inbound(self, from_: str, to: str, answer_url: str, *,
                            hangup_url: str | None = None, callee: CalleeScript | None = None,
                            method: str = "POST") -> str:
        """Ring the gateway: fetch ``answer_url`` (CallStatus=ringing) and run its XML.

        Returns the CallUUID once the answer URL has been answered; the call goes on
        in the background. ``hangup_url`` is the Plivo application's hangup URL.
        """
        call = FakeCall(call_uuid=str(uuid.uuid4()), request_uuid=None, direction="inbound",
                        from_=_digits(from_), to=_digits(to), status="ringing",
                        callee=CalleeRun(callee or self.callee), answer_url=answer_url,
                        answer_method=method, hangup_url=hangup_url)
        live = self._register(call)
        try:
            doc = await self._fetch_xml(call, "answer", answer_url, method, {"Event": "StartApp"})
        except CallOver:
            return call.call_uuid
        live.executor = self._spawn(self._execute(call, doc, "answer"),
                                    f"{call.call_uuid}:xml")
        return call.call_uuid

    async def hangup(self, call_uuid: str) -> None:
        """The far end hangs up (or, before answering, declines)."""
        call = self.calls[call_uuid]
        source = "Callee" if call.direction == "outbound" else "Caller"
        if call.answered is not None:
            self._end(call, "completed", "NORMAL_CLEARING", by="callee", source=source)
        else:
            self._end(call, "cancel" if call.direction == "inbound" else "busy",
                      "ORIGINATOR_CANCEL" if call.direction == "inbound" else "USER_BUSY",
                      by="callee", source=source)

    async def reconnect_stream(self, call_uuid: str) -> str:
        """Dial the current ``<Stream>`` again with a new streamId."""
        call = self.calls[call_uuid]
        live = self._live[call_uuid]
        if live.stream is None:
            raise RuntimeError(f"{call_uuid} is not executing <Stream>")
        if live.session is not None and live.session.is_open:
            raise RuntimeError(f"{call_uuid} still has an open stream; drop it first")
        if not await self._open_stream(call, live):
            live.stream.done.set()
        stream = call.stream
        assert stream is not None
        return stream.stream_id

    async def wait_for_stream(self, call_uuid: str, timeout: float = 5.0,  # noqa: ASYNC109
                              ) -> StreamRecord:
        """Wait until the call's stream is up (``start`` sent); its record."""
        await self._wait_stream_up(call_uuid, timeout)
        stream = self.calls[call_uuid].stream
        assert stream is not None
        return stream

    async def wait_for_status(self, call_uuid: str, *statuses: str,
                              timeout: float = 5.0) -> FakeCall:  # noqa: ASYNC109
        call = self.calls[call_uuid]
        await self.wait_for(lambda: call.status in statuses, timeout,
                            what=f"{call_uuid} status in {statuses}")
        return call
