"""The call simulation behind ``FakeTelnyx``: legs, commands, webhooks, streams.

``CallEngine`` holds no sockets of its own: it sends webhooks through the
``WebhookSender`` and dials media streams through ``StreamSession``. Its state is
initialised by ``FakeTelnyx.__init__``; the annotations below list what it uses.

Deliberate simplifications (each is the more demanding choice for the gateway):
webhooks of one call leg are delivered one at a time in order (Telnyx may deliver
them concurrently); ``client_state`` set by any command is echoed in every later
webhook of the leg; a keypress on a leg with a media stream is reported both as a
stream ``dtmf`` frame and as a ``call.dtmf.received`` webhook; a stream that ends
under a live call (dropped, or closed by the gateway) is reported with
``streaming.stopped`` [guessed: the reference documents the event, not when it is
sent] and never redialled unless the gateway sends ``streaming_start`` again (or a
test calls ``reconnect_stream``).
"""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from voicecall.testing.fake_carrier._server import LoopbackFake
from voicecall.testing.fake_telnyx._model import (
    ANSWER_CAUSES,
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
from voicecall.testing.fake_telnyx._rest import call_ended, wrong_state
from voicecall.testing.fake_telnyx._stream import StreamSession
from voicecall.testing.fake_telnyx._webhooks import FakeRoutingError, Router, WebhookSender

STREAM_KEYS = ("stream_url", "stream_track", "stream_codec", "stream_bidirectional_mode",
               "stream_bidirectional_codec", "stream_bidirectional_sampling_rate",
               "stream_bidirectional_target_legs", "stream_auth_token")


@dataclass
class Live:
    """Per-leg runtime state (tasks and sockets), kept out of the recorded ``FakeCall``."""

    lifecycle: asyncio.Task[None] | None = None
    session: StreamSession | None = None
    events: asyncio.Queue[tuple[str, dict[str, Any]]] = field(default_factory=asyncio.Queue)
    event_task: asyncio.Task[None] | None = None
    speaks: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    speaker: asyncio.Task[None] | None = None
    speaking: bool = False
    turn_pending: bool = False
    turn_task: asyncio.Task[None] | None = None
    dtmf_until: float = 0.0  # loop time until which our DTMF is still playing
    answered: asyncio.Event = field(default_factory=asyncio.Event)


def new_id(prefix: str = "") -> str:
    return prefix + secrets.token_urlsafe(24)


class CallEngine(LoopbackFake[FakeCall, FakeEvent, StreamSession]):
    """Simulates call legs; ``FakeTelnyx`` adds the server and the public test API."""

    api_key: str
    connection_id: str
    connection_webhook_url: str | None
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
        self._log(call.call_control_id if call else None, "webhook", event=sent.kind,
                  status=sent.status_code, attempt=sent.attempt, error=sent.error)

    def call_status(self, call: FakeCall) -> dict[str, Any]:
        """``data`` of the dial response and of ``GET /calls/{id}``."""
        data: dict[str, Any] = {
            "call_control_id": call.call_control_id, "call_leg_id": call.call_leg_id,
            "call_session_id": call.call_session_id, "is_alive": call.is_alive,
            "record_type": "call",
        }
        if call.client_state:
            data["client_state"] = call.client_state
        if call.answered is not None:
            data["start_time"] = _iso(call.answered)
            data["call_duration"] = int((call.ended or time.time()) - call.answered)
        if call.ended is not None:
            data["end_time"] = _iso(call.ended)
        return data

    # -- legs ------------------------------------------------------------------------

    def _register(self, call: FakeCall) -> Live:
        self.calls[call.call_control_id] = call
        live = self._live[call.call_control_id] = Live()
        self._log(call.call_control_id, "call.created", direction=call.direction,
                  from_=call.from_, to=call.to)
        return live

    def _new_call(self, *, direction: str, from_: str, to: str, callee: CalleeScript,
                  webhook_url: str | None, state: str) -> FakeCall:
        return FakeCall(call_control_id="v3:" + new_id(), call_leg_id=str(uuid.uuid4()),
                        call_session_id=str(uuid.uuid4()), connection_id=self.connection_id,
                        direction="incoming" if direction == "incoming" else "outgoing",
                        from_=from_, to=to, state=state, callee=CalleeRun(callee),
                        webhook_url=webhook_url)

    def _create_outbound(self, body: Mapping[str, Any]) -> FakeCall:
        """``POST /calls``: the dial is asynchronous (``is_alive`` false in the answer)."""
        call = self._new_call(direction="outgoing", from_=str(body["from"]), to=str(body["to"]),
                              callee=self.callees.get(str(body["to"]), self.callee),
                              webhook_url=body.get("webhook_url") or self.connection_webhook_url,
                              state="bridging")
        call.dial_body = dict(body)
        call.timeout_secs = int(body.get("timeout_secs", 30))
        call.client_state = body.get("client_state")
        call.stream_params = {k: body[k] for k in STREAM_KEYS if k in body}
        live = self._register(call)
        live.lifecycle = self._spawn(self._outbound(call, live),
                                     f"{call.call_control_id}:outbound")
        return call

    async def _outbound(self, call: FakeCall, live: Live) -> None:
        script = call.callee.script
        self._emit(call, "call.initiated", direction="outgoing", state="bridging")
        await asyncio.sleep(self.timings.ring)
        delay = self.timings.answer if script.answer_delay is None else script.answer_delay
        if delay > call.timeout_secs:
            await asyncio.sleep(call.timeout_secs)
            self._end(call, "timeout", source="callee", by="timeout")
            return
        await asyncio.sleep(delay)
        if call.state == "hangup":
            return
        if script.answer != "answer":
            self._end(call, ANSWER_CAUSES[script.answer], source="callee", by="callee")
            return
        await self._answer(call, live)

    async def _answer(self, call: FakeCall, live: Live) -> None:
        call.state = "answered"
        call.answered = time.time()
        live.answered.set()
        self._log(call.call_control_id, "call.answered")
        self._emit(call, "call.answered", state="answered")
        if call.stream_params.get("stream_url"):
            # Dialled in the background: the command's 200 does not wait for the socket.
            self._spawn(self._open_stream_task(call, live, call.stream_params, {}),
                        f"{call.call_control_id}:stream")
        if call.callee.script.dtmf:
            self._spawn(self._scripted_dtmf(call), f"{call.call_control_id}:dtmf")

    def _end(self, call: FakeCall, cause: str, *, source: str, by: str) -> None:
        """Make the leg end now; the stream stops and ``call.hangup`` follows."""
        if call.state == "hangup":
            return
        call.state = "hangup"
        call.ended = time.time()
        call.hangup_cause = cause
        call.hangup_source = source
        call.hung_up_by = by
        call.transcribing = False
        self._log(call.call_control_id, "call.ended", cause=cause, by=by)
        live = self._live[call.call_control_id]
        current = asyncio.current_task()
        for task in (live.lifecycle, live.turn_task):
            if task is not None and task is not current and not task.done():
                task.cancel()
        if not self._closing:
            self._spawn(self._teardown(call, live), f"{call.call_control_id}:teardown")

    async def _teardown(self, call: FakeCall, live: Live) -> None:
        if live.session is not None:
            await live.session.stop()
        if live.speaker is not None and not live.speaker.done():
            live.speaker.cancel()
            if live.speaking:
                self._emit(call, "call.speak.ended", status="call_hangup")
        self._emit(call, "call.hangup", hangup_cause=call.hangup_cause,
                   hangup_source=call.hangup_source, sip_hangup_cause="200"
                   if call.hangup_cause == "normal_clearing" else "",
                   state="hangup")

    # -- webhooks --------------------------------------------------------------------

    def _payload(self, call: FakeCall, extra: Mapping[str, Any]) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "call_control_id": call.call_control_id, "call_leg_id": call.call_leg_id,
            "call_session_id": call.call_session_id, "connection_id": call.connection_id,
            "client_state": call.client_state, "from": call.from_, "to": call.to,
        }
        payload.update(extra)
        return payload

    def _emit(self, call: FakeCall, event_type: str, **extra: Any) -> None:
        """Queue a webhook for this leg; legs deliver their webhooks one at a time, in order."""
        if self._closing:
            return
        live = self._live[call.call_control_id]
        live.events.put_nowait((event_type, self._payload(call, extra)))
        if live.event_task is None or live.event_task.done():
            live.event_task = self._spawn(self._deliver_events(call, live),
                                          f"{call.call_control_id}:webhooks")

    async def _deliver_events(self, call: FakeCall, live: Live) -> None:
        while not live.events.empty():
            event_type, payload = live.events.get_nowait()
            url = call.webhook_url
            if not url:
                call.errors.append(f"no webhook URL for {event_type}")
                continue
            try:
                sent, response = await self._webhooks.deliver(url, event_type, payload,
                                                              call=call)
            except FakeRoutingError as exc:
                call.errors.append(str(exc))
                continue
            if response is None or not 200 <= response.status_code < 300:
                call.errors.append(f"webhook {event_type} failed: "
                                   f"{sent.error or f'HTTP {sent.status_code}'}")

    # -- commands ----------------------------------------------------------------------

    async def _command(self, call: FakeCall, action: str, body: Mapping[str, Any]) -> None:
        """Execute one validated command (``_rest`` has checked the body's shape)."""
        live = self._live[call.call_control_id]
        if call.state == "hangup":
            raise call_ended()
        if action == "answer":
            if call.direction != "incoming" or call.state != "parked":
                raise wrong_state("only a parked incoming call can be answered")
            self._set_state(call, body)
            if body.get("webhook_url"):
                call.webhook_url = str(body["webhook_url"])
            call.stream_params = {k: body[k] for k in STREAM_KEYS if k in body}
            await self._answer(call, live)
        elif action == "reject":
            if call.direction != "incoming" or call.state != "parked":
                raise wrong_state("only a parked incoming call can be rejected")
            self._set_state(call, body)
            call.rejected_cause = str(body["cause"])
            cause = "user_busy" if body["cause"] == "USER_BUSY" else "call_rejected"
            self._end(call, cause, source="callee", by="reject")
        elif action == "hangup":
            self._set_state(call, body)
            answered = call.answered is not None
            if call.direction == "outgoing":
                cause, source = ("normal_clearing" if answered else "originator_cancel"), "caller"
            else:
                cause, source = "normal_clearing", "callee"
            self._end(call, cause, source=source, by="api")
        elif action == "client_state_update":
            self._set_state(call, body)
            if call.transcribing:
                self._grant_turn(call, live)  # a new turn on the running transcription
        else:
            if call.state != "answered":
                raise wrong_state(f"{action} needs an answered call")
            self._set_state(call, body)
            await self._answered_command(call, live, action, body)

    def _set_state(self, call: FakeCall, body: Mapping[str, Any]) -> None:
        if body.get("client_state"):
            call.client_state = str(body["client_state"])

    async def _answered_command(self, call: FakeCall, live: Live, action: str,
                                body: Mapping[str, Any]) -> None:
        loop = asyncio.get_running_loop()
        if action == "speak":
            call.voices.append(str(body["voice"]))
            live.speaks.put_nowait(str(body["payload"]))
            if live.speaker is None or live.speaker.done():
                live.speaker = self._spawn(self._speaker(call, live),
                                           f"{call.call_control_id}:speak")
        elif action == "send_dtmf":
            digits = str(body["digits"])
            per_digit = int(body.get("duration_millis", 250)) / 1000
            seconds = sum(0.5 if d == "w" else 1.0 if d == "W" else per_digit + 0.1
                          for d in digits) * self.timings.time_scale
            call.dtmf_received.append(digits)
            call.timeline.append(("dtmf", digits))
            live.dtmf_until = max(loop.time(), live.dtmf_until) + seconds
            self._log(call.call_control_id, "dtmf.sent", digits=digits)
        elif action == "transcription_start":
            if call.transcribing:
                raise wrong_state("transcription is already running on this call")
            call.transcribing = True
            call.transcription_windows += 1
            call.transcription_configs.append(dict(body))
            self._grant_turn(call, live)
        elif action == "transcription_stop":
            call.transcribing = False
            live.turn_pending = False
        elif action == "streaming_start":
            params = {k: body[k] for k in STREAM_KEYS if k in body}
            custom = {str(p.get("name")): str(p.get("value"))
                      for p in body.get("custom_parameters") or []}
            call.stream_params = params
            self._spawn(self._open_stream_task(call, live, params, custom),
                        f"{call.call_control_id}:stream")
        elif action == "streaming_stop":
            if live.session is not None:
                session = live.session
                self._spawn(self._stop_stream(call, session), f"{call.call_control_id}:sstop")

    async def _speaker(self, call: FakeCall, live: Live) -> None:
        loop = asyncio.get_running_loop()
        while not live.speaks.empty():
            text = live.speaks.get_nowait()
            if loop.time() < live.dtmf_until:
                call.errors.append(f"speech {text[:30]!r} started while our DTMF was playing")
            live.speaking = True
            call.heard.append(text)
            call.timeline.append(("speak", text))
            self._log(call.call_control_id, "speak", text=text)
            self._emit(call, "call.speak.started")
            await asyncio.sleep(len(text.split()) * self.timings.speak_per_word)
            live.speaking = False
            self._emit(call, "call.speak.ended", status="completed")
        if live.turn_pending:
            self._start_turn(call, live)

    # -- the callee's turns ------------------------------------------------------------

    def _grant_turn(self, call: FakeCall, live: Live) -> None:
        live.turn_pending = True
        if not live.speaking and live.speaks.empty():
            self._start_turn(call, live)

    def _start_turn(self, call: FakeCall, live: Live) -> None:
        if live.turn_task is not None and not live.turn_task.done():
            return
        live.turn_task = self._spawn(self._transcribed_turn(call, live),
                                     f"{call.call_control_id}:turn")

    async def _transcribed_turn(self, call: FakeCall, live: Live) -> None:
        await asyncio.sleep(self.timings.reply_delay)
        if not live.turn_pending or call.state == "hangup":
            return
        live.turn_pending = False
        run = call.callee
        if run.should_hang_up():
            self._end(call, "normal_clearing", source="callee", by="callee")
            return
        reply = run.next_reply()
        if reply is None:
            return  # the callee says nothing
        if isinstance(reply, Press):
            call.callee_said.append(f"dtmf:{reply.digits}")
            await self._press(call, live, reply.digits)
            return
        call.callee_said.append(reply)
        self._log(call.call_control_id, "callee.says", text=reply)
        if not call.transcribing:
            return  # nobody is listening any more
        script = call.callee.script
        if script.interim:
            words = reply.split()
            self._emit(call, "call.transcription", transcription_data={
                "transcript": " ".join(words[:max(1, len(words) // 2)]), "is_final": False,
                "confidence": script.confidence, "transcription_track": "inbound"})
        self._emit(call, "call.transcription", transcription_data={
            "transcript": reply, "is_final": True, "confidence": script.confidence,
            "transcription_track": "inbound"})

    async def _press(self, call: FakeCall, live: Live, digits: str) -> None:
        """The callee presses keys: webhooks, plus stream frames when a stream is up."""
        session = live.session
        for i, digit in enumerate(digits):
            if i:
                await asyncio.sleep(self.timings.dtmf_gap)
            if call.state == "hangup":
                return
            on_stream = session is not None and session.is_open
            if on_stream:
                assert session is not None
                await session.press_digit(digit)
            if not on_stream or self.timings.dtmf_webhooks_with_stream:
                self._emit(call, "call.dtmf.received", digit=digit)

    async def _scripted_dtmf(self, call: FakeCall) -> None:
        live = self._live[call.call_control_id]
        t0 = asyncio.get_running_loop().time()
        for at, digits in sorted(call.callee.script.dtmf):
            await asyncio.sleep(max(0.0, t0 + at - asyncio.get_running_loop().time()))
            call.callee_said.append(f"dtmf:{digits}")
            await self._press(call, live, digits)

    def _callee_turn(self, call: FakeCall, session: StreamSession) -> None:
        """Our stream playback went quiet: the callee's turn on the stream."""
        if call.state == "hangup" or self._closing:
            return
        run = call.callee
        if run.should_hang_up():
            self._end(call, "normal_clearing", source="callee", by="callee")
            return
        reply = run.next_reply()
        if reply is None:
            return
        self._log(call.call_control_id, "callee.turn", reply=str(reply))
        if isinstance(reply, Press):
            call.callee_said.append(f"dtmf:{reply.digits}")
            self._spawn(self._press(call, self._live[call.call_control_id], reply.digits),
                        f"{call.call_control_id}:press")
        else:
            call.callee_said.append(reply)
            session.speak(self._audio_for(call, reply))

    # -- media streams -----------------------------------------------------------------

    async def _open_stream_task(self, call: FakeCall, live: Live, params: Mapping[str, Any],
                                custom: dict[str, str]) -> None:
        await self._open_stream(call, live, params, custom)

    async def _open_stream(self, call: FakeCall, live: Live, params: Mapping[str, Any],
                           custom: dict[str, str] | None = None) -> bool:
        url = str(params["stream_url"])
        stream_id = str(uuid.uuid4())
        record = StreamRecord(stream_id=stream_id, url=url, target="",
                              auth_token=params.get("stream_auth_token"))
        call.streams.append(record)
        try:
            target = self._router.resolve(url)
        except FakeRoutingError as exc:
            record.end_reason = "failed"
            call.errors.append(str(exc))
            self._emit(call, "streaming.failed", failure_reason="connection_failed",
                       stream_id=stream_id, stream_type="websocket",
                       stream_params={"stream_url": url,
                                      "track": params.get("stream_track", "inbound_track")})
            return False
        record.target = target.local
        session = StreamSession(self, call, record, custom)
        live.session = session
        self._log(call.call_control_id, "stream.dial", url=url, stream_id=stream_id)
        ok = await session.open(target)
        if not ok:
            if live.session is session:
                live.session = None
            self._emit(call, "streaming.failed", failure_reason="connection_failed",
                       stream_id=stream_id, stream_type="websocket",
                       stream_params={"stream_url": url,
                                      "track": params.get("stream_track", "inbound_track")})
            return False
        self._emit(call, "streaming.started", stream_url=url)
        return True

    async def _stop_stream(self, call: FakeCall, session: StreamSession) -> None:
        await session.stop()
        self._emit(call, "streaming.stopped", stream_url=session.record.url)

    def _stream_closed(self, call: FakeCall, session: StreamSession) -> None:
        live = self._live[call.call_control_id]
        if live.session is session:
            live.session = None
        if session.record.end_reason in ("dropped", "closed-by-gateway") and session.started \
                and call.state != "hangup" and self.timings.stream_stopped_webhooks:
            # The stream ended under a live call (lost, or closed by the gateway): Telnyx
            # reports it, and does not redial by itself (a new streaming_start does).
            self._emit(call, "streaming.stopped", stream_url=session.record.url,
                       stream_id=session.stream_id)


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
