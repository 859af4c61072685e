"""One Telnyx media stream: inbound audio to STT and barge-in, outbound paced playback.

The same shape as the Twilio session: the session owns its tasks (frame reader,
STT event reader) in one task group; when the socket goes, everything it started goes
with it and queued playback settles as skipped. Keypresses seen on the stream go to
``on_dtmf``, which the carrier merges with the ``call.dtmf.received`` webhooks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from voicecall.audio.playback import PlaybackQueue, PlaybackResult
from voicecall.audio.vad import EnergyVad
from voicecall.calls.model import CallEvent
from voicecall.carriers.base import CarrierHost
from voicecall.carriers.telnyx import media
from voicecall.errors import ProtocolError, VoicecallError
from voicecall.gateway.media import MediaSocket, StreamClosed
from voicecall.speech.stt.base import SttSession

log = logging.getLogger("voicecall.telnyx.stream")


class StreamSession:
    def __init__(self, ws: MediaSocket, start: media.Start, call_id: str,
                 host: CarrierHost, stt: SttSession | None,
                 on_dtmf: Callable[[str], Awaitable[None]]) -> None:
        self.ws = ws
        self.stream_id = start.stream_id
        self.call_control_id = start.call_control_id
        self.call_id = call_id
        self.host = host
        self.stt = stt
        self.on_dtmf = on_dtmf
        self.vad = EnergyVad()
        self.ready = asyncio.Event()
        self.queue = PlaybackQueue(self._send_media, self._send_mark, self._send_clear)
        self.clears = 0
        self.stopped = False  # Telnyx said ``stop`` (vs. the socket just dropping)
        self._seq = 0
        self._speech_end_at: float | None = None

    async def _send_media(self, frame: bytes) -> None:
        await self.ws.send_text(media.encode_media(frame))

    async def _send_mark(self, name: str) -> None:
        await self.ws.send_text(media.encode_mark(name))

    async def _send_clear(self) -> None:
        self.clears += 1
        await self.ws.send_text(media.encode_clear())

    async def play(self, audio: AsyncIterator[bytes]) -> PlaybackResult:
        return await self.queue.play(audio)

    async def barge_in(self) -> None:
        """Caller speech over our audio: stop it, every time, unless the greeting is protected."""
        if self.queue.playing and self.host.barge_in_allowed(self.call_id):
            await self.queue.clear()

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
            log.warning("stt.unavailable", extra={"call_id": self.call_id, "why": str(exc)})
        self.ready.set()

    async def _read_frames(self) -> None:
        while True:
            try:
                text = await self.ws.receive_text()
            except StreamClosed:
                return
            try:
                frame = media.parse_frame(text)
            except ProtocolError as exc:
                log.warning("stream.bad_frame", extra={"call_id": self.call_id, "why": str(exc)})
                await self.ws.close(1007, "malformed frame")
                return
            if isinstance(frame, media.Media):
                if frame.track == "inbound":
                    await self._on_audio(frame.payload)
            elif isinstance(frame, media.Mark):
                self.queue.on_mark(frame.name)
            elif isinstance(frame, media.Dtmf):
                await self.on_dtmf(frame.digit)
            elif isinstance(frame, media.Error):
                log.warning("stream.error_frame", extra={
                    "call_id": self.call_id, "why": f"{frame.code} {frame.title} {frame.detail}"})
            elif isinstance(frame, media.Stop):
                self.stopped = True
                return

    async def _on_audio(self, payload: bytes) -> None:
        if self.stt is not None:
            try:
                await self.stt.send_audio(payload)
            except VoicecallError as exc:
                log.warning("stt.send_failed", extra={"call_id": self.call_id, "why": str(exc)})
        edge = self.vad.feed(payload)
        if edge == "start":
            self._speech_end_at = None
            await self.barge_in()
        elif edge == "end":
            self._speech_end_at = time.monotonic() - self.vad.release_frames * 0.02

    async def _stt_events(self) -> None:
        assert self.stt is not None
        async for ev in self.stt.events():
            if ev.type == "speech-start":
                await self.barge_in()
            elif ev.type == "final" and ev.text.strip():
                await self.barge_in()
                self._seq += 1
                endpoint = None if self._speech_end_at is None else \
                    (time.monotonic() - self._speech_end_at) * 1000
                await self.host.handle_event(CallEvent(
                    "call.speech", call_id=self.call_id, provider_call_id=self.call_control_id,
                    timestamp=time.time(), transcript=ev.text.strip(), is_final=True,
                    confidence=ev.confidence, endpoint_ms=endpoint,
                    dedupe_key=f"telnyx:stream:{self.stream_id}:speech:{self._seq}"), ack=False)
            elif ev.type == "error":
                log.warning("stt.error", extra={"call_id": self.call_id, "why": ev.text})


class _StreamEnded(Exception):
    """Raised inside the task group to cancel the STT readers when the socket ends."""
