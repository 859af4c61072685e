"""``FakeTwilio``: lifecycle, call simulation and the TwiML interpreter.

Everything runs as tasks in the test's event loop (uvicorn included, no threads);
``aclose`` cancels them all. Task failures that are bugs in the fake (not gateway
misbehaviour, which becomes a recorded Twilio error) are collected in
``task_errors`` and re-raised when the ``async with`` block exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import socket
import time
from collections.abc import AsyncIterable, Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, NoReturn
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx
import uvicorn

from voicecall.testing.fake_twilio._audio import tone_burst
from voicecall.testing.fake_twilio._model import (
    AppError,
    CalleeRun,
    CalleeScript,
    FakeCall,
    FakeEvent,
    Press,
    RestRequest,
    SentWebhook,
    StreamRecord,
    Timings,
)
from voicecall.testing.fake_twilio._rest import API_VERSION, CreateCall, RestApi, rfc2822
from voicecall.testing.fake_twilio._stream import StreamSession
from voicecall.testing.fake_twilio._twiml import (
    Connect,
    Enqueue,
    Gather,
    Hangup,
    Pause,
    Play,
    Redirect,
    Reject,
    Say,
    Stream,
    TwimlError,
    Verb,
    parse_twiml,
)
from voicecall.testing.fake_twilio._webhooks import FakeRoutingError, Router, WebhookSender

APP_ERROR_SPEECH = "We are sorry, an application error has occurred. Goodbye."
CONFIDENCE = "0.92"
_ACCOUNT_SID = re.compile(r"^AC[0-9a-fA-F]{32}$")
_PLAY_DIGITS = re.compile(r"^[0-9A-D*#wW]+$")  # Twilio error 13430's documented set
_MAX_TWIML_BYTES = 64 * 1024  # error 11750


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
        while self.server_state.connections and loop.time() < deadline:
            await asyncio.sleep(0.005)
        for task in list(self.server_state.tasks):
            task.cancel()
        for server in self.servers:
            await server.wait_closed()


class _CallOver(Exception):
    """Unwinds the TwiML executor: the call ended or the document can't go on."""


@dataclass
class _Connect:
    stream: Stream
    done: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class _Live:
    """Per-call runtime state (tasks and sockets), kept out of the recorded ``FakeCall``."""

    executor: asyncio.Task[None] | None = None
    session: StreamSession | None = None
    connect: _Connect | None = None
    callbacks: asyncio.Queue[dict[str, str]] = field(default_factory=asyncio.Queue)
    callback_task: asyncio.Task[None] | None = None


_Next = tuple[str, str | None]  # (TwiML document, URL it came from)


def _sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


class FakeTwilio:
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
            self.timings.realtime = realtime
        self.raise_task_errors = raise_task_errors
        self.calls: dict[str, FakeCall] = {}
        self.requests: list[RestRequest] = []
        self.webhooks: list[SentWebhook] = []
        self.events: list[FakeEvent] = []
        self.task_errors: list[BaseException] = []
        self._live: dict[str, _Live] = {}
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
        if exc_type is None and self.task_errors and self.raise_task_errors:
            raise ExceptionGroup("FakeTwilio background tasks failed",
                                 [e for e in self.task_errors if isinstance(e, Exception)])

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

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self.task_errors.append(exc)
            self._log(None, "fake.task_error", task=task.get_name(), error=repr(exc))

    def _log(self, call_sid: str | None, kind: str, **data: Any) -> None:
        self.events.append(FakeEvent(time.monotonic() - self._t0, call_sid, kind, data))

    def _record_webhook(self, sent: SentWebhook, call: FakeCall | None) -> None:
        self.webhooks.append(sent)
        if call is not None:
            call.webhooks.append(sent)
        self._log(call.sid if call else None, "webhook", webhook=sent.kind, url=sent.url,
                  status=sent.status_code, error=sent.error)

    # -- test controls ---------------------------------------------------------------

    def fail_next(self, status: int = 500, *, count: int = 1, code: int | None = None,
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
        call = FakeCall(sid=_sid("CA"), account_sid=self.account_sid, direction="inbound",
                        from_=from_, to=to, status="ringing",
                        callee=CalleeRun(callee or self.callee), url=voice_url, method=method,
                        status_callback=status_callback,
                        status_callback_method=status_callback_method,
                        status_callback_events=status_callback_events,
                        extra_params=dict(params or {}))
        live = self._register(call)
        try:
            doc = await self._fetch_twiml(call, "voice", voice_url, method)
        except _CallOver:
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
        call, session = self._session(call_sid)
        if isinstance(speech, str):
            call.callee_said.append(speech)
            speech = self._audio_for(call, speech)
        session.speak(speech)

    async def press(self, call_sid: str, digits: str) -> None:
        """The callee presses keys now; sent as ``dtmf`` frames on the media stream."""
        call, session = self._session(call_sid)
        call.callee_said.append(f"dtmf:{digits}")
        await session.press(digits)

    async def drop_stream(self, call_sid: str) -> None:
        """Kill the media stream's TCP connection (no ``stop``); the call stays up."""
        _, session = self._session(call_sid)
        session.drop()
        await session.closed.wait()

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

    # -- calls -----------------------------------------------------------------------

    def _register(self, call: FakeCall) -> _Live:
        self.calls[call.sid] = call
        live = self._live[call.sid] = _Live()
        self._log(call.sid, "call.created", direction=call.direction, from_=call.from_,
                  to=call.to)
        return live

    def _session(self, call_sid: str) -> tuple[FakeCall, StreamSession]:
        call = self.calls[call_sid]
        session = self._live[call_sid].session
        if session is None or not session.is_open:
            raise RuntimeError(f"{call_sid} has no open media stream")
        return call, session

    def _audio_for(self, call: FakeCall, text: str) -> bytes:
        return (call.callee.script.audio or tone_burst)(text)

    def _create_outbound(self, req: CreateCall) -> FakeCall:
        call = FakeCall(sid=_sid("CA"), account_sid=self.account_sid,
                        direction="outbound-api", from_=req.from_, to=req.to, status="queued",
                        callee=CalleeRun(self.callees.get(req.to, self.callee)),
                        url=req.url, method=req.method, twiml=req.twiml,
                        fallback_url=req.fallback_url, fallback_method=req.fallback_method,
                        status_callback=req.status_callback,
                        status_callback_method=req.status_callback_method,
                        status_callback_events=req.status_callback_events,
                        timeout=req.timeout, send_digits=req.send_digits,
                        create_params=req.params)
        live = self._register(call)
        live.executor = self._spawn(self._outbound(call), f"{call.sid}:call")
        return call

    async def _outbound(self, call: FakeCall) -> None:
        script = call.callee.script
        try:
            self._callback(call, "initiated")
            await asyncio.sleep(self.timings.ring)
            call.status = "ringing"
            self._log(call.sid, "call.ringing")
            self._callback(call, "ringing")
            delay = self.timings.answer if script.answer_delay is None else script.answer_delay
            await asyncio.sleep(delay)
            if script.answer != "answer":
                self._end(call, script.answer, by="callee")
                return
            self._answer(call)
            if call.send_digits:
                await self._play_digits(call, call.send_digits)
            if call.url is not None:
                doc = await self._fetch_twiml(call, "voice", call.url, call.method)
                await self._execute(call, doc, call.url)
            else:
                assert call.twiml is not None
                await self._execute(call, call.twiml, None)
        except _CallOver:
            pass

    def _answer(self, call: FakeCall) -> None:
        call.status = "in-progress"
        call.answered = time.time()
        self._log(call.sid, "call.answered")
        self._callback(call, "answered")

    def _end(self, call: FakeCall, status: str, *, by: str) -> None:
        """Make the call terminal now; stream teardown and the callback follow."""
        if call.is_terminal:
            return
        call.status = status
        call.ended = time.time()
        call.hung_up_by = by
        self._log(call.sid, "call.ended", status=status, by=by)
        live = self._live[call.sid]
        if live.executor is not None and live.executor is not asyncio.current_task():
            live.executor.cancel()
        if not self._closing:
            self._spawn(self._teardown(call, live), f"{call.sid}:teardown")

    async def _teardown(self, call: FakeCall, live: _Live) -> None:
        if live.session is not None:
            await live.session.stop()  # Twilio sends stop when the call ends
        self._callback(call, "completed")

    async def _api_hangup(self, call: FakeCall, status: str) -> None:
        if call.is_terminal:
            return
        if status == "canceled":
            # Only cancels calls that have not been answered; no effect on live ones.
            if call.status in ("queued", "ringing"):
                self._end(call, "canceled", by="api")
            return
        self._end(call, "completed" if call.answered is not None else "canceled", by="api")

    def _replace_twiml(self, call: FakeCall, *, twiml: str | None, url: str | None,
                       method: str) -> None:
        live = self._live[call.sid]
        old = live.executor
        live.executor = self._spawn(self._replacement(call, live, old, twiml, url, method),
                                    f"{call.sid}:twiml")

    async def _replacement(self, call: FakeCall, live: _Live, old: asyncio.Task[None] | None,
                           twiml: str | None, url: str | None, method: str) -> None:
        if old is not None and not old.done():
            old.cancel()
            await asyncio.wait([old])
        live.connect = None
        if live.session is not None:
            await live.session.stop()  # new TwiML tears down <Connect><Stream>
        self._log(call.sid, "twiml.replaced", url=url)
        try:
            if url is not None:
                doc = await self._fetch_twiml(call, "voice", url, method)
                await self._execute(call, doc, url)
            else:
                assert twiml is not None
                await self._execute(call, twiml, None)
        except _CallOver:
            pass

    # -- webhooks --------------------------------------------------------------------

    def _base_params(self, call: FakeCall) -> dict[str, str]:
        params = {
            "AccountSid": call.account_sid, "ApiVersion": API_VERSION, "CallSid": call.sid,
            "CallStatus": call.status, "Called": call.to, "Caller": call.from_,
            "Direction": call.direction, "From": call.from_, "To": call.to,
        }
        params.update(call.extra_params)
        return params

    def _callback(self, call: FakeCall, event: str) -> None:
        if not call.status_callback or event not in call.status_callback_events:
            return
        status = {"initiated": "initiated", "ringing": "ringing",
                  "answered": "in-progress"}.get(event, call.status)
        params = self._base_params(call)
        params.update({"CallStatus": status, "CallbackSource": "call-progress-events",
                       "SequenceNumber": str(call.sequence),
                       "Timestamp": rfc2822(time.time()) or ""})
        if event == "completed":
            params["CallDuration"] = str(call.duration)
        call.sequence += 1
        live = self._live[call.sid]
        live.callbacks.put_nowait(params)
        if (live.callback_task is None or live.callback_task.done()) and not self._closing:
            live.callback_task = self._spawn(self._deliver_callbacks(call, live),
                                             f"{call.sid}:callbacks")

    async def _deliver_callbacks(self, call: FakeCall, live: _Live) -> None:
        # One at a time, in SequenceNumber order; the gateway must not rely on it anyway.
        assert call.status_callback is not None
        while not live.callbacks.empty():
            params = live.callbacks.get_nowait()
            try:
                sent, response = await self._webhooks.deliver(
                    "status", call.status_callback, params,
                    method=call.status_callback_method, call=call)
            except FakeRoutingError as exc:
                call.errors.append(AppError(11205, str(exc), "warning"))
                continue
            if response is None or not 200 <= response.status_code < 300:
                why = sent.error or f"HTTP {sent.status_code}"
                # 15003: Call Progress: Warning Response to Callback URL.
                call.errors.append(AppError(15003, f"status callback failed: {why}", "warning"))

    async def _fetch_twiml(self, call: FakeCall, kind: str, url: str, method: str,
                           extra: Mapping[str, str] | None = None) -> str:
        """Request TwiML from the gateway; any failure is an application error."""
        params = self._base_params(call)
        params.update(extra or {})
        error = await self._try_fetch(call, kind, url, method, params)
        if isinstance(error, str):
            return error
        if kind == "voice" and call.fallback_url and call.direction == "outbound-api":
            code, message = error
            params.update({"ErrorCode": str(code), "ErrorUrl": url})
            fallback = await self._try_fetch(call, "fallback", call.fallback_url,
                                             call.fallback_method, params)
            call.errors.append(AppError(code, message))
            if isinstance(fallback, str):
                return fallback
            error = fallback
        self._fail_app(call, *error)

    async def _try_fetch(self, call: FakeCall, kind: str, url: str, method: str,
                         params: dict[str, str]) -> str | tuple[int, str]:
        try:
            sent, response = await self._webhooks.deliver(kind, url, params, method=method,
                                                           call=call)
        except FakeRoutingError as exc:
            return 11205, str(exc)
        if response is None:
            timed_out = sent.error is not None and "Timeout" in sent.error
            return (11200 if timed_out else 11205), f"HTTP request to {url} failed: {sent.error}"
        if not 200 <= response.status_code < 300:
            return 11200, f"HTTP retrieval failure: {url} returned {response.status_code}"
        if len(response.content) > _MAX_TWIML_BYTES:
            return 11750, "TwiML response body too large"
        ctype = response.headers.get("content-type", "").lower()
        if "xml" not in ctype and "text/html" not in ctype:
            return 12300, f"Invalid Content-Type {ctype!r} for TwiML from {url}"
        return response.text

    def _fail_app(self, call: FakeCall, code: int, message: str) -> NoReturn:
        call.errors.append(AppError(code, message))
        if call.answered is not None or call.direction == "inbound":
            call.heard.append(APP_ERROR_SPEECH)
        self._log(call.sid, "call.application_error", code=code, message=message)
        self._end(call, "failed", by="error")
        raise _CallOver

    def _resolve(self, call: FakeCall, base: str | None, url: str | None) -> str:
        if url:
            parts = urlsplit(url)
            if parts.scheme in ("http", "https"):
                return url
            if base:
                return urljoin(base, url)
        elif base:
            return base  # Gather/Redirect default to the current document's URL
        self._fail_app(call, 11100, f"Invalid URL format: {url!r} (no document URL to resolve)")

    # -- TwiML interpreter -----------------------------------------------------------

    async def _execute(self, call: FakeCall, doc: str, doc_url: str | None) -> None:
        try:
            nxt: _Next | None = (doc, doc_url)
            while nxt is not None:
                nxt = await self._run_document(call, *nxt)
            # Falling off the end of the document hangs up, as on Twilio.
            self._end(call, "completed", by="twiml")
        except _CallOver:
            pass

    async def _run_document(self, call: FakeCall, doc: str, doc_url: str | None) -> _Next | None:
        try:
            verbs = parse_twiml(doc)
        except TwimlError as exc:
            self._fail_app(call, exc.code, exc.message)
        call.twiml_executed.append(doc)
        self._log(call.sid, "twiml", url=doc_url, verbs=[type(v).__name__ for v in verbs])
        for verb in verbs:
            if call.is_terminal:
                raise _CallOver
            call.verbs.append(type(verb).__name__)
            if call.status == "ringing":  # inbound, not answered yet
                if isinstance(verb, Reject):
                    # First-verb <Reject>: never answered; busy or no-answer per reason.
                    status = "busy" if verb.reason == "busy" else "no-answer"
                    self._end(call, status, by="twiml")
                    raise _CallOver
                self._answer(call)
            nxt = await self._run_verb(call, verb, doc_url)
            if nxt is not None:
                return nxt
        return None

    async def _run_verb(self, call: FakeCall, verb: Verb, doc_url: str | None) -> _Next | None:
        if isinstance(verb, Say | Pause | Play):
            await self._simple(call, verb)
        elif isinstance(verb, Hangup | Reject):
            self._end(call, "completed", by="twiml")
            raise _CallOver
        elif isinstance(verb, Redirect):
            url = self._resolve(call, doc_url, verb.url)
            return await self._fetch_twiml(call, "redirect", url, verb.method), url
        elif isinstance(verb, Gather):
            return await self._gather(call, verb, doc_url)
        elif isinstance(verb, Enqueue):
            call.enqueued.append(verb.name)
            self._log(call.sid, "call.enqueued", queue=verb.name)
            await asyncio.Event().wait()  # on hold until new TwiML or a hang-up
        elif isinstance(verb, Connect):
            return await self._connect(call, verb, doc_url)
        return None

    async def _simple(self, call: FakeCall, verb: Say | Pause | Play) -> None:
        t = self.timings
        if isinstance(verb, Say):
            call.heard.append(verb.text)
            self._log(call.sid, "say", text=verb.text)
            await asyncio.sleep(len(verb.text.split()) * t.say_per_word * max(1, verb.loop))
        elif isinstance(verb, Pause):
            await asyncio.sleep(verb.length * t.time_scale)
        elif verb.digits is not None:
            await self._play_digits(call, verb.digits)
        else:
            assert verb.url is not None
            call.played.append(verb.url)
            await asyncio.sleep(t.time_scale)

    async def _play_digits(self, call: FakeCall, digits: str) -> None:
        if not _PLAY_DIGITS.match(digits):
            # Twilio logs 13430 and skips the verb; the call goes on.
            call.errors.append(AppError(13430, f"Play: Invalid DTMF String {digits!r}",
                                        "warning"))
            return
        call.digits_played.append(digits)
        self._log(call.sid, "play.digits", digits=digits)
        seconds = sum(0.5 if d == "w" else 1.0 if d == "W" else 0.1 for d in digits)
        await asyncio.sleep(seconds * self.timings.time_scale)

    async def _gather(self, call: FakeCall, verb: Gather, doc_url: str | None) -> _Next | None:
        for child in verb.children:
            await self._simple(call, child)
        action = self._resolve(call, doc_url, verb.action)
        run = call.callee
        if run.should_hang_up():
            self._end(call, "completed", by="callee")
            raise _CallOver
        reply = run.next_reply()
        params: dict[str, str] | None = None
        if reply is not None:
            await asyncio.sleep(self.timings.reply_delay)
            if isinstance(reply, Press):
                call.callee_said.append(f"dtmf:{reply.digits}")
                if "dtmf" in verb.input:
                    params = {"Digits": reply.digits.rstrip(verb.finish_on_key or "#"),
                              "FinishedOnKey": verb.finish_on_key if reply.digits.endswith(
                                  verb.finish_on_key or "#") else ""}
            else:
                call.callee_said.append(reply)
                if "speech" in verb.input:
                    params = {"SpeechResult": reply, "Confidence": CONFIDENCE}
        if params is None:
            # Nothing usable heard: wait out the timeout, then post empty or fall through.
            await asyncio.sleep(verb.timeout * self.timings.time_scale)
            if not verb.action_on_empty_result:
                return None
            params = {}
        self._log(call.sid, "gather.result", **params)
        return await self._fetch_twiml(call, "gather", action, verb.method, params), action

    # -- media streams ---------------------------------------------------------------

    async def _connect(self, call: FakeCall, verb: Connect, doc_url: str | None) -> _Next | None:
        live = self._live[call.sid]
        connect = live.connect = _Connect(verb.stream)
        try:
            if not await self._open_stream(call, live):
                connect.done.set()
            await connect.done.wait()
        finally:
            if live.connect is connect:
                live.connect = None
        if verb.action:
            url = self._resolve(call, doc_url, verb.action)
            return await self._fetch_twiml(call, "action", url, verb.method), url
        return None  # Twilio continues with the verb after <Connect>

    async def _open_stream(self, call: FakeCall, live: _Live) -> bool:
        assert live.connect is not None
        stream = live.connect.stream
        parts = urlsplit(stream.url)
        if parts.scheme not in ("ws", "wss"):
            call.errors.append(AppError(31920, f"Stream url must be wss://: {stream.url!r}"))
            return False
        if parts.query:
            # Twilio does not deliver query strings on stream URLs; use <Parameter>.
            call.errors.append(AppError(31922, "query string dropped from Stream url",
                                        "warning"))
        url = urlunsplit(parts._replace(query="", fragment=""))
        try:
            target = self._router.resolve(url)
        except FakeRoutingError as exc:
            call.errors.append(AppError(31920, str(exc)))
            return False
        signature = self._webhooks.signature_for(call, url, None)
        record = StreamRecord(stream_sid=_sid("MZ"), url=stream.url, target=target.local,
                              custom_parameters=dict(stream.parameters), signature=signature)
        call.streams.append(record)
        session = StreamSession(self, call, record)
        live.session = session
        self._log(call.sid, "stream.dial", url=url, stream_sid=record.stream_sid)
        ok = await session.open(target, signature, self._webhooks.headers_for(target))
        if not ok and live.session is session:
            live.session = None
        return ok

    def _stream_closed(self, call: FakeCall, session: StreamSession) -> None:
        live = self._live[call.sid]
        if live.session is session:
            live.session = None
        # Only a close from the gateway ends <Connect>; a drop waits for a reconnect.
        if session.record.end_reason == "closed-by-gateway" and live.connect is not None:
            live.connect.done.set()

    def _callee_turn(self, call: FakeCall, session: StreamSession) -> None:
        if call.is_terminal or self._closing:
            return
        run = call.callee
        if run.should_hang_up():
            self._end(call, "completed", by="callee")
            return
        reply = run.next_reply()
        if reply is None:
            return
        self._log(call.sid, "callee.turn", reply=str(reply))
        if isinstance(reply, Press):
            call.callee_said.append(f"dtmf:{reply.digits}")
            self._spawn(session.guard(session.press(reply.digits)), f"{call.sid}:press")
        else:
            call.callee_said.append(reply)
            session.speak(self._audio_for(call, reply))
