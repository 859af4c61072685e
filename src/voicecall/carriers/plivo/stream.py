"""One Plivo audio stream: inbound audio to STT and barge-in, outbound paced playback.

Audio crosses the socket in the negotiated format (``start.mediaFormat``) and is
mu-law 8 kHz everywhere else: inbound payloads are converted and re-framed into
20 ms frames before STT and the barge-in detector; outbound frames from the
``PlaybackQueue`` are converted just before ``playAudio``. Playback marks are Plivo
checkpoints (``playedStream`` settles them); barge-in sends ``clearAudio``.

The session owns its tasks (frame reader, STT event reader) in one task group;
when the socket goes, everything it started goes with it and queued playback
settles as skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from voicecall.audio.g711 import FRAME_BYTES
from voicecall.audio.playback import PlaybackQueue, PlaybackResult
from voicecall.audio.vad import EnergyVad
from voicecall.calls.model import CallEvent
from voicecall.carriers.base import CarrierHost
from voicecall.carriers.plivo import media
from voicecall.errors import ProtocolError, VoicecallError
from voicecall.gateway.media import MediaSocket, StreamClosed
from voicecall.speech.stt.base import SttSession

log = logging.getLogger("voicecall.plivo.stream")
DTMF_PAUSES_S = {"w": 0.5, "W": 1.0}


class StreamSession:
    def __init__(self, ws: MediaSocket, start: media.Start, call_id: str,
                 host: CarrierHost, stt: SttSession | None) -> None:
        self.ws = ws
        self.stream_id = start.stream_id
        self.call_uuid = start.call_id
        self.call_id = call_id
        self.format = start.format
        self.host = host
        self.stt = stt
        self.vad = EnergyVad()
        self.ready = asyncio.Event()
        self.codec = media.AudioCodec(start.format)
        self.queue = PlaybackQueue(self._send_media, self._send_mark, self._send_clear)
        self.clears = 0
        self._inbound = b""
        self._seq = 0
        self._speech_end_at: float | None = None
        self._send_lock = asyncio.Lock()

    # -- outbound --------------------------------------------------------------------

    async def _send_media(self, frame: bytes) -> None:
        payload = self.codec.encode(frame)
        if payload:
            await self.ws.send_text(media.encode_play_audio(payload, self.format))

    async def _send_mark(self, name: str) -> None:
        tail = self.codec.flush_outbound()
        if tail:
            await self.ws.send_text(media.encode_play_audio(tail, self.format))
        await self.ws.send_text(media.encode_checkpoint(self.stream_id, name))

    async def _send_clear(self) -> None:
        self.clears += 1
        self.codec.flush_outbound()  # whatever the filter holds belongs to the cut audio
        await self.ws.send_text(media.encode_clear_audio(self.stream_id))

    async def play(self, audio: AsyncIterator[bytes]) -> PlaybackResult:
        return await self.queue.play(audio)

    async def send_dtmf(self, digits: str) -> None:
        """Keys to the caller via ``sendDTMF``; ``w``/``W`` pause between runs of digits."""
        async with self._send_lock:
            run = ""
            for key in digits:
                if key in DTMF_PAUSES_S:
                    if run:
                        await self.ws.send_text(media.encode_send_dtmf(run))
                        run = ""
                    await asyncio.sleep(DTMF_PAUSES_S[key])
                else:
                    run += key
            if run:
                await self.ws.send_text(media.encode_send_dtmf(run))

    async def barge_in(self) -> None:
        """Caller speech over our audio: stop it, every time, unless the greeting is protected."""
        if self.queue.playing and self.host.barge_in_allowed(self.call_id):
            await self.queue.clear()

    # -- lifecycle -------------------------------------------------------------------

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
                await self._on_audio(self.codec.decode(frame.payload))
            elif isinstance(frame, media.PlayedStream):
                self.queue.on_mark(frame.name)
            elif isinstance(frame, media.Dtmf):
                self._seq += 1
                await self.host.handle_event(CallEvent(
                    "call.dtmf", call_id=self.call_id, provider_call_id=self.call_uuid,
                    timestamp=time.time(), digits=frame.digit,
                    dedupe_key=f"plivo:stream:{self.stream_id}:dtmf:{self._seq}"))
            elif isinstance(frame, media.Stop):
                return
            # ClearedAudio: the queue already settled itself when it sent clearAudio.

    async def _on_audio(self, mulaw: bytes) -> None:
        self._inbound += mulaw
        while len(self._inbound) >= FRAME_BYTES:
            frame, self._inbound = self._inbound[:FRAME_BYTES], self._inbound[FRAME_BYTES:]
            await self._on_frame(frame)

    async def _on_frame(self, frame: bytes) -> None:
        if self.stt is not None:
            try:
                await self.stt.send_audio(frame)
            except VoicecallError as exc:
                log.warning("stt.send_failed", extra={"call_id": self.call_id, "why": str(exc)})
        edge = self.vad.feed(frame)
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
                    "call.speech", call_id=self.call_id, provider_call_id=self.call_uuid,
                    timestamp=time.time(), transcript=ev.text.strip(), is_final=True,
                    confidence=ev.confidence, endpoint_ms=endpoint,
                    dedupe_key=f"plivo:stream:{self.stream_id}:speech:{self._seq}"))
            elif ev.type == "error":
                log.warning("stt.error", extra={"call_id": self.call_id, "why": ev.text})


class _StreamEnded(Exception):
    """Raised inside the task group to cancel the STT readers when the socket ends."""
