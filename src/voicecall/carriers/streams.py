"""Classic (STT) media streams as every carrier keeps them.

- ``MediaStreamSession``: one stream's session. Inbound audio goes to STT and the
  barge-in detector, outbound audio is paced playback; a carrier's subclass only
  parses and answers its own frames and writes its own outbound frames.
- ``StreamRegistry``: a carrier's live sessions by carrier call id, the "stream
  up" signal ``media_ready`` waits on, and the disconnect grace: a dropped stream
  that does not come back within it ends the call (``expire_call``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import ClassVar, Generic, Protocol, TypeVar

from voicecall.audio.playback import PlaybackQueue, PlaybackResult
from voicecall.audio.vad import EnergyVad
from voicecall.calls.model import Call, CallEvent, CallState
from voicecall.carriers.base import CarrierHost, SpeechTiming
from voicecall.errors import CarrierError, ProtocolError, VoicecallError
from voicecall.gateway.media import MediaSocket, StreamClosed
from voicecall.speech.stt.base import SttSession
from voicecall.speech.tts.base import TTS

__all__ = ["MediaStreamSession", "StreamRegistry", "expire_call"]

F = TypeVar("F")


class MediaStreamSession(ABC, Generic[F]):
    """One classic media stream (``F``: the carrier's parsed frame type).

    The session owns its tasks (frame reader, STT event reader) in one task
    group; when the socket goes, everything it started goes with it and any
    queued playback settles as skipped.
    """

    carrier: ClassVar[str]                  # dedupe key prefix of the events it reports
    log: ClassVar[logging.Logger]

    def __init__(self, ws: MediaSocket, call_id: str, host: CarrierHost,
                 stt: SttSession | None, *, provider_call_id: str, stream_id: str) -> None:
        self.ws = ws
        self.stream_id = stream_id
        self.provider_call_id = provider_call_id
        self.call_id = call_id
        self.host = host
        self.stt = stt
        self.vad = EnergyVad()
        self.ready = asyncio.Event()
        self.queue = PlaybackQueue(self._send_media, self._send_mark, self._clear)
        self.clears = 0
        self._seq = 0
        self._speech_end_at: float | None = None  # local VAD: when the caller went quiet

    # -- the carrier's frames ----------------------------------------------------------

    @abstractmethod
    def _parse(self, text: str) -> F:
        """One frame off the socket; raises ``ProtocolError`` if malformed."""

    @abstractmethod
    async def _handle_frame(self, frame: F) -> bool:
        """Act on one inbound frame; True when it ends the stream."""

    @abstractmethod
    async def _send_media(self, frame: bytes) -> None: ...

    @abstractmethod
    async def _send_mark(self, name: str) -> None: ...

    @abstractmethod
    async def _send_clear(self) -> None: ...

    async def _clear(self) -> None:
        self.clears += 1
        await self._send_clear()

    # -- outbound ----------------------------------------------------------------------

    async def play(self, audio: AsyncIterator[bytes]) -> PlaybackResult:
        return await self.queue.play(audio)

    async def speak(self, tts: TTS, text: str) -> SpeechTiming:
        """Play ``text`` synthesised by ``tts``; when its first byte and frame came."""
        started = time.monotonic()
        first_byte: list[float] = []

        async def audio() -> AsyncIterator[bytes]:
            async for chunk in tts.synthesize(text):
                if not first_byte:
                    first_byte.append(time.monotonic())
                yield chunk

        result = await self.play(audio())
        if result.outcome == "failed":
            raise CarrierError(f"telephony stream playback failed: {result.error}")
        return SpeechTiming(
            (first_byte[0] - started) * 1000 if first_byte else None,
            (result.first_frame_at - started) * 1000 if result.first_frame_at else None)

    async def barge_in(self) -> None:
        """Caller speech over our audio: stop it, every time, unless the greeting is protected."""
        if self.queue.playing and self.host.barge_in_allowed(self.call_id):
            await self.queue.clear()

    # -- lifecycle ---------------------------------------------------------------------

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                if self.stt is not None:
                    tg.create_task(self._stt_ready())
                    tg.create_task(self._stt_events())
                else:
                    self.ready.set()
                await self._read_frames()
                raise _StreamEnded
        except* _StreamEnded:
            pass
        finally:
            await self.queue.close()
            if self.stt is not None:
                with contextlib.suppress(Exception):
                    await self.stt.aclose()

    async def _stt_ready(self) -> None:
        assert self.stt is not None
        try:
            await self.stt.wait_ready()
        except VoicecallError as exc:
            self.log.warning("stt.unavailable", extra={"call_id": self.call_id, "why": str(exc)})
        self.ready.set()

    async def _read_frames(self) -> None:
        while True:
            try:
                text = await self.ws.receive_text()
            except StreamClosed:
                return
            try:
                frame = self._parse(text)
            except ProtocolError as exc:
                self.log.warning("stream.bad_frame",
                                 extra={"call_id": self.call_id, "why": str(exc)})
                await self.ws.close(1007, "malformed frame")
                return
            if await self._handle_frame(frame):
                return

    # -- inbound -----------------------------------------------------------------------

    async def _on_audio(self, frame: bytes) -> None:
        """Caller audio (mu-law 8 kHz): to STT and the barge-in detector."""
        if self.stt is not None:
            try:
                await self.stt.send_audio(frame)
            except VoicecallError as exc:
                self.log.warning("stt.send_failed",
                                 extra={"call_id": self.call_id, "why": str(exc)})
        edge = self.vad.feed(frame)
        if edge == "start":
            self._speech_end_at = None
            await self.barge_in()
        elif edge == "end":
            # The VAD needs a run of quiet frames to call it; speech ended that long ago.
            self._speech_end_at = time.monotonic() - self.vad.release_frames * 0.02

    async def _report_dtmf(self, digit: str) -> None:
        """A keypress read off the stream, to the call manager."""
        self._seq += 1
        await self.host.handle_event(CallEvent(
            "call.dtmf", call_id=self.call_id, provider_call_id=self.provider_call_id,
            timestamp=time.time(), digits=digit,
            dedupe_key=f"{self.carrier}:stream:{self.stream_id}:dtmf:{self._seq}"),
            ack=False)  # read off a live stream: nothing re-sends them

    async def _stt_events(self) -> None:
        assert self.stt is not None
        async for ev in self.stt.events():
            if ev.type == "speech-start":
                await self.barge_in()
            elif ev.type == "final" and ev.text.strip():
                # A final transcript is caller speech too: stop talking over it.
                await self.barge_in()
                self._seq += 1
                endpoint = None if self._speech_end_at is None else \
                    (time.monotonic() - self._speech_end_at) * 1000
                await self.host.handle_event(CallEvent(
                    "call.speech", call_id=self.call_id, provider_call_id=self.provider_call_id,
                    timestamp=time.time(), transcript=ev.text.strip(), is_final=True,
                    confidence=ev.confidence, endpoint_ms=endpoint,
                    dedupe_key=f"{self.carrier}:stream:{self.stream_id}:speech:{self._seq}"),
                    ack=False)  # read off a live stream: nothing re-sends them
            elif ev.type == "error":
                self.log.warning("stt.error", extra={"call_id": self.call_id, "why": ev.text})


class _StreamEnded(Exception):
    """Raised inside the task group to cancel the STT readers when the socket ends."""


class _Stream(Protocol):
    """What the registry needs of a session."""

    @property
    def call_id(self) -> str: ...

    @property
    def ready(self) -> asyncio.Event: ...   # set once its STT is up (or known to be down)

    @property
    def ws(self) -> MediaSocket: ...


S = TypeVar("S", bound=_Stream)


class StreamRegistry(Generic[S]):
    """A carrier's live classic streams, by carrier call id (CallSid, call_control_id...).

    One session per call: a newer stream of the same call replaces the older one.
    When the current stream goes, the call gets ``grace_s`` for a new one to come
    back; if none does, ``on_expired(key, call_id)`` ends the call.
    """

    def __init__(self, *, grace_s: float, on_expired: Callable[[str, str], Awaitable[None]],
                 log: logging.Logger) -> None:
        self.grace_s = grace_s
        self._on_expired = on_expired
        self._log = log
        self._sessions: dict[str, S] = {}
        self._up: dict[str, asyncio.Event] = {}
        self._grace: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def get(self, key: str) -> S | None:
        return self._sessions.get(key)

    def __contains__(self, key: object) -> bool:
        return key in self._sessions

    def _event(self, key: str) -> asyncio.Event:
        return self._up.setdefault(key, asyncio.Event())

    def attach(self, key: str, session: S, **log_extra: object) -> None:
        grace = self._grace.pop(key, None)
        if grace is not None:
            grace.cancel()  # a reconnect inside the grace window keeps the call
        self._sessions[key] = session
        self._event(key).set()
        self._log.info("stream.attached", extra={"call_id": session.call_id, **log_extra})

    def detach(self, key: str, session: S) -> None:
        if self._sessions.get(key) is not session:
            return  # a newer stream already replaced this one
        del self._sessions[key]
        up = self._up.get(key)
        if up is not None:
            up.clear()
        task = asyncio.get_running_loop().create_task(self._grace_expiry(key, session.call_id))
        self._grace[key] = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def settle(self, key: str) -> None:
        """Let ``wait_up`` return without a stream (the carrier says none is coming)."""
        self._event(key).set()

    async def wait_up(self, key: str, timeout: float) -> None:
        """Wait (each step at most ``timeout``) for the stream, then for its STT."""
        up = self._event(key)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(up.wait(), timeout)
            session = self._sessions.get(key)
            if session is not None:
                await asyncio.wait_for(session.ready.wait(), timeout)

    def forget(self, key: str) -> None:
        """The call is over: drop its signal and any grace still running."""
        self._up.pop(key, None)
        grace = self._grace.pop(key, None)
        if grace is not None:
            grace.cancel()

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for session in list(self._sessions.values()):
            await session.ws.close(1001, "gateway shutting down")

    async def _grace_expiry(self, key: str, call_id: str) -> None:
        await asyncio.sleep(self.grace_s)
        if self._grace.get(key) is asyncio.current_task():
            del self._grace[key]
        if key in self._sessions:
            return
        await self._on_expired(key, call_id)


async def expire_call(host: CarrierHost | None, key: str, call_id: str, *, carrier: str,
                      hangup: Callable[[Call], Awaitable[None]],
                      log: logging.Logger) -> None:
    """A dropped stream did not come back within the grace: the call is over.

    Hangs up (best effort) and reports ``call.ended`` (completed) for ``call_id``,
    whose carrier call id is ``key``.
    """
    if host is None:
        return
    call = host.get(call_id)
    if call is None or call.terminal:
        return
    log.info("stream.grace_expired", extra={"call_id": call_id})
    with contextlib.suppress(VoicecallError):
        await hangup(call)
    await host.handle_event(CallEvent(
        "call.ended", call_id=call_id, provider_call_id=key, timestamp=time.time(),
        reason=CallState.COMPLETED, dedupe_key=f"{carrier}:grace:{key}:{time.time_ns()}"))
