"""The realtime voice bridge: one carrier media stream <-> one realtime provider session.

Per call (``openclaw-voice-call.md`` §7, the seed's 即時語音對話):

- the session opens with ``realtime.instructions``, then the ``consultPolicy``
  guidance, then (``agentContext.enabled``) a bounded agent capsule, all put
  together once at setup; the tools are ``openclaw_agent_consult`` (unless
  ``toolPolicy: none``), ``openclaw_end_call`` (never disabled), then custom
  ``realtime.tools`` (which cannot replace a built-in by name); the greeting is
  the call's initial message (outbound ``message`` / routed ``inboundGreeting``),
  said by the model's own opening turn;
- caller audio (mu-law 20 ms frames) goes to ``send_audio``; model audio goes
  out through a ``PlaybackQueue`` (one item per model output ``item_id``,
  20 ms frames paced on an absolute clock). What the caller actually heard of
  each item is tracked from periodic marks the carrier echoes once played
  (every 100 ms of audio; position of the last echo plus the time since), or,
  before the first echo, from the frames sent minus what a local model of the
  carrier's playout clock says is still buffered;
- barge-in: OpenAI ``speech-start`` while model audio is sounding -> clear the
  carrier buffer and ``truncate(item_id, played_ms)``; Gemini ``interrupted``
  -> drop the queued audio and clear. The carrier buffer is cleared every time;
- transcripts go into the call record (``call.speech`` for the caller,
  ``call.said`` for the model; ``ack=False``: nothing re-sends them); caller
  keypresses are recorded and handed to the model as a text turn (they never
  end the call);
- tool calls: the consult goes to ``consult_flow.ConsultFlow`` (settle, one
  consult in flight, interim then final result, host-forced consults for
  ``consultPolicy: always``), which runs ``consult.Consulter``;
  ``openclaw_end_call`` waits for the farewell to be heard, then hangs up;
  custom tools get an "unavailable" result;
- the provider closing (or failing) ends the call.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from voicecall.audio.g711 import FRAME_MS
from voicecall.audio.playback import PlaybackQueue
from voicecall.calls import Call, CallEvent, CallState
from voicecall.config import VoiceCallConfig, effective_config
from voicecall.errors import VoicecallError
from voicecall.gateway.realtime.bargein import LocalBargeIn
from voicecall.gateway.realtime.consult import (
    CONSULT_TOOL_NAME,
    END_CALL_TOOL_NAME,
    Consulter,
    build_tools,
    call_session_key,
)
from voicecall.gateway.realtime.consult_flow import ConsultFlow
from voicecall.gateway.realtime.context import build_instructions
from voicecall.speech.realtime.base import (
    RealtimeEvent,
    RealtimeProvider,
    RealtimeSession,
    RealtimeSetup,
)

if TYPE_CHECKING:
    from voicecall.gateway.manager import CallManager

__all__ = ["MediaPort", "RealtimeBridge", "Truncation"]

log = logging.getLogger("voicecall.realtime.bridge")

MARK_EVERY_FRAMES = 5             # a progress mark every 100 ms of model audio
END_CALL_PLAYBACK_TIMEOUT_S = 2.0
DTMF_FLUSH_S = 1.0


class MediaPort(Protocol):
    """The carrier side of a media stream, as the bridge uses it."""

    async def send_media(self, frame: bytes) -> None: ...

    async def send_mark(self, name: str) -> None: ...

    async def send_clear(self) -> None: ...


@dataclass
class _Item:
    """One model output being played."""

    item_id: str
    feed: asyncio.Queue[bytes | None] = field(default_factory=asyncio.Queue)
    open: bool = True
    frames: int = 0                 # 20 ms frames handed to the carrier
    heard_floor_ms: int = 0         # from echoed progress marks
    echoed_at: float | None = None  # when the latest progress mark came back
    task: asyncio.Task[Any] | None = None


@dataclass(frozen=True)
class Truncation:
    item_id: str
    played_ms: int
    sent_ms: int


class RealtimeBridge:
    """One call's realtime conversation; see the module docstring."""

    def __init__(self, manager: CallManager, provider: RealtimeProvider, call: Call,
                 port: MediaPort, *, workspace_dir: Path | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.manager = manager
        self.provider = provider
        self.call_id = call.call_id
        self.call_sid = call.provider_call_id or ""
        self.port: MediaPort | None = port    # None while a dropped stream is in grace
        self.workspace_dir = workspace_dir
        self.clock = clock
        self.config: VoiceCallConfig = manager.config
        self.session: RealtimeSession | None = None
        self.queue = PlaybackQueue(self._send_frame, self._send_queue_mark, self._send_clear)
        self._items: dict[str, _Item] = {}
        self._dropped: set[str] = set()
        self._current: _Item | None = None     # the item whose frames go out now
        self._last_sent: _Item | None = None   # the item that sent the latest frame
        self._play_end = 0.0                   # when the carrier's buffer runs dry
        self._marks: dict[str, tuple[_Item, int]] = {}
        self._mark_ids = itertools.count(1)
        self._seq = itertools.count(1)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._keys = ""
        self._keys_flush: asyncio.Task[None] | None = None
        self._speaking = False
        self._last_user_text = ""
        self.consulter = Consulter(manager, self.call_id, lambda: self._last_user_text)
        self.consults = ConsultFlow(self, self.consulter)
        self.barge_ins = 0
        self.local_barge_ins = 0
        bc = self.config.realtime.barge_in
        self._local_barge = LocalBargeIn(bc) if bc.enabled else None
        # An outbound call's greeting is not cut off by the local detector.
        self._protect_first_item = call.direction == "outbound"
        self._greeting_item: str | None = None
        self.clears = 0
        self.truncations: list[Truncation] = []
        self.ended_by_provider = False
        self.setup: RealtimeSetup | None = None

    # ---------------------------------------------------------------- lifecycle

    def _call(self) -> Call | None:
        return self.manager.get(self.call_id)

    async def start(self) -> None:
        """Open the provider session (the model greets on its own once ready)."""
        call = self._call()
        route = call.number_route_key if call is not None else None
        greeting = self.manager.consume_initial_message(self.call_id)
        self.setup = RealtimeSetup(
            instructions=build_instructions(self.config, self.workspace_dir, route),
            tools=build_tools(self.config.realtime),
            greeting=greeting or None)
        self.session = await self.provider.open(self.call_id, self.setup)
        self._prime_fast_context(call)
        log.info("realtime.bridge_started", extra={"call_id": self.call_id,
                                                   "provider": self.provider.name})

    def _prime_fast_context(self, call: Call | None) -> None:
        """Embed this caller's past calls now, in a thread, not at the first question."""
        index = self.manager.fast_context
        fc = self.config.realtime.fast_context
        if index is None or call is None or not fc.enabled:
            return
        agent = effective_config(self.config, call.number_route_key).agent_id or "main"
        self._spawn(asyncio.to_thread(
            index.prime, agent, session_key=call_session_key(self.config, call),
            exclude_call_id=call.call_id, sources=fc.sources))

    async def run(self) -> None:
        """Pump provider events until the session closes; then the call ends."""
        assert self.session is not None
        error: str | None = None
        async for ev in self.session.events():
            try:
                if ev.type == "error":
                    error = ev.text
                    log.warning("realtime.error", extra={"call_id": self.call_id,
                                                         "why": ev.text})
                elif ev.type == "closed":
                    break
                else:
                    await self._on_event(ev)
            except VoicecallError as exc:
                log.warning("realtime.event_failed", extra={"call_id": self.call_id,
                                                            "why": str(exc)})
        self.ended_by_provider = True
        call = self._call()
        if call is not None and not call.terminal:
            log.info("realtime.provider_closed", extra={"call_id": self.call_id, "why": error})
            with contextlib.suppress(VoicecallError):
                # Shielded: the stream closing under us must not leave the call half-ended.
                await asyncio.shield(self.manager.end(
                    self.call_id, reason=CallState.ERROR if error else CallState.COMPLETED,
                    note=f"realtime: {error}" if error else "realtime session closed"))

    async def aclose(self) -> None:
        for item in self._items.values():
            self._close_feed(item)
        await self.queue.close()
        for task in list(self._tasks):
            task.cancel()
        if self._keys_flush is not None:
            self._keys_flush.cancel()
        if self.session is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.session.aclose(), 3.0)
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def attach(self, port: MediaPort) -> None:
        """A reconnected stream: model audio goes to it from now on."""
        self.port = port
        self._play_end = self.clock()

    async def detach(self) -> None:
        """The stream dropped: what the caller did not hear is cut from the model's turn."""
        if self.session is not None and self.provider.capabilities.truncation:
            sounding = self._sounding()
            if sounding is not None:
                played = self.played_ms(sounding.item_id)
                self.truncations.append(Truncation(sounding.item_id, played,
                                                   sounding.frames * FRAME_MS))
                await self.session.truncate(sounding.item_id, played)
        for item in list(self._items.values()):
            self._close_feed(item)
            self._dropped.add(item.item_id)
        self._items.clear()
        self._marks.clear()
        self._last_sent = None
        self.port = None
        await self.queue.clear()

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        async def guarded() -> None:
            try:
                await coro
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("realtime.task_failed", extra={"call_id": self.call_id})

        task = asyncio.get_running_loop().create_task(guarded())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ---------------------------------------------------------------- carrier -> model

    async def on_audio(self, mulaw: bytes) -> None:
        detector = self._local_barge
        if detector is not None:
            sounding = self._sounding()
            if sounding is None or sounding.item_id == self._greeting_item:
                detector.reset()
            elif detector.feed(mulaw):
                self.local_barge_ins += 1
                log.info("realtime.local_barge_in", extra={"call_id": self.call_id,
                                                           "item_id": sounding.item_id})
                await self._barge_in(truncate=self.provider.capabilities.truncation)
        if self.session is not None:
            await self.session.send_audio(mulaw)

    def on_mark(self, name: str) -> None:
        self.queue.on_mark(name)
        hit = self._marks.pop(name, None)
        if hit is not None:
            item, ms = hit
            if ms >= item.heard_floor_ms:
                item.heard_floor_ms = ms
                item.echoed_at = self.clock()

    async def on_dtmf(self, digit: str) -> None:
        """Record the key; the model gets the keys as one text turn (on ``#`` or a pause)."""
        await self._event("call.dtmf", digits=digit)
        self._keys += digit
        if self._keys_flush is not None:
            self._keys_flush.cancel()
        delay = 0.0 if digit == "#" else DTMF_FLUSH_S
        self._keys_flush = asyncio.get_running_loop().create_task(self._flush_keys(delay))

    async def _flush_keys(self, delay: float) -> None:
        await asyncio.sleep(delay)
        keys, self._keys = self._keys, ""
        if keys and self.session is not None:
            text = f"[keypad] The caller pressed these keys on the phone keypad: {keys}"
            send = getattr(self.session, "send_text", None)
            if send is not None:
                await send(text)
            else:
                await self.session.say(text)

    async def say(self, text: str) -> None:
        """An operator's ``speak``: the model says it."""
        if self.session is not None:
            await self.session.say(text)

    # ---------------------------------------------------------------- manager events

    async def _event(self, kind: Any, **fields: Any) -> None:
        await self.manager.handle_event(CallEvent(
            kind, call_id=self.call_id, provider_call_id=self.call_sid or None,
            timestamp=time.time(), dedupe_key=f"realtime:{self.call_id}:{next(self._seq)}",
            **fields), ack=False)

    # ---------------------------------------------------------------- model events

    async def _on_event(self, ev: RealtimeEvent) -> None:
        if ev.type == "audio":
            await self._on_model_audio(ev)
        elif ev.type == "speech-start":
            if self.provider.capabilities.truncation:
                await self._barge_in(truncate=True)
        elif ev.type == "interrupted":
            await self._barge_in(truncate=False, item_id=ev.item_id)
        elif ev.type == "response-done":
            for item in list(self._items.values()):
                self._close_feed(item)
            if self._speaking:
                self._speaking = False
                await self._event("call.listening")
        elif ev.type == "transcript" and ev.final and ev.text.strip():
            await self._on_transcript(ev.role or "assistant", ev.text.strip())
        elif ev.type == "transcript" and ev.role == "user" and ev.text.strip():
            self.consults.note_partial(ev.text)     # the caller is still talking (settle)
        elif ev.type == "tool-call":
            self._spawn(self._on_tool_call(ev))

    async def _on_transcript(self, role: str, text: str) -> None:
        call = self._call()
        if call is None or call.terminal:
            return
        if role == "user":
            self._last_user_text = text
            self.consults.note_final(text)          # may arm a host-forced consult
            await self._event("call.speech", transcript=text, is_final=True)
        else:
            self.manager.memory.add(call_session_key(self.config, call), "bot", text)
            await self._event("call.said", text=text)

    async def _on_model_audio(self, ev: RealtimeEvent) -> None:
        item_id = ev.item_id or "model"
        if item_id in self._dropped or not ev.audio:
            return
        if self.port is None:
            # Said while the stream is down: nobody heard it, so the model must not think so.
            self._dropped.add(item_id)
            if self.session is not None and self.provider.capabilities.truncation:
                await self.session.truncate(item_id, 0)
            return
        item = self._items.get(item_id)
        if item is None:
            for other in self._items.values():
                self._close_feed(other)      # a new output: the previous one is complete
            item = self._items[item_id] = _Item(item_id)
            if self._protect_first_item:
                self._protect_first_item = False
                if self.setup is not None and self.setup.greeting:
                    self._greeting_item = item_id
            item.task = self._spawn(self.queue.play(self._feed(item)))
            if not self._speaking:
                self._speaking = True
                await self._event("call.speaking")
        if item.open:
            item.feed.put_nowait(ev.audio)

    async def _feed(self, item: _Item) -> AsyncIterator[bytes]:
        # Items play one at a time: this one owns every frame until the next one starts.
        self._current = item
        while (chunk := await item.feed.get()) is not None:
            yield chunk

    def _close_feed(self, item: _Item) -> None:
        if item.open:
            item.open = False
            item.feed.put_nowait(None)

    async def _send_frame(self, frame: bytes) -> None:
        item = self._current
        if self.port is None:
            return      # no stream: nobody hears it (detach truncated the item)
        await self.port.send_media(frame)
        now = self.clock()
        self._play_end = max(now, self._play_end) + FRAME_MS / 1000
        if item is None or item.item_id in self._dropped:
            return
        item.frames += 1
        self._last_sent = item
        if item.frames % MARK_EVERY_FRAMES == 0:
            name = f"rt-{next(self._mark_ids)}"
            self._marks[name] = (item, item.frames * FRAME_MS)
            await self.port.send_mark(name)

    async def _send_queue_mark(self, name: str) -> None:
        if self.port is not None:
            await self.port.send_mark(name)

    async def _send_clear(self) -> None:
        self.clears += 1
        if self.port is not None:
            await self.port.send_clear()

    def buffered_ms(self) -> int:
        """Audio sent but, by the carrier's playout clock, not yet played."""
        return max(0, int(round((self._play_end - self.clock()) * 1000)))

    def played_ms(self, item_id: str) -> int:
        """What the caller heard of ``item_id``.

        The carrier's own clock, when it has echoed a progress mark of this item:
        the mark's position plus the time since it came back (marks are 100 ms
        apart, so this follows the carrier's real playout, drift included).
        Otherwise our model of its playout: frames sent minus what is still buffered.
        """
        item = self._items.get(item_id)
        if item is None:
            return 0
        sent = item.frames * FRAME_MS
        if item.echoed_at is not None:
            since = int((self.clock() - item.echoed_at) * 1000)
            return min(sent, item.heard_floor_ms + max(0, since))
        heard = sent - self.buffered_ms() if item is self._last_sent else sent
        return max(0, min(sent, heard))

    def _sounding(self) -> _Item | None:
        """The item the caller hears (or is about to hear), if any."""
        if self._last_sent is not None and self.buffered_ms() > 0:
            return self._last_sent
        for item in self._items.values():
            if item.open or (item.task is not None and not item.task.done()):
                return item
        return None

    def busy(self) -> bool:
        return self._sounding() is not None

    async def _barge_in(self, *, truncate: bool, item_id: str | None = None) -> None:
        sounding = self._sounding()
        if truncate and sounding is None:
            return        # the caller spoke while nothing played: an ordinary turn
        if sounding is None and item_id is not None and item_id in self._dropped:
            return        # the provider confirms a barge-in already handled locally
        self.barge_ins += 1
        truncation: Truncation | None = None
        if truncate and sounding is not None:
            truncation = Truncation(sounding.item_id, self.played_ms(sounding.item_id),
                                    sounding.frames * FRAME_MS)
        for item in list(self._items.values()):
            self._close_feed(item)
            self._dropped.add(item.item_id)
        if item_id:
            self._dropped.add(item_id)
        self._items.clear()
        self._marks.clear()
        self._last_sent = None
        self._play_end = self.clock()
        await self.queue.clear()
        if truncation is not None and self.session is not None:
            self.truncations.append(truncation)
            log.info("realtime.truncate", extra={"call_id": self.call_id,
                                                 "item_id": truncation.item_id,
                                                 "played_ms": truncation.played_ms})
            await self.session.truncate(truncation.item_id, truncation.played_ms)

    # ---------------------------------------------------------------- tools

    async def _on_tool_call(self, ev: RealtimeEvent) -> None:
        assert self.session is not None
        call_id = ev.call_id or ""
        name = ev.name or ""
        try:
            args = json.loads(ev.arguments or "{}")
        except ValueError:
            args = {}
        if not isinstance(args, dict):
            args = {}
        if name == CONSULT_TOOL_NAME and self.config.realtime.tool_policy != "none":
            await self.consults.on_tool_call(call_id, args)   # sends interim/final itself
            return
        if name == END_CALL_TOOL_NAME:
            refused = await self._end_call()
            if refused is None:
                return      # hung up: nothing more to say
            output = refused
        else:
            output = json.dumps({"error": f"tool {name!r} is not available on this call"})
        await self.session.send_tool_result(call_id, output)

    async def _end_call(self) -> str | None:
        """Hang up once the farewell has been heard; None when the call was ended."""
        barge_ins = self.barge_ins
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.buffered_ms() / 1000 + END_CALL_PLAYBACK_TIMEOUT_S
        # Let audio of the farewell that is still arriving start before judging "done".
        await asyncio.sleep(0.1)
        while loop.time() < deadline:   # bounded poll of the playout clock
            if not self.busy() or self.barge_ins != barge_ins:
                break
            await asyncio.sleep(FRAME_MS / 1000)
        if self.barge_ins != barge_ins or self.busy():
            return ("The farewell was interrupted or is still playing; keep the call "
                    "connected and continue the conversation.")
        try:
            await asyncio.shield(self.manager.end(self.call_id, reason=CallState.HANGUP_BOT,
                                                  note="realtime: end-call tool"))
        except VoicecallError as exc:
            return f"Hanging up failed ({exc}); tell the caller and keep talking."
        return None

    # ---------------------------------------------------------------- consult host

    def spawn_task(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        """Run ``coro`` for the call's life (``aclose`` cancels it)."""
        return self._spawn(coro)

    async def clear_outbound(self) -> None:
        """A host-forced consult takes over: stop what the model is saying (barge-in path)."""
        await self._barge_in(truncate=self.provider.capabilities.truncation)
