"""The call simulation behind ``FakePlivo``: call lifecycle, callbacks, XML, streams.

``CallEngine`` holds no sockets of its own: it sends callbacks through the
``WebhookSender`` and dials audio streams through ``StreamSession``. Its state is
initialised by ``FakePlivo.__init__``; the annotations below list what it uses.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

import httpx

from voicecall.carriers.plivo.media import PLIVO_DEFAULT, StreamFormat, parse_content_type
from voicecall.testing.fake_carrier._server import LoopbackFake
from voicecall.testing.fake_plivo._model import (
    CalleeRun,
    CalleeScript,
    FakeCall,
    FakeEvent,
    PlivoError,
    Press,
    RestRequest,
    SentWebhook,
    StreamRecord,
    Timings,
)
from voicecall.testing.fake_plivo._rest import CreateCall
from voicecall.testing.fake_plivo._stream import StreamSession
from voicecall.testing.fake_plivo._webhooks import FakeRoutingError, Router, WebhookSender
from voicecall.testing.fake_plivo._xml import (
    DTMF,
    Element,
    GetInput,
    Hangup,
    Play,
    PlivoXmlError,
    Redirect,
    Speak,
    Stream,
    Wait,
    parse_xml,
)

CONFIDENCE = "0.92"
MAX_XML_BYTES = 100 * 1024
_CAUSE_NAMES = {
    "NORMAL_CLEARING": "Normal Hangup",
    "USER_BUSY": "Busy Line",
    "NO_ANSWER": "No Answer",
    "ORIGINATOR_CANCEL": "Cancelled",
    "CALL_REJECTED": "Rejected",
    "ALLOTTED_TIMEOUT": "Scheduled Hangup",
    "NORMAL_TEMPORARY_FAILURE": "Network Error",
}


class CallOver(Exception):
    """Unwinds the XML executor: the call ended or the document can't go on."""


@dataclass
class _StreamRun:
    """A ``<Stream>`` element (or a REST-started stream) while it runs."""

    url: str
    content_type: str | None
    extra_headers: str
    bidirectional: bool
    done: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class Live:
    """Per-call runtime state (tasks and sockets), kept out of the recorded ``FakeCall``."""

    executor: asyncio.Task[None] | None = None
    session: StreamSession | None = None
    stream: _StreamRun | None = None
    callbacks: asyncio.Queue[tuple[str, str, str, dict[str, str]]] = field(
        default_factory=asyncio.Queue)
    callback_task: asyncio.Task[None] | None = None
    timers: list[asyncio.Task[None]] = field(default_factory=list)


_Next = tuple[str, str]  # (XML document, kind of request it came from)


def _digits_seconds(digits: str) -> float:
    return sum(0.5 if d == "w" else 1.0 if d == "W" else 0.1 for d in digits)


def _gathered_digits(pressed: str, el: GetInput) -> str:
    key = el.finish_on_key
    if key and key in pressed:
        pressed = pressed[:pressed.index(key)]
    if el.num_digits and len(pressed) > el.num_digits:
        pressed = pressed[:el.num_digits]
    return pressed


class CallEngine(LoopbackFake[FakeCall, FakeEvent, StreamSession]):
    """Simulates calls; ``FakePlivo`` adds the server and the public test API."""

    auth_id: str
    auth_token: str
    callee: CalleeScript
    callees: dict[str, CalleeScript]
    timings: Timings
    force_stream_format: StreamFormat | None
    requests: list[RestRequest]
    webhooks: list[SentWebhook]
    _live: dict[str, Live]
    _router: Router
    _webhooks: WebhookSender
    _duplicates: dict[str, int]

    # -- bookkeeping -----------------------------------------------------------------

    def _live_session(self, call_id: str) -> StreamSession | None:
        return self._live[call_id].session

    def _log(self, call_id: str | None, kind: str, **data: Any) -> None:
        self.events.append(FakeEvent(time.monotonic() - self._t0, call_id, kind, data))

    def _record_webhook(self, sent: SentWebhook, call: FakeCall | None) -> None:
        self.webhooks.append(sent)
        if call is not None:
            call.webhooks.append(sent)
        self._log(call.call_uuid if call else None, "webhook", webhook=sent.kind, url=sent.url,
                  status=sent.status_code, error=sent.error)

    def by_request(self, request_uuid: str) -> FakeCall | None:
        return next((c for c in self.calls.values() if c.request_uuid == request_uuid), None)

    # -- calls -----------------------------------------------------------------------

    def _register(self, call: FakeCall) -> Live:
        self.calls[call.call_uuid] = call
        live = self._live[call.call_uuid] = Live()
        self._log(call.call_uuid, "call.created", direction=call.direction, from_=call.from_,
                  to=call.to)
        return live

    def _create_outbound(self, req: CreateCall) -> FakeCall:
        call = FakeCall(
            call_uuid=str(uuid.uuid4()), request_uuid=str(uuid.uuid4()), direction="outbound",
            from_=req.from_, to=req.to, status="queued",
            callee=CalleeRun(self.callees.get(req.to, self.callees.get("+" + req.to,
                                                                        self.callee))),
            answer_url=req.answer_url, answer_method=req.answer_method,
            ring_url=req.ring_url, ring_method=req.ring_method,
            hangup_url=req.hangup_url, hangup_method=req.hangup_method,
            fallback_url=req.fallback_url, fallback_method=req.fallback_method,
            ring_timeout=req.ring_timeout, hangup_on_ring=req.hangup_on_ring,
            time_limit=req.time_limit, send_digits=req.send_digits, create_body=req.body)
        live = self._register(call)
        live.executor = self._spawn(self._outbound(call), f"{call.call_uuid}:call")
        return call

    async def _outbound(self, call: FakeCall) -> None:
        script = call.callee.script
        live = self._live[call.call_uuid]
        try:
            await asyncio.sleep(self.timings.ring)
            call.status = "ringing"
            self._log(call.call_uuid, "call.ringing")
            if call.ring_url:
                self._callback(call, "ring", call.ring_url, call.ring_method,
                               {"Event": "Ring", "CallStatus": "ringing"})
            if call.hangup_on_ring is not None:
                # Plivo's core runs this as sched_hangup on ring: it ends the call
                # N seconds after ringing started, answered or not.
                live.timers.append(self._spawn(self._timer(call, call.hangup_on_ring,
                                                           "hangup_on_ring"),
                                               f"{call.call_uuid}:hangup_on_ring"))
            delay = self.timings.answer if script.answer_delay is None else script.answer_delay
            if delay > call.ring_timeout:
                await asyncio.sleep(call.ring_timeout)
                self._end(call, "no-answer", "NO_ANSWER", by="timeout", source="Plivo")
                return
            await asyncio.sleep(delay)
            if script.answer != "answer":
                cause = {"busy": "USER_BUSY", "no-answer": "NO_ANSWER",
                         "failed": "NORMAL_TEMPORARY_FAILURE"}[script.answer]
                self._end(call, script.answer, cause, by="callee", source="Callee")
                return
            self._answer(call)
            if call.time_limit is not None:
                live.timers.append(self._spawn(self._timer(call, call.time_limit, "time_limit"),
                                               f"{call.call_uuid}:time_limit"))
            if call.send_digits:
                call.digits_sent.append(call.send_digits)
            assert call.answer_url is not None
            doc = await self._fetch_xml(call, "answer", call.answer_url, call.answer_method,
                                        {"Event": "StartApp"})
            await self._execute(call, doc, "answer")
        except CallOver:
            pass

    async def _timer(self, call: FakeCall, seconds: int, what: str) -> None:
        await asyncio.sleep(seconds)
        if not call.is_terminal:
            self._log(call.call_uuid, "call.timer", what=what)
            if call.answered is not None:
                self._end(call, "completed", "ALLOTTED_TIMEOUT", by=what, source="Plivo")
            else:
                self._end(call, "no-answer", "ORIGINATOR_CANCEL", by=what, source="Plivo")

    def _answer(self, call: FakeCall) -> None:
        call.status = "in-progress"
        call.answered = time.time()
        self._log(call.call_uuid, "call.answered")

    def _end(self, call: FakeCall, status: str, cause: str, *, by: str, source: str) -> None:
        """Make the call terminal now; stream teardown and the hangup callback follow."""
        if call.is_terminal:
            return
        call.status = status
        call.ended = time.time()
        call.hung_up_by = by
        call.hangup_cause = cause
        call.hangup_source = source
        self._log(call.call_uuid, "call.ended", status=status, cause=cause, by=by)
        live = self._live[call.call_uuid]
        current = asyncio.current_task()
        for task in [live.executor, *live.timers]:
            if task is not None and task is not current:
                task.cancel()
        if not self._closing:
            self._spawn(self._teardown(call, live), f"{call.call_uuid}:teardown")

    async def _teardown(self, call: FakeCall, live: Live) -> None:
        if live.session is not None:
            await live.session.stop()
        if call.hangup_url:
            ended = call.ended or time.time()
            self._callback(call, "hangup", call.hangup_url, call.hangup_method, {
                "Event": "Hangup", "CallStatus": call.status,
                "HangupCause": call.hangup_cause or "NORMAL_CLEARING",
                "HangupCauseName": _CAUSE_NAMES.get(call.hangup_cause or "", "Unknown"),
                "HangupSource": call.hangup_source or "Unknown",
                "Duration": str(call.duration), "BillDuration": str(call.duration),
                "StartTime": _stamp(call.created),
                "AnswerTime": _stamp(call.answered) if call.answered else "",
                "EndTime": _stamp(ended), "TotalCost": "0.00000"})

    async def _api_hangup(self, call: FakeCall) -> None:
        if call.answered is None:
            await self._cancel(call)
            return
        self._end(call, "completed", "NORMAL_CLEARING", by="api", source="API Request")

    async def _cancel(self, call: FakeCall) -> None:
        self._end(call, "cancel", "ORIGINATOR_CANCEL", by="cancel", source="API Request")

    def _transfer(self, call: FakeCall, url: str, method: str) -> None:
        live = self._live[call.call_uuid]
        old = live.executor
        live.executor = self._spawn(self._replacement(call, live, old, url, method),
                                    f"{call.call_uuid}:transfer")

    async def _replacement(self, call: FakeCall, live: Live, old: asyncio.Task[None] | None,
                           url: str, method: str) -> None:
        if old is not None and not old.done():
            old.cancel()
            await asyncio.wait([old])
        live.stream = None
        if live.session is not None:
            await live.session.stop()  # new XML ends the running <Stream>
        self._log(call.call_uuid, "xml.transferred", url=url)
        try:
            doc = await self._fetch_xml(call, "transfer", url, method)
            await self._execute(call, doc, "transfer")
        except CallOver:
            pass

    def _api_speak(self, call: FakeCall, text: str) -> None:
        call.heard.append(text)
        self._log(call.call_uuid, "api.speak", text=text)

    def _api_dtmf(self, call: FakeCall, digits: str) -> None:
        call.digits_sent.append(digits)
        self._log(call.call_uuid, "api.dtmf", digits=digits)

    async def _api_stream(self, call: FakeCall, url: str, content_type: str | None,
                          bidirectional: bool, extra_headers: str) -> str:
        live = self._live[call.call_uuid]
        live.stream = _StreamRun(url, content_type, extra_headers, bidirectional)
        await self._open_stream(call, live)
        stream = call.stream
        assert stream is not None
        return stream.stream_id

    async def _api_stop_streams(self, call: FakeCall) -> None:
        live = self._live[call.call_uuid]
        if live.session is not None:
            await live.session.stop()

    # -- callbacks -------------------------------------------------------------------

    def _base_params(self, call: FakeCall) -> dict[str, str]:
        params = {
            "CallUUID": call.call_uuid, "CallStatus": call.status,
            "Direction": call.direction, "From": call.from_, "To": call.to,
            "CallerName": "", "BillRate": "0.0085", "ParentAuthID": self.auth_id,
            "SessionStart": _stamp(call.created),
        }
        if call.direction == "outbound":
            params.update({"RequestUUID": call.request_uuid or "",
                           "ALegUUID": call.call_uuid,
                           "ALegRequestUUID": call.request_uuid or ""})
        return params

    def _callback(self, call: FakeCall, kind: str, url: str, method: str,
                  extra: Mapping[str, str]) -> None:
        params = self._base_params(call)
        params.update(extra)
        live = self._live[call.call_uuid]
        live.callbacks.put_nowait((kind, url, method, params))
        if (live.callback_task is None or live.callback_task.done()) and not self._closing:
            live.callback_task = self._spawn(self._deliver_callbacks(call, live),
                                             f"{call.call_uuid}:callbacks")

    async def _deliver_callbacks(self, call: FakeCall, live: Live) -> None:
        # Ring and hangup callbacks go one at a time, in order; only a 200 is needed.
        while not live.callbacks.empty():
            kind, url, method, params = live.callbacks.get_nowait()
            try:
                sent, response = await self._deliver(kind, url, params, method, call)
            except FakeRoutingError as exc:
                call.errors.append(PlivoError(7013, str(exc), "warning"))
                continue
            if response is None or not 200 <= response.status_code < 300:
                why = sent.error or f"HTTP {sent.status_code}"
                call.errors.append(PlivoError(7013, f"{kind} callback failed: {why}",
                                              "warning"))

    async def _deliver(self, kind: str, url: str, params: dict[str, str], method: str,
                       call: FakeCall) -> tuple[SentWebhook, httpx.Response | None]:
        sent, response = await self._webhooks.deliver(kind, url, params, method=method,
                                                      call=call)
        if self._duplicates.get(kind, 0) > 0:
            # Plivo retrying the same callback: same URL and body, freshly signed.
            self._duplicates[kind] -= 1
            await self._webhooks.deliver(kind + "-retry", url, params, method=method,
                                         call=call)
        return sent, response

    async def _fetch_xml(self, call: FakeCall, kind: str, url: str, method: str,
                         extra: Mapping[str, str] | None = None) -> str:
        """Request XML from the gateway; any failure is an application error."""
        params = self._base_params(call)
        params.update(extra or {})
        result = await self._try_fetch(call, kind, url, method, params)
        if isinstance(result, str):
            return result
        if kind == "answer" and call.fallback_url:
            call.errors.append(PlivoError(*result))
            result = await self._try_fetch(call, "fallback", call.fallback_url,
                                           call.fallback_method, params)
            if isinstance(result, str):
                return result
        self._fail_app(call, *result)

    async def _try_fetch(self, call: FakeCall, kind: str, url: str, method: str,
                         params: dict[str, str]) -> str | tuple[int, str]:
        answer = kind in ("answer", "fallback")
        unreachable, invalid = (7011, 8011) if answer else (7012, 8012)
        try:
            sent, response = await self._deliver(kind, url, params, method, call)
        except FakeRoutingError as exc:
            return unreachable, str(exc)
        if response is None:
            return unreachable, f"request to {url} failed: {sent.error}"
        if not 200 <= response.status_code < 300:
            return unreachable, f"{url} returned HTTP {response.status_code}"
        if len(response.content) > MAX_XML_BYTES:
            return invalid, "XML response larger than 100 KB"
        ctype = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if ctype not in ("application/xml", "text/xml"):
            return invalid, f"invalid Content-Type {ctype!r} for XML from {url}"
        return response.text

    def _fail_app(self, call: FakeCall, code: int, message: str) -> NoReturn:
        call.errors.append(PlivoError(code, message))
        self._log(call.call_uuid, "call.application_error", code=code, message=message)
        self._end(call, "failed", "NORMAL_TEMPORARY_FAILURE" if code < 8000 else
                  "INVALID_XML", by="error", source="Error")
        raise CallOver

    # -- XML interpreter -------------------------------------------------------------

    async def _execute(self, call: FakeCall, doc: str, kind: str) -> None:
        try:
            nxt: _Next | None = (doc, kind)
            while nxt is not None:
                nxt = await self._run_document(call, *nxt)
            # Running out of elements (or an empty <Response/>) hangs up, as on Plivo.
            self._end(call, "completed", "NORMAL_CLEARING", by="xml", source="Answer XML")
        except CallOver:
            pass

    async def _run_document(self, call: FakeCall, doc: str, kind: str) -> _Next | None:
        try:
            elements = parse_xml(doc)
        except PlivoXmlError as exc:
            self._fail_app(call, 8011 if kind in ("answer", "fallback") else 8012, exc.message)
        call.xml_executed.append(doc)
        self._log(call.call_uuid, "xml", source=kind, elements=[type(e).__name__ for e in elements])
        for el in elements:
            if call.is_terminal:
                raise CallOver
            call.elements.append(type(el).__name__)
            if call.status == "ringing":  # inbound, not answered yet
                if isinstance(el, Hangup) and el.schedule is None:
                    busy = el.reason == "busy"
                    self._end(call, "completed", "USER_BUSY" if busy else "CALL_REJECTED",
                              by="xml", source="Answer XML")
                    raise CallOver
                self._answer(call)
            nxt = await self._run_element(call, el)
            if nxt is not None:
                return nxt
        return None

    async def _run_element(self, call: FakeCall, el: Element) -> _Next | None:
        t = self.timings
        if isinstance(el, Speak | Play):
            await self._simple(call, el)
        elif isinstance(el, Wait):
            await asyncio.sleep(el.length * t.time_scale)
        elif isinstance(el, DTMF):
            call.digits_sent.append(el.digits)
            self._log(call.call_uuid, "xml.dtmf", digits=el.digits)
            if not el.async_:
                await asyncio.sleep(_digits_seconds(el.digits) * t.time_scale)
        elif isinstance(el, Hangup):
            if el.schedule is not None:
                live = self._live[call.call_uuid]
                live.timers.append(self._spawn(self._timer(call, el.schedule, "schedule"),
                                               f"{call.call_uuid}:schedule"))
                return None
            self._end(call, "completed", "NORMAL_CLEARING", by="xml", source="Answer XML")
            raise CallOver
        elif isinstance(el, Redirect):
            return await self._fetch_xml(call, "redirect", el.url, el.method,
                                         {"Event": "Redirect"}), "redirect"
        elif isinstance(el, GetInput):
            return await self._get_input(call, el)
        elif isinstance(el, Stream):
            await self._stream(call, el)
        return None

    async def _simple(self, call: FakeCall, el: Speak | Play) -> None:
        if isinstance(el, Speak):
            call.heard.append(el.text)
            self._log(call.call_uuid, "speak", text=el.text)
            await asyncio.sleep(len(el.text.split()) * self.timings.speak_per_word
                                * max(1, el.loop))
        else:
            call.played.append(el.url)
            await asyncio.sleep(self.timings.time_scale)

    async def _get_input(self, call: FakeCall, el: GetInput) -> _Next | None:
        for child in el.children:
            await self._simple(call, child)
        run = call.callee
        if run.should_hang_up():
            self._end(call, "completed", "NORMAL_CLEARING", by="callee",
                      source="Callee" if call.direction == "outbound" else "Caller")
            raise CallOver
        reply = run.next_reply()
        params: dict[str, str] | None = None
        if reply is not None:
            await asyncio.sleep(self.timings.reply_delay)
            if isinstance(reply, Press):
                call.callee_said.append(f"dtmf:{reply.digits}")
                if "dtmf" in el.input_type:
                    params = {"InputType": "dtmf", "Digits": _gathered_digits(reply.digits, el)}
            else:
                call.callee_said.append(reply)
                if "speech" in el.input_type:
                    params = {"InputType": "speech", "Speech": reply,
                              "SpeechConfidenceScore": CONFIDENCE}
        if params is None:
            # Nothing usable: wait out executionTimeout, then on to the next element.
            await asyncio.sleep(el.execution_timeout * self.timings.time_scale)
            return None
        self._log(call.call_uuid, "getinput.result", **params)
        doc = await self._fetch_xml(call, "getinput", el.action, el.method, params)
        return (doc, "getinput") if el.redirect else None

    # -- audio streams ---------------------------------------------------------------

    async def _stream(self, call: FakeCall, el: Stream) -> None:
        live = self._live[call.call_uuid]
        run = live.stream = _StreamRun(el.url, el.content_type, el.extra_headers,
                                       el.bidirectional)
        try:
            if not await self._open_stream(call, live):
                run.done.set()
            if not el.keep_call_alive:
                return  # the stream runs on while the XML moves on
            try:
                await asyncio.wait_for(run.done.wait(), el.stream_timeout)
            except TimeoutError:
                if live.session is not None:
                    await live.session.stop()
        finally:
            if live.stream is run and el.keep_call_alive:
                live.stream = None

    async def _open_stream(self, call: FakeCall, live: Live) -> bool:
        run = live.stream
        assert run is not None
        fmt = self.force_stream_format or (
            parse_content_type(run.content_type) if run.content_type else PLIVO_DEFAULT)
        try:
            target = self._router.resolve(run.url)
        except FakeRoutingError as exc:
            call.errors.append(PlivoError(0, f"stream URL not reachable: {exc}"))
            return False
        record = StreamRecord(stream_id=str(uuid.uuid4()), url=run.url, target=target.local,
                              format=fmt, requested_content_type=run.content_type,
                              extra_headers=run.extra_headers, bidirectional=run.bidirectional)
        call.streams.append(record)
        session = StreamSession(self, call, record)
        live.session = session
        self._log(call.call_uuid, "stream.dial", url=run.url, stream_id=record.stream_id)
        ok = await session.open(target)
        if not ok and live.session is session:
            live.session = None
        return ok

    def _stream_closed(self, call: FakeCall, session: StreamSession) -> None:
        live = self._live[call.call_uuid]
        if live.session is session:
            live.session = None
        # A close from the gateway ends <Stream>; a dropped connection waits for a redial.
        if session.record.end_reason == "closed-by-gateway" and live.stream is not None:
            live.stream.done.set()

    def _callee_turn(self, call: FakeCall, session: StreamSession) -> None:
        if call.is_terminal or self._closing:
            return
        run = call.callee
        if run.should_hang_up():
            self._end(call, "completed", "NORMAL_CLEARING", by="callee",
                      source="Callee" if call.direction == "outbound" else "Caller")
            return
        reply = run.next_reply()
        if reply is None:
            return
        self._log(call.call_uuid, "callee.turn", reply=str(reply))
        if isinstance(reply, Press):
            call.callee_said.append(f"dtmf:{reply.digits}")
            self._spawn(session.guard(session.press(reply.digits)), f"{call.call_uuid}:press")
        else:
            call.callee_said.append(reply)
            session.speak(self._audio_for(call, reply))


def _stamp(ts: float | None) -> str:
    return "" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts))


__all__ = ["CONFIDENCE", "CallEngine", "CallOver", "Live"]

