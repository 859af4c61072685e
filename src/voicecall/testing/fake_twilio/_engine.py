"""The call simulation behind ``FakeTwilio``: call lifecycle, webhooks, TwiML, streams.

``CallEngine`` holds no sockets of its own: it sends webhooks through the
``WebhookSender`` and dials media streams through ``StreamSession``. Its state is
initialised by ``FakeTwilio.__init__``; the annotations below list what it uses.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn
from urllib.parse import urljoin, urlsplit, urlunsplit

from voicecall.testing.fake_carrier._server import LoopbackFake
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
from voicecall.testing.fake_twilio._rest import API_VERSION, CreateCall, rfc2822
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
_PLAY_DIGITS = re.compile(r"^[0-9A-D*#wW]+$")  # Twilio error 13430's documented set
_MAX_TWIML_BYTES = 64 * 1024  # error 11750

class CallOver(Exception):
    """Unwinds the TwiML executor: the call ended or the document can't go on."""


@dataclass
class _Connect:
    stream: Stream
    done: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class Live:
    """Per-call runtime state (tasks and sockets), kept out of the recorded ``FakeCall``."""

    executor: asyncio.Task[None] | None = None
    session: StreamSession | None = None
    connect: _Connect | None = None
    callbacks: asyncio.Queue[dict[str, str]] = field(default_factory=asyncio.Queue)
    callback_task: asyncio.Task[None] | None = None


_Next = tuple[str, str | None]  # (TwiML document, URL it came from)


def new_sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def _gathered_digits(pressed: str, gather: Gather) -> dict[str, str]:
    """``Digits``/``FinishedOnKey`` as Twilio reports them for keys pressed into a Gather."""
    key = gather.finish_on_key
    finished = ""
    if key and key in pressed:
        pressed, finished = pressed[:pressed.index(key)], key
    if gather.num_digits and len(pressed) > gather.num_digits:
        pressed = pressed[:gather.num_digits]
    return {"Digits": pressed, "FinishedOnKey": finished}


class CallEngine(LoopbackFake[FakeCall, FakeEvent, StreamSession]):
    """Simulates calls; ``FakeTwilio`` adds the server and the public test API."""

    account_sid: str
    auth_token: str
    callee: CalleeScript
    callees: dict[str, CalleeScript]
    timings: Timings
    requests: list[RestRequest]
    webhooks: list[SentWebhook]
    _live: dict[str, Live]
    _router: Router
    _webhooks: WebhookSender

    # -- bookkeeping -----------------------------------------------------------------

    def _live_session(self, call_id: str) -> StreamSession | None:
        return self._live[call_id].session

    def _log(self, call_id: str | None, kind: str, **data: Any) -> None:
        self.events.append(FakeEvent(time.monotonic() - self._t0, call_id, kind, data))

    def _record_webhook(self, sent: SentWebhook, call: FakeCall | None) -> None:
        self.webhooks.append(sent)
        if call is not None:
            call.webhooks.append(sent)
        self._log(call.sid if call else None, "webhook", webhook=sent.kind, url=sent.url,
                  status=sent.status_code, error=sent.error)

    # -- calls -----------------------------------------------------------------------

    def _register(self, call: FakeCall) -> Live:
        self.calls[call.sid] = call
        live = self._live[call.sid] = Live()
        self._log(call.sid, "call.created", direction=call.direction, from_=call.from_,
                  to=call.to)
        return live

    def _create_outbound(self, req: CreateCall) -> FakeCall:
        call = FakeCall(sid=new_sid("CA"), account_sid=self.account_sid,
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
            if delay > call.timeout:
                # Rang out: Twilio gives up after Timeout seconds (real seconds here, so
                # the small default delays never trip it).
                await asyncio.sleep(call.timeout)
                self._end(call, "no-answer", by="timeout")
                return
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
        except CallOver:
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

    async def _teardown(self, call: FakeCall, live: Live) -> None:
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

    async def _replacement(self, call: FakeCall, live: Live, old: asyncio.Task[None] | None,
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
                doc = await self._fetch_twiml(call, "update", url, method)
                await self._execute(call, doc, url)
            else:
                assert twiml is not None
                await self._execute(call, twiml, None)
        except CallOver:
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

    async def _deliver_callbacks(self, call: FakeCall, live: Live) -> None:
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
        result = await self._try_fetch(call, kind, url, method, params)
        if isinstance(result, str):
            return result
        if kind == "voice" and call.fallback_url and call.direction == "outbound-api":
            code, message = result
            params.update({"ErrorCode": str(code), "ErrorUrl": url})
            result = await self._try_fetch(call, "fallback", call.fallback_url,
                                           call.fallback_method, params)
            call.errors.append(AppError(code, message))
            if isinstance(result, str):
                return result
        self._fail_app(call, *result)

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
        raise CallOver

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
        except CallOver:
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
                raise CallOver
            call.verbs.append(type(verb).__name__)
            if call.status == "ringing":  # inbound, not answered yet
                if isinstance(verb, Reject):
                    # First-verb <Reject>: never answered; busy or no-answer per reason.
                    status = "busy" if verb.reason == "busy" else "no-answer"
                    self._end(call, status, by="twiml")
                    raise CallOver
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
            raise CallOver
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
            raise CallOver
        reply = run.next_reply()
        params: dict[str, str] | None = None
        if reply is not None:
            await asyncio.sleep(self.timings.reply_delay)
            if isinstance(reply, Press):
                call.callee_said.append(f"dtmf:{reply.digits}")
                if "dtmf" in verb.input:
                    params = _gathered_digits(reply.digits, verb)
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

    async def _open_stream(self, call: FakeCall, live: Live) -> bool:
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
        record = StreamRecord(stream_sid=new_sid("MZ"), url=stream.url, target=target.local,
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
