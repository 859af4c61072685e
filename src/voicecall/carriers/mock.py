"""The mock carrier: no network, a simulated callee, real call-state timings.

Calls move through ringing -> answered (or busy / no-answer / voicemail) after
the configured delays. The simulated callee answers each listening turn with
the next scripted reply, then hangs up when it has nothing left to say, so
notify and conversation calls both run to completion offline. Everything the
bot says and every DTMF digit sent is recorded on the callee for inspection.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import math
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from voicecall.calls.model import Call, CallEvent, CallState, Direction
from voicecall.carriers.base import (
    CarrierHost,
    DialRequest,
    RemoteStatus,
    SpeechTiming,
    Verification,
    WebhookReply,
)
from voicecall.errors import CarrierError, ProtocolError
from voicecall.gateway.security import RequestView

log = logging.getLogger(__name__)

AnswerMode = Literal["answer", "busy", "no-answer", "voicemail"]
# The manager's alphabet: digits, *, #, and the pauses w/W, p/P and comma.
_DTMF_OK = set("0123456789*#wWpP,")


@dataclass
class SimulatedCallee:
    """One party on the far end of a mock call."""

    provider_call_id: str
    number: str
    replies: list[str]
    heard: list[str] = field(default_factory=list)
    dtmf_received: list[str] = field(default_factory=list)
    ended: bool = False
    turns_answered: int = 0
    # Driven through the mock webhook: the far end lives outside this process and
    # posts its own speech, so listening turns get no scripted reply.
    external: bool = False


@dataclass(frozen=True)
class MockTimings:
    ring_delay_ms: int = 200
    answer_delay_ms: int = 300
    reply_delay_ms: int = 300
    speak_ms_per_char: float = 4.0   # simulated playback time of the bot's speech
    speak_max_ms: int = 1500


class Carrier:
    """In-process carrier. ``start`` must be called before dialling."""

    name = "mock"
    survives_restart = False   # the simulated far end lives in this process
    notify_inline = False
    cache_replies = False
    required_headers: tuple[str, ...] = ()

    def __init__(self, timings: MockTimings | None = None,
                 callee_replies: Sequence[str] = (), *, hangup_after_replies: bool = True,
                 answer: AnswerMode = "answer") -> None:
        self.timings = timings or MockTimings()
        self.callee_replies = list(callee_replies)
        self.hangup_after_replies = hangup_after_replies
        self.answer = answer
        self.callees: dict[str, SimulatedCallee] = {}
        self._host: CarrierHost | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._ids = itertools.count(1)

    # -- lifecycle -------------------------------------------------------
    async def start(self, host: CarrierHost) -> None:
        self._host = host

    async def aclose(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _emit(self, event: CallEvent) -> None:
        if self._host is None:
            raise CarrierError("mock carrier not started")
        try:
            await self._host.handle_event(event)
        except Exception:  # the runtime logs its own failures; keep the simulation going
            log.exception("mock.event_sink_failed", extra={"event_type": event.type})

    def _event(self, kind: Any, pid: str, **fields: Any) -> CallEvent:
        return CallEvent(type=kind, provider_call_id=pid, timestamp=time.time(),
                         dedupe_key=f"mock:{pid}:{kind}:{next(self._ids)}", **fields)

    # -- outbound --------------------------------------------------------
    async def dial(self, req: DialRequest) -> str:
        pid = f"mock-{req.call_id}"
        callee = SimulatedCallee(pid, req.to_number, list(self.callee_replies))
        self.callees[pid] = callee
        self._spawn(self._progress(callee, req))
        return pid

    async def _progress(self, callee: SimulatedCallee, req: DialRequest) -> None:
        t = self.timings
        await asyncio.sleep(t.ring_delay_ms / 1000)
        await self._emit(self._event("call.ringing", callee.provider_call_id))
        await asyncio.sleep(t.answer_delay_ms / 1000)
        if callee.ended:
            return
        if self.answer != "answer":
            callee.ended = True
            await self._emit(self._event("call.ended", callee.provider_call_id,
                                         reason=CallState(self.answer)))
            return
        if req.dtmf_sequence:
            callee.dtmf_received.append(req.dtmf_sequence)
        await self._emit(self._event("call.answered", callee.provider_call_id))

    # -- inbound (simulated caller) --------------------------------------
    async def simulate_inbound(self, from_number: str, to_number: str,
                               replies: Sequence[str] | None = None) -> str:
        """A caller rings in; the callee script plays the caller's side."""
        pid = f"mock-in-{next(self._ids)}"
        callee = SimulatedCallee(pid, from_number,
                                 list(self.callee_replies if replies is None else replies))
        self.callees[pid] = callee
        await self._emit(self._event("call.initiated", pid, direction="inbound",
                                     from_number=from_number, to_number=to_number))
        self._spawn(self._answer_inbound(callee))
        return pid

    async def _answer_inbound(self, callee: SimulatedCallee) -> None:
        await asyncio.sleep(self.timings.answer_delay_ms / 1000)
        if not callee.ended:
            await self._emit(self._event("call.answered", callee.provider_call_id))

    async def press(self, provider_call_id: str, digits: str) -> None:
        """The callee presses keys (inbound DTMF)."""
        await self._emit(self._event("call.dtmf", provider_call_id, digits=digits))

    # -- call control ----------------------------------------------------
    def _live(self, call: Call) -> SimulatedCallee:
        pid = call.provider_call_id or ""
        callee = self.callees.get(pid)
        if callee is None and pid and not call.terminal:
            # A call this carrier neither dialled nor simulated came in through the
            # mock webhook: record what it is asked to do, like a real far end would hear.
            remote = call.from_number if call.direction == "inbound" else call.to_number
            callee = self.callees[pid] = SimulatedCallee(pid, remote, [], external=True)
        if callee is None or callee.ended:
            raise CarrierError(f"mock call {call.provider_call_id} is not active")
        return callee

    async def media_ready(self, call: Call) -> None:
        return None  # no media path to wait for

    def incremental_speech(self, call: Call) -> bool:
        return True  # playback time scales with text, like a real stream

    async def speak(self, call: Call, text: str, *, listen_token: str | None = None,
                    hangup_after: bool = False) -> SpeechTiming | None:
        callee = self._live(call)
        t = self.timings
        await asyncio.sleep(min(len(text) * t.speak_ms_per_char, t.speak_max_ms) / 1000)
        callee.heard.append(text)
        if hangup_after:
            await self.hangup(call)
        elif listen_token is not None:
            await self.start_listening(call, listen_token)
        return SpeechTiming(0.0, 0.0)

    async def start_listening(self, call: Call, turn_token: str) -> None:
        callee = self._live(call)
        if not callee.external:
            self._spawn(self._reply(callee, turn_token))

    async def _reply(self, callee: SimulatedCallee, turn_token: str) -> None:
        await asyncio.sleep(self.timings.reply_delay_ms / 1000)
        if callee.ended:
            return
        pid = callee.provider_call_id
        if callee.turns_answered < len(callee.replies):
            text = callee.replies[callee.turns_answered]
            callee.turns_answered += 1
            await self._emit(self._event("call.speech", pid, transcript=text, is_final=True,
                                         confidence=1.0, turn_token=turn_token))
        elif self.hangup_after_replies:
            callee.ended = True
            await self._emit(self._event("call.ended", pid, reason=CallState.HANGUP_USER))

    async def send_dtmf(self, call: Call, digits: str) -> None:
        if not digits or not set(digits) <= _DTMF_OK:
            raise CarrierError("digits may only contain 0-9, *, #, w, p, comma")
        self._live(call).dtmf_received.append(digits)

    async def hangup(self, call: Call) -> None:
        callee = self.callees.get(call.provider_call_id or "")
        if callee is not None:
            callee.ended = True

    async def reject(self, call: Call) -> None:
        await self.hangup(call)

    async def get_status(self, provider_call_id: str) -> RemoteStatus:
        callee = self.callees.get(provider_call_id)
        if callee is None:
            return "not-found"  # the simulated far end did not survive a restart
        return "terminal" if callee.ended else "active"


    # -- webhooks: unsigned JSON events --------------------------------------
    def verify_webhook(self, req: RequestView, body: bytes) -> Verification:
        return Verification(True, "mock webhooks are unsigned")

    def replay_reply(self) -> WebhookReply:
        return WebhookReply(200, '{"ok":true,"replay":true}', "application/json")

    async def handle_webhook(self, req: RequestView, body: bytes,
                             request_key: str | None) -> WebhookReply:
        try:
            events = parse_webhook(body)
        except ProtocolError as exc:
            return WebhookReply(400, str(exc))
        if self._host is None:
            return WebhookReply(503, "runtime not started")
        for event in events:
            await self._host.handle_event(event)
        return WebhookReply(200, json.dumps({"ok": True, "events": len(events)}),
                            "application/json")


# -- webhook (JSON events, for driving the mock from outside) -------------
_EVENT_TYPES = {
    "call.initiated", "call.ringing", "call.answered", "call.active", "call.speaking",
    "call.speech", "call.silence", "call.dtmf", "call.ended", "call.error",
}


def parse_webhook(body: bytes) -> list[CallEvent]:
    """Parse ``{"event": {...}}`` or ``{"events": [...]}`` into events.

    Pure. Field names follow the normalised event (camelCase on the wire).
    """
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise ProtocolError(f"mock webhook body is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ProtocolError("mock webhook body must be an object")
    raw = doc.get("events", [doc["event"]] if "event" in doc else None)
    if not isinstance(raw, list) or not raw:
        raise ProtocolError("mock webhook needs 'event' or a non-empty 'events' list")
    return [_parse_event(i, item) for i, item in enumerate(raw)]


def _parse_event(i: int, item: object) -> CallEvent:
    if not isinstance(item, dict):
        raise ProtocolError(f"events[{i}] must be an object")
    kind = item.get("type")
    if kind not in _EVENT_TYPES:
        raise ProtocolError(f"events[{i}].type must be one of {sorted(_EVENT_TYPES)}")
    if not item.get("callId") and not item.get("providerCallId"):
        raise ProtocolError(f"events[{i}] needs callId or providerCallId")

    def text(key: str) -> str | None:
        value = item.get(key)
        if value is not None and not isinstance(value, str):
            raise ProtocolError(f"events[{i}].{key} must be a string")
        return value or None

    def number(key: str) -> float | None:
        value = item.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) \
                or not math.isfinite(value):
            raise ProtocolError(f"events[{i}].{key} must be a number")
        return float(value)

    def flag(key: str, default: bool) -> bool:
        value = item.get(key, default)
        if not isinstance(value, bool):
            raise ProtocolError(f"events[{i}].{key} must be true or false")
        return value

    reason = text("reason")
    direction = text("direction")
    if direction not in (None, "inbound", "outbound"):
        raise ProtocolError(f"events[{i}].direction must be inbound or outbound")
    try:
        end_reason = CallState(reason) if reason else None
    except ValueError:
        raise ProtocolError(f"events[{i}].reason {reason!r} is not an end reason") from None
    if end_reason is not None and not end_reason.terminal:
        raise ProtocolError(f"events[{i}].reason {reason!r} is not an end reason")
    return CallEvent(
        type=kind,
        call_id=text("callId"),
        provider_call_id=text("providerCallId"),
        timestamp=number("timestamp") or time.time(),
        dedupe_key=text("id") or text("dedupeKey"),
        turn_token=text("turnToken"),
        direction=cast("Direction | None", direction),  # checked just above
        from_number=text("from"),
        to_number=text("to"),
        text=text("text"),
        transcript=text("transcript"),
        is_final=flag("isFinal", True),
        confidence=number("confidence"),
        digits=text("digits"),
        reason=end_reason,
        error=text("error"),
        retryable=flag("retryable", False),
    )
