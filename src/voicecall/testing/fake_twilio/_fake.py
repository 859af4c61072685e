"""``FakeTwilio``: the loopback server, its lifecycle and the public test API.

Everything runs as tasks in the test's event loop (uvicorn included, no threads);
``aclose`` cancels them all. Task failures that are bugs in the fake (not gateway
misbehaviour, which becomes a recorded Twilio error) are collected in
``task_errors`` and re-raised when the ``async with`` block exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import socket
import time
from collections.abc import AsyncIterable, Callable, Iterator, Mapping
from types import TracebackType

import httpx
import uvicorn

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
    FakeEvent,
    RestRequest,
    SentWebhook,
    StreamRecord,
    Timings,
)
from voicecall.testing.fake_twilio._rest import API_VERSION, RestApi
from voicecall.testing.fake_twilio._webhooks import Router, WebhookSender

_ACCOUNT_SID = re.compile(r"^AC[0-9a-fA-F]{32}$")


class _Server(uvicorn.Server):
    """uvicorn without signal capture and without its 100 ms polling on shutdown.

    Tests start and stop many fakes; the stock main loop and shutdown each sleep in
    0.1 s steps, which would add ~0.2 s to every test.
    """

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._stop = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the test runner owns SIGINT

    def stop(self) -> None:
        self.should_exit = True
        self._stop.set()

    async def main_loop(self) -> None:
        await self._stop.wait()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        for connection in list(self.server_state.connections):
            connection.shutdown()  # idle keep-alive connections close now
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.config.timeout_graceful_shutdown or 1)
        # uvicorn offers the connection set but no event for "all closed": poll briefly.
        while self.server_state.connections and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
        for task in list(self.server_state.tasks):
            task.cancel()
        for server in self.servers:
            await server.wait_closed()


class FakeTwilio(CallEngine):
    """A loopback Twilio: REST API in, signed webhooks and media streams out."""

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
        if not _ACCOUNT_SID.match(account_sid):
            raise ValueError("account_sid must be 'AC' followed by 32 hex digits")
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.callee = callee or CalleeScript()
        self.callees: dict[str, CalleeScript] = {}  # by To number, for outbound calls
        self.timings = timings or Timings()
        if realtime is not None:
            self.timings = dataclasses.replace(self.timings, realtime=realtime)
        self.raise_task_errors = raise_task_errors
        self.calls: dict[str, FakeCall] = {}
        self.requests: list[RestRequest] = []
        self.webhooks: list[SentWebhook] = []
        self.events: list[FakeEvent] = []
        self.task_errors: list[BaseException] = []
        self._live: dict[str, Live] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._router = Router(public_to_local=public_to_local, url_rewrite=url_rewrite,
                              ws_url_rewrite=ws_url_rewrite, preserve_host=preserve_host)
        self._webhooks = WebhookSender(auth_token, self._router, self.timings,
                                       forwarded_headers=forwarded_headers,
                                       forwarded_for=forwarded_for,
                                       record=self._record_webhook)
        self._rest = RestApi(self)
        self._server: _Server | None = None
        self._serve_task: asyncio.Task[None] | None = None
        self._port: int | None = None
        self._t0 = time.monotonic()
        self._closing = False

    # -- lifecycle -------------------------------------------------------------------

    async def __aenter__(self) -> FakeTwilio:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()
        # Surface bugs in the fake itself, unless the test is already failing anyway.
        errors = [e for e in self.task_errors if isinstance(e, Exception)]
        if exc_type is None and errors and self.raise_task_errors:
            raise ExceptionGroup("FakeTwilio background tasks failed", errors)

    async def start(self) -> None:
        if self._serve_task is not None:
            return
        # IPPROTO_TCP (as in gateway.server._bind) makes asyncio set TCP_NODELAY on
        # accepted sockets; without it every kept-alive response waits ~40 ms for an ACK.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self._port = sock.getsockname()[1]
        config = uvicorn.Config(self._rest.app, log_level="warning", access_log=False,
                                lifespan="off", ws="none", timeout_graceful_shutdown=1)
        self._server = _Server(config)
        await self._webhooks.start()
        self._serve_task = asyncio.get_running_loop().create_task(
            self._server.serve(sockets=[sock]), name="fake-twilio:serve")
        while not self._server.started:
            if self._serve_task.done():
                await self._webhooks.aclose()
                raise RuntimeError("FakeTwilio failed to start")
            await asyncio.sleep(0.005)
        self._log(None, "fake.started", api_base=self.api_base)

    async def aclose(self) -> None:
        if self._serve_task is None or self._closing:
            return
        # Be polite to the gateway (stop + close) but never wait long for it.
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
            raise RuntimeError("FakeTwilio is not running")
        return f"http://127.0.0.1:{self._port}"

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

    async def speak(self, call_sid: str, speech: str | bytes) -> None:
        """The callee says something now on the media stream (text -> script audio)."""
        call, session = await self._session(call_sid)
        if isinstance(speech, str):
            call.callee_said.append(speech)
            speech = self._audio_for(call, speech)
        session.speak(speech)

    async def press(self, call_sid: str, digits: str) -> None:
        """The callee presses keys now; sent as ``dtmf`` frames on the media stream."""
        call, session = await self._session(call_sid)
        call.callee_said.append(f"dtmf:{digits}")
        await session.press(digits)

    async def drop_stream(self, call_sid: str, *, next_verb: bool = False) -> None:
        """Kill the media stream's TCP connection (no ``stop``); the call stays up.

        ``next_verb``: ``<Connect>`` ends and the document goes on to its next verb,
        as Twilio does when a stream's socket is lost; otherwise the fake waits for
        ``reconnect_stream``.
        """
        _, session = await self._session(call_sid)
        session.drop()
        await session.closed.wait()
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
        call = self.calls[call_sid]

        def up() -> bool:
            live = self._live[call_sid].session
            return live is not None and live.is_open and live.started

        await self.wait_for(up, timeout, what=f"{call_sid} media stream up")
        stream = call.stream
        assert stream is not None
        return stream

    # The timeout parameter is part of the documented test API (mirrors asyncio.wait_for).
    async def wait_for(self, predicate: Callable[[], object], timeout: float = 5.0, *,  # noqa: ASYNC109
                       interval: float = 0.005, what: str | None = None) -> None:
        """Poll ``predicate`` until it is truthy; TimeoutError names the last events."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not predicate():
            if asyncio.get_running_loop().time() > deadline:
                tail = "\n".join(f"  {e.at:7.3f} {e.call_sid or '-'} {e.kind} {e.data}"
                                 for e in self.events[-15:])
                raise TimeoutError(f"condition {what or predicate!r} not met within "
                                   f"{timeout}s; last fake events:\n{tail}")
            await asyncio.sleep(interval)

    async def wait_for_status(self, call_sid: str, *statuses: str,
                              timeout: float = 5.0) -> FakeCall:  # noqa: ASYNC109
        call = self.calls[call_sid]
        await self.wait_for(lambda: call.status in statuses, timeout,
                            what=f"{call_sid} status in {statuses}")
        return call

    @property
    def latest_call(self) -> FakeCall:
        if not self.calls:
            raise LookupError("no calls yet")
        return next(reversed(self.calls.values()))
