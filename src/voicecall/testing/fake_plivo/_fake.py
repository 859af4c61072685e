"""``FakePlivo``: the loopback server, its lifecycle and the public test API.

Everything runs as tasks in the test's event loop (uvicorn included, no threads);
``aclose`` cancels them all. Task failures that are bugs in the fake (not gateway
misbehaviour, which becomes a recorded ``PlivoError``) are collected in
``task_errors`` and re-raised when the ``async with`` block exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import socket
import time
import uuid
from collections.abc import AsyncIterable, Callable, Mapping, Sequence
from types import TracebackType

import httpx
import uvicorn

from voicecall.carriers.plivo.media import StreamFormat
from voicecall.carriers.plivo.signature import compute_v3
from voicecall.testing.fake_plivo._engine import CallEngine, CallOver, Live
from voicecall.testing.fake_plivo._model import (
    CalleeRun,
    CalleeScript,
    FakeCall,
    FakeEvent,
    RestRequest,
    SentWebhook,
    StreamRecord,
    Timings,
)
from voicecall.testing.fake_plivo._rest import RestApi
from voicecall.testing.fake_plivo._webhooks import Router, WebhookSender
from voicecall.testing.fake_twilio._fake import _Server

_AUTH_ID = re.compile(r"^(MA|SA)[A-Z0-9]{18}$")


def _digits(number: str) -> str:
    return number[1:] if number.startswith("+") else number


class FakePlivo(CallEngine):
    """A loopback Plivo: REST API in, signed callbacks and audio streams out."""

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
        self.raise_task_errors = raise_task_errors
        self.calls: dict[str, FakeCall] = {}
        self.requests: list[RestRequest] = []
        self.webhooks: list[SentWebhook] = []
        self.events: list[FakeEvent] = []
        self.task_errors: list[BaseException] = []
        self._live: dict[str, Live] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._duplicates: dict[str, int] = {}
        self._router = Router(public_to_local=public_to_local, url_rewrite=url_rewrite,
                              ws_url_rewrite=ws_url_rewrite, preserve_host=preserve_host)
        self._webhooks = WebhookSender(auth_token, self._router, self.timings,
                                       record=self._record_webhook)
        self._rest = RestApi(self)
        self._server: _Server | None = None
        self._serve_task: asyncio.Task[None] | None = None
        self._port: int | None = None
        self._t0 = time.monotonic()
        self._closing = False

    # -- lifecycle -------------------------------------------------------------------

    async def __aenter__(self) -> FakePlivo:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()
        errors = [e for e in self.task_errors if isinstance(e, Exception)]
        if exc_type is None and errors and self.raise_task_errors:
            raise ExceptionGroup("FakePlivo background tasks failed", errors)

    async def start(self) -> None:
        if self._serve_task is not None:
            return
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self._port = sock.getsockname()[1]
        config = uvicorn.Config(self._rest.app, log_level="warning", access_log=False,
                                lifespan="off", ws="none", timeout_graceful_shutdown=1)
        self._server = _Server(config)
        await self._webhooks.start()
        self._serve_task = asyncio.get_running_loop().create_task(
            self._server.serve(sockets=[sock]), name="fake-plivo:serve")
        while not self._server.started:
            if self._serve_task.done():
                await self._webhooks.aclose()
                raise RuntimeError("FakePlivo failed to start")
            await asyncio.sleep(0.005)
        self._log(None, "fake.started", api_base=self.api_base)

    async def aclose(self) -> None:
        if self._serve_task is None or self._closing:
            return
        for live in list(self._live.values()):
            if live.session is not None and live.session.is_open:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(live.session.stop(), 1.0)
        self._closing = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for live in self._live.values():
            if live.session is not None and live.session.ws is not None:
                live.session.ws.transport.abort()
        assert self._server is not None
        self._server.stop()
        await asyncio.gather(self._serve_task, return_exceptions=True)
        await self._webhooks.aclose()

    @property
    def base_url(self) -> str:
        if self._port is None:
            raise RuntimeError("FakePlivo is not running")
        return f"http://127.0.0.1:{self._port}"

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

    async def speak(self, call_uuid: str, speech: str | bytes) -> None:
        """The callee says something now on the audio stream (text -> script audio)."""
        call, session = await self._session(call_uuid)
        if isinstance(speech, str):
            call.callee_said.append(speech)
            speech = self._audio_for(call, speech)
        session.speak(speech)

    async def press(self, call_uuid: str, digits: str) -> None:
        """The callee presses keys now; sent as ``dtmf`` events on the audio stream."""
        call, session = await self._session(call_uuid)
        call.callee_said.append(f"dtmf:{digits}")
        await session.press(digits)

    async def drop_stream(self, call_uuid: str) -> None:
        """Kill the audio stream's TCP connection (no ``stop``); the call stays up."""
        _, session = await self._session(call_uuid)
        session.drop()
        await session.closed.wait()

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
        call = self.calls[call_uuid]

        def up() -> bool:
            live = self._live[call_uuid].session
            return live is not None and live.is_open and live.started

        await self.wait_for(up, timeout, what=f"{call_uuid} audio stream up")
        stream = call.stream
        assert stream is not None
        return stream

    async def wait_for(self, predicate: Callable[[], object], timeout: float = 5.0, *,  # noqa: ASYNC109
                       interval: float = 0.005, what: str | None = None) -> None:
        """Poll ``predicate`` until it is truthy; TimeoutError names the last events."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not predicate():
            if asyncio.get_running_loop().time() > deadline:
                tail = "\n".join(f"  {e.at:7.3f} {e.call_uuid or '-'} {e.kind} {e.data}"
                                 for e in self.events[-15:])
                raise TimeoutError(f"condition {what or predicate!r} not met within "
                                   f"{timeout}s; last fake events:\n{tail}")
            await asyncio.sleep(interval)

    async def wait_for_status(self, call_uuid: str, *statuses: str,
                              timeout: float = 5.0) -> FakeCall:  # noqa: ASYNC109
        call = self.calls[call_uuid]
        await self.wait_for(lambda: call.status in statuses, timeout,
                            what=f"{call_uuid} status in {statuses}")
        return call

    @property
    def latest_call(self) -> FakeCall:
        if not self.calls:
            raise LookupError("no calls yet")
        return next(reversed(self.calls.values()))
