"""The call manager: the one place where events meet state, storage and speech.

Carrier shells report ``CallEvent``s to ``handle_event``; operators act through
``initiate`` / ``continue_call`` / ``speak`` / ``send_dtmf`` / ``end``. Every
change goes through the pure ``transition`` and is persisted before anything
is acknowledged or any carrier is asked to act on it.

Per-call work (playback, auto-responses, timers) runs in tasks owned by the
call's ``_Live`` entry and is cancelled when the call ends, so no task
outlives its call.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import secrets
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from voicecall.agent import ResponseRequest, SessionMemory
from voicecall.agent.base import Responder
from voicecall.agent.stream import SpokenStream
from voicecall.calls import (
    Call,
    CallEvent,
    CallState,
    Effect,
    Mode,
    new_call_id,
    session_key_for,
    transition,
)
from voicecall.carriers.base import Carrier, DialRequest, SpeechTiming
from voicecall.config import VoiceCallConfig, effective_config, normalize_e164, route_key_for
from voicecall.errors import (
    CallNotFoundError,
    CallStateError,
    CarrierError,
    UsageError,
    VoicecallError,
)
from voicecall.store import CallStore

if TYPE_CHECKING:
    from voicecall.gateway.realtime.fast import FastContext

log = logging.getLogger("voicecall.manager")

DEFAULT_GREETING = "Hello! How can I help you today?"
DTMF_RE = re.compile(r"[0-9*#wWpP,]+")
E164_RE = re.compile(r"\+[1-9][0-9]{1,14}")
REAPER_INTERVAL_S = 30.0
DTMF_FLUSH_S = 1.5          # digits typed within this gap form one keypad turn
DTMF_PREFIX = "[keypad]"    # how keypresses read in the agent's conversation
LIVE_STATES = (CallState.SPEAKING, CallState.LISTENING)


@dataclass
class _Waiter:
    token: str
    future: asyncio.Future[str]


@dataclass
class _Live:
    """Runtime-only state of a call that is not terminal."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    waiter: _Waiter | None = None
    turn_token: str | None = None
    listen_started_at: float | None = None
    turn_gen: int = 0          # bumps on each caller turn; stale replies are dropped
    turns: int = 0
    initial_in_flight: bool = False
    max_timer: asyncio.Task[None] | None = None
    last_timing: SpeechTiming | None = None  # from the latest carrier.speak()
    keys: str = ""             # caller DTMF collected for the agent
    keys_flush: asyncio.Task[None] | None = None


class _TurnClock:
    """Per-turn latency marks, in ms after the caller's final transcript."""

    def __init__(self, heard_at: float, clock: Callable[[], float]) -> None:
        self.heard_at = heard_at
        self.clock = clock
        self.marks: dict[str, float] = {}

    def mark(self, name: str) -> None:
        if name not in self.marks:
            self.marks[name] = round((self.clock() - self.heard_at) * 1000, 1)

    def add_timing(self, timing: SpeechTiming | None) -> None:
        start = self.marks.get("speechStartMs")
        if timing is None or start is None:
            return
        if timing.tts_first_byte_ms is not None:
            self.marks["ttsFirstByteMs"] = round(start + timing.tts_first_byte_ms, 1)
        if timing.first_frame_ms is not None:
            self.marks["firstFrameMs"] = round(start + timing.first_frame_ms, 1)

    def breakdown(self, agent_first_token_ms: float | None) -> dict[str, float | None]:
        out: dict[str, float | None] = {k: v for k, v in self.marks.items()
                                        if k != "speechStartMs"}
        out.setdefault("agentFirstTokenMs", agent_first_token_ms)
        return out


class CallManager:
    def __init__(self, config: VoiceCallConfig, carrier: Carrier, store: CallStore,
                 responder: Responder, *, clock: Callable[[], float] = time.time,
                 memory: SessionMemory | None = None) -> None:
        self.config = config
        self.carrier = carrier
        self.store = store
        self.responder = responder
        self.clock = clock
        self.memory = memory or SessionMemory()
        # Realtime fastContext search (set by the runtime when enabled).
        self.fast_context: FastContext | None = None
        self._calls: dict[str, Call] = {}
        self._live: dict[str, _Live] = {}
        self._by_provider: dict[str, str] = {}
        self._reserved = 0
        self._rejected: set[str] = set()
        self._bg: set[asyncio.Task[Any]] = set()
        self._closing = False
        self._listeners: list[Callable[[dict[str, Any]], None]] = []
        self._writes: asyncio.Queue[tuple[Callable[..., list[dict[str, Any]]], tuple[Any, ...],
                                          asyncio.Future[list[dict[str, Any]]]]] = \
            asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        await self.carrier.start(self)
        await self._restore()
        if self.config.stale_call_reaper_seconds > 0:
            self._spawn_bg(self._reaper_loop())

    async def aclose(self, *, handover: bool | None = None) -> None:
        """Stop: hand live calls over to the next start, or end them.

        Carriers whose calls outlive this process (real ones) hand over: the
        record stays live and the next start verifies it with the carrier.
        The in-process mock cannot, so its calls are ended cleanly.
        """
        self._closing = True
        keep = getattr(self.carrier, "survives_restart", False) if handover is None else handover
        for call_id in list(self._live):
            call = self._calls.get(call_id)
            if call is None or call.terminal:
                continue
            if keep:
                await self._persist(call.with_metadata(handedOverAt=self.clock()), [])
                self._drop_live(call_id)
            else:
                with contextlib.suppress(VoicecallError):
                    await self.end(call_id, reason=CallState.HANGUP_BOT)
        for task in list(self._bg):
            task.cancel()
        for task in list(self._bg):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.carrier.aclose()
        await self.drain_writes()  # nothing queued is lost on a clean stop
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer

    def subscribe(self, listener: Callable[[dict[str, Any]], None]) -> None:
        """Receive every event record as it is persisted (used by the demo)."""
        self._listeners.append(listener)

    # ------------------------------------------------------------------ lookups
    def get(self, call_id: str) -> Call | None:
        """A call by internal or carrier id: live first, then the store."""
        internal = self._by_provider.get(call_id, call_id)
        if internal in self._calls:
            return self._calls[internal]
        return self.store.get(call_id) or self.store.get_by_provider_id(call_id)

    def active_calls(self) -> list[Call]:
        return [c for c in self._calls.values() if not c.terminal]

    def _require_live(self, call_id: str) -> Call:
        call = self.get(call_id)
        if call is None:
            raise CallNotFoundError(f"call not found: {call_id}")
        if call.terminal or call.call_id not in self._live:
            ended = call.ended_at
            when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ended)) if ended else "-"
            reason = call.end_reason.value if call.end_reason else "-"
            raise CallStateError(
                f"call is not active (last state={call.state.value}, endReason={reason}, "
                f"endedAt={when})")
        return call

    # ------------------------------------------------------------------ persistence
    async def _persist(self, call: Call, events: list[dict[str, Any]], *,
                       wait: bool = True, processed_key: str | None = None) -> Call:
        """Save the snapshot and its event records through the ordered writer.

        ``wait=True`` returns once both are durable (anything acknowledged to a
        carrier or an operator goes this way) and only then updates the live
        state, so a failed write changes nothing and can be retried. ``wait=False``
        is for the speech hot path (a stream transcript, "now speaking"): the live
        state moves at once and the write follows in order, so audio does not wait
        for an fsync; a write that then fails is logged.
        """
        if not wait:
            return self._persist_soon(call, events, processed_key)
        written = await self._submit(
            functools.partial(self.store.save, processed_key=processed_key), call, events)
        self._remember(call)
        self._notify(written)
        return call

    def _persist_soon(self, call: Call, events: list[dict[str, Any]],
                      processed_key: str | None = None) -> Call:
        """``_persist(wait=False)``, callable outside a coroutine: the live state moves
        at once, the write follows in order (a failure is logged)."""
        self._submit(functools.partial(self.store.save, processed_key=processed_key),
                     call, events).add_done_callback(self._after_background_write)
        self._remember(call)
        return call

    def _remember(self, call: Call) -> None:
        self._calls[call.call_id] = call
        if call.provider_call_id:
            self._by_provider[call.provider_call_id] = call.call_id

    def _notify(self, written: list[dict[str, Any]]) -> None:
        for rec in written:
            for listener in self._listeners:
                listener(rec)

    def _after_background_write(self, fut: asyncio.Future[list[dict[str, Any]]]) -> None:
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is not None:
            log.error("store.write_failed", extra={"why": str(exc)})
            return
        self._notify(fut.result())

    def _submit(self, fn: Callable[..., list[dict[str, Any]]],
                *args: Any) -> asyncio.Future[list[dict[str, Any]]]:
        """Queue a store write; writes run one at a time, in submission order."""
        loop = asyncio.get_running_loop()
        if self._writer is None or self._writer.done():
            self._writer = loop.create_task(self._write_loop())
        fut: asyncio.Future[list[dict[str, Any]]] = loop.create_future()
        self._writes.put_nowait((fn, args, fut))
        return fut

    async def _write_loop(self) -> None:
        while True:
            fn, args, fut = await self._writes.get()
            try:
                written = await asyncio.to_thread(fn, *args)
            except Exception as exc:  # handed to whoever waits on the write
                if not fut.done():
                    fut.set_exception(exc)
            else:
                if not fut.done():
                    fut.set_result(written)
            finally:
                self._writes.task_done()

    async def drain_writes(self) -> None:
        """Wait until every queued write is durable."""
        if self._writer is not None and not self._writer.done():
            await self._writes.join()

    async def _record(self, events: list[dict[str, Any]], *, wait: bool = False) -> None:
        fut = self._submit(self.store.append_events, events)
        if wait:
            self._notify(await fut)
        else:
            fut.add_done_callback(self._after_background_write)

    def _diff_events(self, old: Call | None, new: Call) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if old is None or old.state is not new.state:
            ev: dict[str, Any] = {"type": "call.state", "callId": new.call_id,
                                  "state": new.state.value,
                                  "prev": old.state.value if old else None,
                                  "direction": new.direction, "provider": new.provider,
                                  "mode": new.mode}
            if new.end_reason:
                ev["reason"] = new.end_reason.value
            out.append(ev)
        start = len(old.transcript) if old else 0
        for entry in new.transcript[start:]:
            out.append({"type": "transcript", "callId": new.call_id, "speaker": entry.speaker,
                        "text": entry.text})
        dstart = len(old.dtmf) if old else 0
        for digits in new.dtmf[dstart:]:
            out.append({"type": "dtmf", "callId": new.call_id, "digits": digits,
                        "direction": "in"})
        return out

    async def _apply(self, call: Call, event: CallEvent, *, wait: bool = True,
                     processed_key: str | None = None) -> tuple[Call, list[Effect]]:
        """Transition + persist. Caller holds the call's lock.

        ``processed_key`` is committed with the snapshot when there is one; when the
        event changes nothing it is committed on its own.
        """
        new, effects = transition(call, event)
        if new is not call:
            await self._persist(new, self._diff_events(call, new), wait=wait,
                                processed_key=processed_key)
        elif processed_key is not None:
            await asyncio.to_thread(self.store.mark_processed, processed_key, call.call_id)
        return new, effects

    # ------------------------------------------------------------------ tasks
    def _spawn(self, call_id: str, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        live = self._live[call_id]
        task = asyncio.get_running_loop().create_task(self._guard(call_id, coro))
        live.tasks.add(task)
        task.add_done_callback(live.tasks.discard)
        return task

    def _spawn_bg(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(self._guard(None, coro))
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)

    async def _guard(self, call_id: str | None, coro: Coroutine[Any, Any, Any]) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("call.task_failed", extra={"call_id": call_id})

    def _drop_live(self, call_id: str) -> None:
        live = self._live.pop(call_id, None)
        if live is None:
            return
        current = asyncio.current_task()
        for task in list(live.tasks):
            if task is not current:
                task.cancel()
        if live.max_timer is not None and live.max_timer is not current:
            live.max_timer.cancel()

    # ------------------------------------------------------------------ outbound
    async def initiate(self, to: str | None, message: str | None, mode: Mode | None = None,
                       dtmf_sequence: str | None = None,
                       session_key: str | None = None) -> Call:
        cfg = self.config
        if self._closing:
            raise CallStateError("gateway is shutting down")
        target = to or cfg.to_number
        if not target:
            raise UsageError("no destination: pass 'to' or set toNumber")
        if not E164_RE.fullmatch(target):
            raise UsageError(f"'to' must be E.164, e.g. +15550001234 (got {target!r})")
        call_mode: Mode = mode or cfg.outbound.default_mode
        if call_mode not in ("notify", "conversation"):
            raise UsageError("mode must be notify or conversation")
        if dtmf_sequence is not None:
            if call_mode != "conversation":
                raise UsageError('dtmfSequence is only valid with mode: "conversation"')
            if not DTMF_RE.fullmatch(dtmf_sequence):
                raise UsageError("digits may only contain digits, *, #, comma, w, p")
        if call_mode == "notify" and not message:
            raise UsageError("message is required for a notify call")
        from_number = cfg.from_number or "+15550000000"
        # Reserve capacity before the write so a failed write frees it again.
        if len(self.active_calls()) + self._reserved >= cfg.max_concurrent_calls:
            raise CallStateError(
                f"Maximum concurrent calls ({cfg.max_concurrent_calls}) reached")
        self._reserved += 1
        call_id = new_call_id()
        try:
            call = Call(
                call_id=call_id, provider=self.carrier.name, direction="outbound",
                state=CallState.INITIATED, from_number=from_number, to_number=target,
                started_at=self.clock(), mode=call_mode,
                session_key=session_key_for(cfg.session_scope, call_id, "outbound",
                                            from_number, target, cfg.agent_id or "main",
                                            session_key),
                metadata={"initialMessage": message} if message else {},
            )
            self._live[call_id] = _Live()
            await self._persist(call, self._diff_events(None, call))
        except BaseException:
            self._live.pop(call_id, None)
            raise
        finally:
            self._reserved -= 1
        try:
            pid = await self.carrier.dial(DialRequest(
                call_id=call_id, from_number=from_number, to_number=target, mode=call_mode,
                message=message, dtmf_sequence=dtmf_sequence,
                ring_timeout_ms=cfg.ring_timeout_ms))
        except VoicecallError as exc:
            async with self._live[call_id].lock:
                failed, _ = await self._apply(self._calls[call_id], CallEvent(
                    "call.error", call_id=call_id, timestamp=self.clock(), error=str(exc)))
            self._finalize_live(failed)
            raise
        # Known before the first await: the carrier may report on the call right away.
        self._by_provider[pid] = call_id
        live = self._live.get(call_id)  # None if it already ended (an event during the dial)
        async with live.lock if live is not None else contextlib.nullcontext():
            call = await self._persist(self._calls[call_id].replace(provider_call_id=pid), [])
        log.info("call.initiated", extra={"call_id": call_id, "mode": call_mode})
        return call

    # ------------------------------------------------------------------ events
    async def handle_event(self, event: CallEvent, *, ack: bool = True) -> None:
        """The carrier sink. Returns once the event's effect on state is durable.

        ``ack=False`` is for events nobody acknowledges or re-sends (transcripts and
        keys read off a live media stream): they skip the replay bookkeeping and
        their write follows in the background, so the reply is not held up by it.
        """
        call_id = event.call_id or self._by_provider.get(event.provider_call_id or "")
        if call_id is None and event.provider_call_id:
            stored = self.store.get_by_provider_id(event.provider_call_id)
            call_id = stored.call_id if stored else None
        dedupe = event.dedupe_key if ack else None
        if dedupe and self.store.is_processed(dedupe):
            log.info("event.replay_ignored", extra={"call_id": call_id})
            return
        if call_id is None or call_id not in self._live:
            if call_id is None and event.provider_call_id and event.direction:
                await self._register_untracked(event)
                return
            known = self._calls.get(call_id) if call_id else None
            if known is not None and known.metadata.get("rejectionReason") \
                    and (known.provider_call_id or "") not in self._rejected:
                await self._hangup_rejected(known, event)  # an earlier hangup failed
                return
            log.info("event.unknown_or_ended_call", extra={"event_type": event.type})
            if call_id and dedupe:
                self.store.mark_processed(dedupe, call_id)
            return
        live = self._live[call_id]
        if (event.type == "call.speech" and event.turn_token and live.turn_token
                and event.turn_token != live.turn_token):
            log.warning("speech.stale_turn_token", extra={"call_id": call_id})
            return
        async with live.lock:
            if call_id not in self._live:
                return
            call = self._calls[call_id]
            # Checked again under the lock: a concurrent delivery of this event may have won.
            if dedupe and self.store.is_processed(dedupe):
                return
            if event.provider_call_id and call.provider_call_id != event.provider_call_id and (
                    call.provider_call_id is None or event.call_id == call_id):
                # First carrier id, or the carrier switched ids (Plivo: request uuid ->
                # CallUUID); the event names our call explicitly, so adopt the new one.
                stale = call.provider_call_id
                call = await self._persist(call.replace(provider_call_id=event.provider_call_id),
                                           [])
                if stale:
                    self._by_provider.pop(stale, None)
            # The dedupe key is committed with the event's effect (same transaction):
            # a failed write stays retryable instead of turning the carrier's retry into
            # a "replay", and a crash can never apply a retry twice. A retryable carrier
            # error is kept replayable too (it changed nothing).
            key = dedupe if dedupe and not (event.type == "call.error"
                                            and event.retryable) else None
            try:
                call, effects = await self._apply(call, event, wait=ack, processed_key=key)
            except CallStateError as exc:
                log.info("event.out_of_order", extra={"call_id": call_id, "why": str(exc)})
                effects = []
                if key is not None:
                    self.store.mark_processed(key, call_id)
        await self._run_effects(call, effects, event)

    async def _register_untracked(self, event: CallEvent) -> None:
        cfg = self.config
        pid = event.provider_call_id or ""
        direction = event.direction or "inbound"
        call_id = new_call_id()
        from_number = event.from_number or ""
        to_number = event.to_number or ""
        route_key = route_key_for(cfg, to_number) if direction == "inbound" else None
        eff = effective_config(cfg, route_key)
        call = Call(
            call_id=call_id, provider=self.carrier.name, direction=direction,
            state=CallState.RINGING, from_number=from_number, to_number=to_number,
            started_at=event.timestamp or self.clock(), provider_call_id=pid,
            session_key=session_key_for(cfg.session_scope, call_id, direction, from_number,
                                        to_number, eff.agent_id or "main"),
            number_route_key=route_key, mode="conversation",
        )
        # Claimed before the first await, so a concurrent duplicate delivery finds this call.
        self._by_provider[pid] = call_id
        try:
            if direction == "inbound":
                allowed, why = self._inbound_allowed(from_number)
                if not allowed:
                    await self._reject_inbound(call, event, why)
                    return
                if len(self.active_calls()) + self._reserved >= cfg.max_concurrent_calls:
                    await self._reject_inbound(call, event, "capacity")
                    return
                greeting = eff.inbound_greeting or DEFAULT_GREETING
                call = call.with_metadata(initialMessage=greeting, numberRouteKey=route_key)
            live = self._live[call_id] = _Live()
            async with live.lock:
                await self._persist(call, self._diff_events(None, call))
                if event.dedupe_key:
                    self.store.mark_processed(event.dedupe_key, call_id)
        except BaseException:
            self._live.pop(call_id, None)
            if call_id not in self._calls and self._by_provider.get(pid) == call_id:
                del self._by_provider[pid]  # nothing durable: let a retry register afresh
            raise
        log.info("call.registered", extra={"call_id": call_id, "direction": direction})

    def _inbound_allowed(self, from_number: str) -> tuple[bool, str]:
        policy = self.config.inbound_policy
        if policy == "disabled":
            return False, "inbound-policy"
        if policy == "open":
            return True, ""
        caller = normalize_e164(from_number)
        if caller is None:
            return False, "inbound-policy"
        digits = re.sub(r"\D", "", caller)
        allowed = {re.sub(r"\D", "", n) for n in self.config.allow_from}
        return (digits in allowed), "inbound-policy"

    async def _reject_inbound(self, call: Call, event: CallEvent, reason: str) -> None:
        now = self.clock()
        rejected = call.replace(state=CallState.HANGUP_BOT, end_reason=CallState.HANGUP_BOT,
                                ended_at=now).with_metadata(rejectionReason=reason)
        await self._persist(rejected, self._diff_events(None, rejected))
        log.info("call.inbound_rejected", extra={"call_id": call.call_id, "why": reason})
        await self._hangup_rejected(rejected, event)

    async def _hangup_rejected(self, rejected: Call, event: CallEvent) -> None:
        """Hang up a rejected inbound call, once per carrier id.

        If the hangup fails, the event's dedupe key stays uncommitted, so the
        carrier's retry of the webhook tries the hangup again.
        """
        pid = rejected.provider_call_id or ""
        if pid not in self._rejected:
            self._rejected.add(pid)
            try:
                await self.carrier.reject(rejected)
            except VoicecallError:
                self._rejected.discard(pid)
                raise
        if event.dedupe_key:
            self.store.mark_processed(event.dedupe_key, rejected.call_id)

    async def _run_effects(self, call: Call, effects: list[Effect], event: CallEvent) -> None:
        for eff in effects:
            if eff.kind == "answered":
                self._start_max_timer(call)
                self._spawn(call.call_id, self._on_answered(call.call_id))
            elif eff.kind == "transcript-final":
                await self._on_transcript(call, str(eff.data["transcript"]), event)
            elif eff.kind == "dtmf":
                self._on_keys(call, str(eff.data["digits"]))
            elif eff.kind == "finalize":
                self._finalize_live(call)

    def _on_keys(self, call: Call, digits: str) -> None:
        """Caller keypresses reach the agent as one turn: on ``#`` or after a short pause."""
        live = self._live.get(call.call_id)
        if live is None:
            return
        live.keys += digits
        if live.keys_flush is not None:
            live.keys_flush.cancel()
        delay = 0.0 if digits.endswith("#") else DTMF_FLUSH_S
        live.keys_flush = self._spawn(call.call_id, self._flush_keys(call.call_id, delay))

    async def _flush_keys(self, call_id: str, delay: float) -> None:
        await asyncio.sleep(delay)
        live = self._live.get(call_id)
        if live is None or not live.keys:
            return
        keys, live.keys = live.keys, ""
        call = self._calls[call_id]
        await self._on_transcript(call, f"{DTMF_PREFIX} {keys}", None)

    def _finalize_live(self, call: Call) -> None:
        live = self._live.get(call.call_id)
        if live is not None and live.waiter is not None and not live.waiter.future.done():
            reason = call.end_reason.value if call.end_reason else "ended"
            live.waiter.future.set_exception(CallStateError(f"Call ended: {reason}"))
        self._drop_live(call.call_id)
        log.info("call.ended", extra={"call_id": call.call_id,
                                      "reason": call.end_reason.value if call.end_reason else None})

    # ------------------------------------------------------------------ timers
    def _start_max_timer(self, call: Call, remaining_s: float | None = None) -> None:
        live = self._live.get(call.call_id)
        if live is None:
            return
        if live.max_timer is not None:
            live.max_timer.cancel()
        delay = self.config.max_duration_seconds if remaining_s is None else remaining_s
        live.max_timer = asyncio.get_running_loop().create_task(
            self._guard(call.call_id, self._max_duration(call.call_id, max(0.0, delay))))

    async def _max_duration(self, call_id: str, delay: float) -> None:
        await asyncio.sleep(delay)
        live = self._live.get(call_id)
        if live is not None:
            live.max_timer = None  # this task is finishing; do not cancel it from end()
        log.info("call.max_duration", extra={"call_id": call_id})
        with contextlib.suppress(VoicecallError):
            await self.end(call_id, reason=CallState.TIMEOUT)

    async def _reaper_loop(self) -> None:
        interval = min(REAPER_INTERVAL_S, max(0.05, self.config.stale_call_reaper_seconds / 4))
        while True:
            await asyncio.sleep(interval)
            await self.reap_stale()

    async def reap_stale(self) -> list[str]:
        """End calls never answered within ``staleCallReaperSeconds`` (live turns excepted)."""
        limit = self.config.stale_call_reaper_seconds
        if limit <= 0:
            return []
        now = self.clock()
        reaped = []
        for call in self.active_calls():
            if call.answered_at is not None or call.state in LIVE_STATES:
                continue
            if now - call.started_at > limit:
                with contextlib.suppress(VoicecallError):
                    await self.end(call.call_id, reason=CallState.TIMEOUT,
                                   note="stale-call-reaper")
                    reaped.append(call.call_id)
        return reaped

    # ------------------------------------------------------------------ speech
    def uses_realtime(self, call: Call) -> bool:
        """The carrier bridges this call to a realtime voice model (it greets and replies)."""
        check = getattr(self.carrier, "uses_realtime", None)
        return bool(check(call)) if check is not None else False

    def consume_initial_message(self, call_id: str) -> str | None:
        """Take the call's initial message (a realtime bridge turns it into the opening turn)."""
        call = self._calls.get(call_id)
        if call is None:
            return None
        message = call.metadata.get("initialMessage")
        if message:
            self._persist_soon(call.with_metadata(initialMessage=None), [])
        return str(message) if message else None

    def barge_in_allowed(self, call_id: str) -> bool:
        """Caller speech may cut the bot off, except over an outbound greeting that is sounding."""
        call = self.get(call_id)
        if call is None or call.terminal:
            return False
        live = self._live.get(call.call_id)
        greeting = bool(call.metadata.get("initialMessage")) and (
            live is not None and live.initial_in_flight)
        return not (call.direction == "outbound" and call.mode == "conversation"
                    and call.state is CallState.SPEAKING and greeting)

    async def _on_answered(self, call_id: str) -> None:
        call = self._calls[call_id]
        message = call.metadata.get("initialMessage")
        live = self._live.get(call_id)
        if live is None or live.initial_in_flight:
            return
        notify = call.mode == "notify" and call.direction == "outbound"
        if notify and self.carrier.notify_inline and message:
            # The message went out with the dial request; record it, nothing to play.
            async with live.lock:
                cur, _ = await self._apply(self._calls[call_id], CallEvent(
                    "call.speaking", call_id=call_id, timestamp=self.clock(), text=str(message)))
                await self._persist(cur.with_metadata(initialMessage=None), [])
            return
        if self.uses_realtime(call):
            return  # the realtime bridge greets with the model's own opening turn (no <Say>)
        await self.carrier.media_ready(call)
        if not message:
            if call.mode == "conversation":
                await self._listen(call_id)
            return
        live.initial_in_flight = True
        try:
            ok = await self._say(call_id, str(message), initial=True, listen=not notify)
        finally:
            live.initial_in_flight = False
        if notify and ok:
            await asyncio.sleep(self.config.outbound.notify_hangup_delay_sec)
            with contextlib.suppress(VoicecallError):
                await self.end(call_id, reason=CallState.COMPLETED)

    async def _say(self, call_id: str, text: str, *, initial: bool = False,
                   listen: bool = False, token: str | None = None,
                   hangup_after: bool = False, record: bool = True) -> bool:
        """Speak ``text`` (then open a caller turn when ``listen``).

        True when the carrier delivered it. A failure returns the call to
        listening and, for the initial message, keeps it for a retry.
        """
        live = self._live.get(call_id)
        if live is None:
            return False
        async with live.lock:
            call, _ = await self._apply(self._calls[call_id], CallEvent(
                "call.speaking", call_id=call_id, timestamp=self.clock(),
                text=text if record else None), wait=False)
        session = call.session_key or call.call_id
        listen_token = (token or secrets.token_urlsafe(12)) if listen else None
        if listen_token is not None:
            live.turn_token = listen_token
        gen = live.turn_gen
        try:
            live.last_timing = await self.carrier.speak(
                call, text, listen_token=listen_token, hangup_after=hangup_after)
        except VoicecallError as exc:
            log.warning("speak.failed", extra={"call_id": call_id, "why": str(exc)})
            await self._to_listening(call_id)
            return False
        if listen_token is not None:
            live.listen_started_at = self.clock()
        if record:
            self.memory.add(session, "bot", text)
        if initial:
            async with live.lock:
                if call_id in self._live:
                    cur = self._calls[call_id]
                    await self._persist(cur.with_metadata(initialMessage=None), [])
        if listen_token is not None and live.turn_gen == gen:
            await self._to_listening(call_id)  # unless the caller already answered
        return True

    async def _to_listening(self, call_id: str) -> None:
        live = self._live.get(call_id)
        if live is None:
            return
        async with live.lock:
            if call_id in self._live:
                with contextlib.suppress(CallStateError):
                    await self._apply(self._calls[call_id], CallEvent(
                        "call.listening", call_id=call_id, timestamp=self.clock()), wait=False)

    async def _listen(self, call_id: str, token: str | None = None) -> None:
        """Open the next caller turn."""
        live = self._live.get(call_id)
        if live is None:
            return
        await self._to_listening(call_id)
        live.turn_token = token or secrets.token_urlsafe(12)
        live.listen_started_at = self.clock()
        try:
            await self.carrier.start_listening(self._calls[call_id], live.turn_token)
        except VoicecallError as exc:
            log.warning("listen.failed", extra={"call_id": call_id, "why": str(exc)})

    async def _on_transcript(self, call: Call, text: str, event: CallEvent | None) -> None:
        live = self._live.get(call.call_id)
        if live is None:
            return
        session = call.session_key or call.call_id
        self.memory.add(session, "user", text)
        now = self.clock()
        live.turns += 1
        live.turn_gen += 1
        if live.waiter is not None and not live.waiter.future.done():
            live.waiter.future.set_result(text)
            return
        if call.mode != "conversation" or self.uses_realtime(call):
            return  # a realtime model answers on its own
        listen_wait = (now - live.listen_started_at) * 1000 if live.listen_started_at else None
        self._spawn(call.call_id, self._auto_respond(
            call.call_id, text, live.turn_gen, live.turns, now, listen_wait,
            event.endpoint_ms if event is not None else None))

    async def _auto_respond(self, call_id: str, text: str, gen: int, turn: int,
                            heard_at: float, listen_wait_ms: float | None,
                            endpoint_ms: float | None = None) -> None:
        """One caller turn -> the agent -> speech.

        Where the carrier benefits (a media stream), the reply is spoken sentence
        by sentence while the agent is still writing it, so speech starts after
        the first sentence instead of the whole reply.
        """
        call = self._calls[call_id]
        eff = effective_config(self.config, call.number_route_key)
        session = call.session_key or call.call_id
        history = self.memory.history(session)[:-1]  # the new user turn is user_text
        req = ResponseRequest(
            call_id=call_id, session_key=session, user_text=text, history=history,
            system_prompt=eff.response_system_prompt, model=eff.response_model,
            timeout_ms=eff.response_timeout_ms,
            caller_number=call.from_number if call.direction == "inbound" else call.to_number,
            agent_id=eff.agent_id or "main")
        clock = _TurnClock(heard_at, self.clock)
        if endpoint_ms is not None:
            clock.marks["endpointMs"] = round(endpoint_ms, 1)
        incremental = self.carrier.incremental_speech(call)
        sentences: asyncio.Queue[str | None] = asyncio.Queue()
        spoken = SpokenStream()

        async def on_text(delta: str) -> None:
            clock.mark("agentFirstTokenMs")
            for sentence in spoken.feed(delta):
                clock.mark("firstSentenceMs")
                sentences.put_nowait(sentence)

        speaker = self._spawn(call_id, self._speak_sentences(call_id, sentences, gen, clock)) \
            if incremental else None
        try:
            result = await self.responder.respond(req, on_text if incremental else None)
        except VoicecallError as exc:
            log.warning("agent.failed", extra={"call_id": call_id, "why": str(exc)})
            if speaker is not None:
                sentences.put_nowait(None)
                await asyncio.gather(speaker, return_exceptions=True)
            await self._listen(call_id)
            return
        live = self._live.get(call_id)
        if live is None or live.turn_gen != gen:
            if speaker is not None:
                sentences.put_nowait(None)
            return  # the caller spoke again; this reply is stale
        clock.mark("agentMs")
        if speaker is not None:
            for sentence in spoken.finish():
                clock.mark("firstSentenceMs")
                sentences.put_nowait(sentence)
            if not spoken.spoken_so_far and result.text:
                sentences.put_nowait(result.text)  # plain-text rules found words the stream held
            sentences.put_nowait(None)
            said = bool(await speaker)
        elif result.text:
            clock.mark("speechStartMs")
            said = await self._say(call_id, result.text, listen=not result.end_call,
                                   hangup_after=result.end_call)
            clock.add_timing(live.last_timing)
        else:
            said = False
        if "speechStartMs" in clock.marks:
            await self._record([{
                "type": "turn", "callId": call_id, "turn": turn, "kind": "auto",
                "latencyMs": clock.marks["speechStartMs"],
                "listenWaitMs": round(listen_wait_ms, 1) if listen_wait_ms is not None else None,
                "breakdown": clock.breakdown(result.first_token_ms),
            }])
        if result.end_call:
            # Goodbye words are heard in full: the carrier hangs up after them (TwiML) or
            # the stream has played them to the end before we hang up.
            with contextlib.suppress(VoicecallError):
                await self.end(call_id, reason=CallState.HANGUP_BOT,
                               carrier_hangup=not said or incremental)
            return
        if (incremental or not result.text) and self._live.get(call_id) is live \
                and live.turn_gen == gen:
            await self._listen(call_id)

    async def _speak_sentences(self, call_id: str, sentences: asyncio.Queue[str | None],
                               gen: int, clock: _TurnClock) -> bool:
        """Speak queued sentences in order until the end marker or a new caller turn.

        The reply goes into the transcript (and the agent's memory) once, as what
        was actually played.
        """
        played: list[str] = []
        while (sentence := await sentences.get()) is not None:
            live = self._live.get(call_id)
            if live is None or live.turn_gen != gen:
                continue  # barged in: drop the rest of this reply
            first = "speechStartMs" not in clock.marks
            clock.mark("speechStartMs")
            if not await self._say(call_id, sentence, record=False):
                continue
            played.append(sentence)
            if first:
                clock.add_timing(live.last_timing)
        live = self._live.get(call_id)
        if played and live is not None:
            text = " ".join(played)
            call = self._calls[call_id]
            self.memory.add(call.session_key or call.call_id, "bot", text)
            async with live.lock:
                if call_id in self._live:
                    await self._apply(self._calls[call_id], CallEvent(
                        "call.said", call_id=call_id, timestamp=self.clock(), text=text),
                        wait=False)
        return bool(played)

    # ------------------------------------------------------------------ operator actions
    async def speak(self, call_id: str, message: str) -> None:
        call = self._require_live(call_id)
        if not message:
            raise UsageError("message is required")
        if not await self._say(call.call_id, message, listen=call.mode == "conversation"):
            raise CarrierError("playback failed")

    async def continue_call(self, call_id: str, message: str,
                            timeout_ms: int | None = None) -> str:
        """Speak ``message``, then wait for the caller's reply; returns the transcript."""
        call = self._require_live(call_id)
        live = self._live[call.call_id]
        if live.waiter is not None and not live.waiter.future.done():
            raise CallStateError("Already waiting for transcript")
        token = secrets.token_urlsafe(12)
        waiter = _Waiter(token, asyncio.get_running_loop().create_future())
        live.waiter = waiter
        start = self.clock()
        try:
            if message:
                await self._say(call.call_id, message, listen=True, token=token)
            else:
                await self._listen(call.call_id, token)
            listen_start = live.listen_started_at or self.clock()
            limit_ms = timeout_ms or self.config.transcript_timeout_ms
            try:
                transcript = await asyncio.wait_for(waiter.future, limit_ms / 1000)
            except TimeoutError:
                raise CallStateError(
                    f"Timed out waiting for transcript after {limit_ms}ms") from None
        finally:
            if live.waiter is waiter:
                live.waiter = None
        now = self.clock()
        await self._record([{
            "type": "turn", "callId": call.call_id, "turn": live.turns, "kind": "continue",
            "latencyMs": round((now - start) * 1000, 1),
            "listenWaitMs": round((now - listen_start) * 1000, 1)}], wait=True)
        return transcript

    async def send_dtmf(self, call_id: str, digits: str) -> None:
        call = self._require_live(call_id)
        if not digits or not DTMF_RE.fullmatch(digits):
            raise UsageError("digits may only contain digits, *, #, comma, w, p")
        await self.carrier.send_dtmf(call, digits)
        await self._record([{"type": "dtmf", "callId": call.call_id, "digits": digits,
                             "direction": "out"}], wait=True)

    async def end(self, call_id: str, *, reason: CallState = CallState.HANGUP_BOT,
                  note: str | None = None, carrier_hangup: bool = True) -> Call:
        call = self._require_live(call_id)
        live = self._live[call.call_id]
        if carrier_hangup:
            try:
                await self.carrier.hangup(call)
            except VoicecallError as exc:
                log.warning("hangup.failed", extra={"call_id": call.call_id, "why": str(exc)})
        async with live.lock:
            cur = self._calls[call.call_id]
            if cur.terminal:
                return cur
            if note:
                cur = cur.with_metadata(endNote=note)
            ended, effects = await self._apply(cur, CallEvent(
                "call.ended", call_id=call.call_id, timestamp=self.clock(), reason=reason))
        self._finalize_live(ended)
        return ended

    # ------------------------------------------------------------------ restart
    async def _restore(self) -> None:
        """Bring back live calls from the store: keep what the carrier still has, reap the rest."""
        now = self.clock()
        kept = reaped = 0
        for call in self.store.load_active():
            status = "unknown"
            if call.provider_call_id and now - call.started_at <= self.config.max_duration_seconds:
                try:
                    status = await self.carrier.get_status(call.provider_call_id)
                except VoicecallError:
                    status = "unknown"
            elif call.provider_call_id:
                status = "expired"
            else:
                status = "not-found"  # never reached the carrier: nothing to resume
            if status in ("active", "unknown"):
                self._live[call.call_id] = _Live()
                self._calls[call.call_id] = call
                if call.provider_call_id:
                    self._by_provider[call.provider_call_id] = call.call_id
                if call.answered_at is not None:
                    elapsed = now - call.answered_at
                    self._start_max_timer(call, self.config.max_duration_seconds - elapsed)
                kept += 1
                continue
            reason = CallState.TIMEOUT if status == "expired" else CallState.COMPLETED
            if status == "expired":
                with contextlib.suppress(VoicecallError):
                    await self.carrier.hangup(call)
            ended = call.replace(state=reason, end_reason=reason, ended_at=now).with_metadata(
                endNote=f"restart: carrier status {status}")
            await self._persist(ended, self._diff_events(call, ended))
            reaped += 1
        if kept or reaped:
            log.info("calls.restored", extra={"kept": kept, "reaped": reaped})

    def statistics(self) -> Mapping[str, int]:
        return {"active": len(self.active_calls()), "reserved": self._reserved}
