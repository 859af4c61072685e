"""``FakeTwilio``: Twilio's REST controls, signing knobs and TwiML-driven calls.

Server, lifecycle and the shared stream controls: ``fake_carrier._server``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import AsyncIterable, Callable, Mapping

import httpx

from voicecall.testing.fake_twilio._engine import (
    CallEngine,
    CallOver,
    Live,
    new_sid,
)
from voicecall.testing.fake_twilio._model import (
    CalleeRun,
    CalleeScript,
    FakeCall,
    RestRequest,
    SentWebhook,
    StreamRecord,
    Timings,
)
from voicecall.testing.fake_twilio._rest import API_VERSION, RestApi
from voicecall.testing.fake_twilio._webhooks import Router, WebhookSender

_ACCOUNT_SID = re.compile(r"^AC[0-9a-fA-F]{32}$")


class FakeTwilio(CallEngine):
    """A loopback Twilio: REST API in, signed webhooks and media streams out."""

    fake_name = "FakeTwilio"
    task_prefix = "fake-twilio"
    event_call_key = "call_sid"

    _rest: RestApi

    def __init__(self, account_sid: str, auth_token: str, *,
                 callee: CalleeScript | None = None,
                 timings: Timings | None = None,
                 realtime: bool | None = None,
                 public_to_local: Mapping[str, str] | None = None,
                 url_rewrite: Callable[[str], str] | None = None,
                 ws_url_rewrite: Callable[[str], str] | None = None,
                 preserve_host: bool = True,
                 forwarded_headers: bool = False,
                 forwarded_for: str = "54.172.60.1",
                 raise_task_errors: bool = True) -> None:
        super().__init__(raise_task_errors=raise_task_errors)
        if not _ACCOUNT_SID.match(account_sid):
            raise ValueError("account_sid must be 'AC' followed by 32 hex digits")
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.callee = callee or CalleeScript()
        self.callees: dict[str, CalleeScript] = {}  # by To number, for outbound calls
        self.timings = timings or Timings()
        if realtime is not None:
            self.timings = dataclasses.replace(self.timings, realtime=realtime)
        self.requests: list[RestRequest] = []
        self.webhooks: list[SentWebhook] = []
        self._live: dict[str, Live] = {}
        self._router = Router(public_to_local=public_to_local, url_rewrite=url_rewrite,
                              ws_url_rewrite=ws_url_rewrite, preserve_host=preserve_host)
        self._webhooks = WebhookSender(auth_token, self._router, self.timings,
                                       forwarded_headers=forwarded_headers,
                                       forwarded_for=forwarded_for,
                                       record=self._record_webhook)
        self._rest = RestApi(self)

    # -- the API base -----------------------------------------------------------------

    @property
    def api_base(self) -> str:
        """What the gateway's REST client uses instead of ``https://api.twilio.com/2010-04-01``."""
        return f"{self.base_url}/{API_VERSION}"

    # -- test controls ---------------------------------------------------------------

    def fail_next(self, status: int = 500, count: int = 1, *, code: int | None = None,
                  message: str | None = None, retry_after: float | None = None) -> None:
        """Answer the next ``count`` REST requests with a Twilio-shaped error."""
        self._rest.fail_next(status, count, code, message, retry_after)

    def sign_with(self, token: str | None) -> None:
        """Sign webhooks with ``token`` (a wrong one, say); ``None`` restores the real one."""
        self._webhooks.signing_token = self.auth_token if token is None else token

    @property
    def signature_override(self) -> str | None:
        """A literal ``X-Twilio-Signature`` for every webhook (per call: ``call.signature_override``)."""
        return self._webhooks.signature_override

    @signature_override.setter
    def signature_override(self, value: str | None) -> None:
        self._webhooks.signature_override = value

    def tamper_next_webhook(self, count: int = 1) -> None:
        """Corrupt the signature of the next ``count`` webhooks/stream upgrades."""
        self._webhooks.tamper_remaining += count

    def sign(self, url: str, params: Mapping[str, str] | None = None) -> str:
        """The signature Twilio would send for ``url`` + ``params`` (current token)."""
        return self._webhooks.signature_for(None, url, params)

    async def send_webhook(self, url: str, params: Mapping[str, str] | None = None, *,
                           method: str = "POST", sign: bool = True,
                           signature: str | None = None,
                           extra_headers: Mapping[str, str] | None = None,
                           body_override: bytes | AsyncIterable[bytes] | None = None,
                           ) -> httpx.Response:
        """Send one arbitrary (signed, unsigned or mis-signed) request to the gateway.

        ``body_override`` replaces the form body on the wire (the signature still
        covers ``params``); an async iterable of chunks makes a slow upload.
        """
        _, response = await self._webhooks.deliver(
            "raw", url, dict(params or {}), method=method, sign=sign, signature=signature,
            extra_headers=extra_headers, body=body_override, raise_errors=True)
        assert response is not None
        return response

    async def replay(self, webhook: SentWebhook, *, same_token: bool = False) -> httpx.Response:
        """Send a recorded webhook again with the same URL, params and signature.

        By default the unsigned ``I-Twilio-Idempotency-Token`` is fresh, as an attacker
        replaying a captured request could make it; ``same_token`` models Twilio's own retry.
        """
        dropped = {"Host", "Content-Type", "User-Agent", "Accept"}
        if not same_token:
            dropped.add("I-Twilio-Idempotency-Token")
        headers = {k: v for k, v in webhook.headers.items() if k not in dropped}
        return await self.send_webhook(
            webhook.url, None if webhook.method == "GET" else webhook.params,
            method=webhook.method, sign=webhook.signature is not None,
            signature=webhook.signature, extra_headers=headers)

    async def place_inbound(self, from_: str, to: str, voice_url: str, *,
                            callee: CalleeScript | None = None, method: str = "POST",
                            status_callback: str | None = None,
                            status_callback_events: tuple[str, ...] = ("completed",),
                            status_callback_method: str = "POST",
                            params: Mapping[str, str] | None = None) -> str:
        """Ring the gateway: request ``voice_url`` (CallStatus=ringing) and run its TwiML.

        Returns the CallSid once the voice webhook has been answered; the call goes
        on in the background.
        """
        call = FakeCall(sid=new_sid("CA"), account_sid=self.account_sid, direction="inbound",
                        from_=from_, to=to, status="ringing",
                        callee=CalleeRun(callee or self.callee), url=voice_url, method=method,
                        status_callback=status_callback,
                        status_callback_method=status_callback_method,
                        status_callback_events=status_callback_events,
                        extra_params=dict(params or {}))
        live = self._register(call)
        try:
            doc = await self._fetch_twiml(call, "voice", voice_url, method)
        except CallOver:
            return call.sid
        live.executor = self._spawn(self._execute(call, doc, voice_url), f"{call.sid}:twiml")
        return call.sid

    async def hangup(self, call_sid: str) -> None:
        """The far end hangs up (or, before answering, declines / gives up)."""
        call = self.calls[call_sid]
        if call.answered is not None:
            status = "completed"
        else:
            status = "canceled" if call.direction == "inbound" else "busy"
        self._end(call, status, by="callee")

    async def drop_stream(self, call_sid: str, *, next_verb: bool = False) -> None:
        """Kill the media stream's TCP connection (no ``stop``); the call stays up.

        ``next_verb``: ``<Connect>`` ends and the document goes on to its next verb,
        as Twilio does when a stream's socket is lost; otherwise the fake waits for
        ``reconnect_stream``.
        """
        await super().drop_stream(call_sid)
        live = self._live[call_sid]
        if next_verb and live.connect is not None:
            live.connect.done.set()

    async def reconnect_stream(self, call_sid: str) -> str:
        """Dial the current ``<Connect><Stream>`` again with a new streamSid."""
        call = self.calls[call_sid]
        live = self._live[call_sid]
        if live.connect is None:
            raise RuntimeError(f"{call_sid} is not executing <Connect><Stream>")
        if live.session is not None and live.session.is_open:
            raise RuntimeError(f"{call_sid} still has an open stream; drop it first")
        if not await self._open_stream(call, live):
            live.connect.done.set()
        stream = call.stream
        assert stream is not None
        return stream.stream_sid

    async def wait_for_stream(self, call_sid: str, timeout: float = 5.0,  # noqa: ASYNC109
                              ) -> StreamRecord:
        """Wait until the call's media stream is up (``start`` sent); its record."""
        await self._wait_stream_up(call_sid, timeout)
        stream = self.calls[call_sid].stream
        assert stream is not None
        return stream

    async def wait_for_status(self, call_sid: str, *statuses: str,
                              timeout: float = 5.0) -> FakeCall:  # noqa: ASYNC109
        call = self.calls[call_sid]
        await self.wait_for(lambda: call.status in statuses, timeout,
                            what=f"{call_sid} status in {statuses}")
        return call
