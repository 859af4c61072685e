"""One Plivo audio stream, dialled from the fake to the gateway like Plivo does.

Plivo's side of ``<Stream bidirectional="true">``: send ``start`` with the negotiated
``mediaFormat``, then the caller's audio as 20 ms ``media`` frames in that format
(plus ``dtmf``); play the gateway's ``playAudio`` back at real time (refusing a
format other than the negotiated one), answer each ``checkpoint`` with
``playedStream`` once everything queued before it has played, and on
``clearAudio`` drop unplayed audio and pending checkpoints and answer
``clearedAudio``. ``sendDTMF`` digits are recorded as sent to the callee.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import Coroutine
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from voicecall.carriers.plivo.media import (
    MULAW,
    AudioCodec,
    Checkpoint,
    ClearAudio,
    PlayAudio,
    SendDtmf,
    encode_audio,
    encode_cleared_audio,
    encode_dtmf,
    encode_media,
    encode_played_stream,
    encode_start,
    encode_stop,
    parse_client_frame,
)
from voicecall.errors import ProtocolError
from voicecall.testing.fake_plivo._model import (
    ClearRecord,
    FakeCall,
    PlivoError,
    StreamRecord,
    Timings,
)
from voicecall.testing.fake_plivo._webhooks import WS_USER_AGENT, Target


class StreamHost(Protocol):
    timings: Timings
    auth_id: str

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]: ...

    def _log(self, call_uuid: str | None, kind: str, **data: Any) -> None: ...

    def _callee_turn(self, call: FakeCall, session: StreamSession) -> None: ...

    def _stream_closed(self, call: FakeCall, session: StreamSession) -> None: ...


class StreamSession:
    def __init__(self, host: StreamHost, call: FakeCall, record: StreamRecord) -> None:
        self.host = host
        self.call = call
        self.record = record
        self.format = record.format
        self.frame_bytes = record.format.bytes_per_20ms
        self.bytes_per_s = self.frame_bytes * 50
        self.silence = (b"\xff" if record.format.encoding == MULAW else b"\x00\x00") * \
            (self.frame_bytes // (1 if record.format.encoding == MULAW else 2))
        self.ws: ClientConnection | None = None
        self.closed = asyncio.Event()
        self.dialled = asyncio.Event()
        self.started = False
        self._end_reason: str | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._seq = 0
        self._chunk = 0
        self._t0 = 0.0
        self._decoder = AudioCodec(record.format)
        self._inbound = bytearray()
        self._inbound_ready = asyncio.Event()
        self._queue: deque[tuple[str, int | str]] = deque()
        self._queue_ready = asyncio.Event()
        self._interrupt = asyncio.Event()
        self._play_clock = 0.0
        self._playing_until = 0.0
        self._played_since_turn = 0

    @property
    def stream_id(self) -> str:
        return self.record.stream_id

    @property
    def is_open(self) -> bool:
        return self.ws is not None and not self.closed.is_set()

    @property
    def callee_speaking(self) -> bool:
        return bool(self._inbound)

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    # -- lifecycle ---------------------------------------------------------------

    async def open(self, target: Target) -> bool:
        try:
            return await self._open(target)
        finally:
            self.dialled.set()

    async def _open(self, target: Target) -> bool:
        uri = target.local
        kwargs: dict[str, Any] = {}
        if target.host_header is not None:
            parts = urlsplit(target.local)
            kwargs = {"host": parts.hostname or "127.0.0.1", "port": parts.port or 80}
            uri = urlunsplit(parts._replace(netloc=target.host_header))
        try:
            self.ws = await connect(uri, proxy=None, compression=None, ping_interval=None,
                                    user_agent_header=WS_USER_AGENT,
                                    open_timeout=self.host.timings.webhook_timeout,
                                    close_timeout=self.host.timings.close_timeout, **kwargs)
        except InvalidStatus as exc:
            self.record.handshake_status = exc.response.status_code
            return self._failed(f"upgrade refused: HTTP {exc.response.status_code}")
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            return self._failed(f"{type(exc).__name__}: {exc}")
        self.record.connected = True
        self._t0 = asyncio.get_running_loop().time()
        try:
            await self._send(encode_start(
                self.stream_id, self.call.call_uuid, self.host.auth_id, self.format,
                extra_headers=self.record.extra_headers.replace(",", ";"),
                sequence_number=self._next_seq()))
        except asyncio.CancelledError:
            self._end_reason = self._end_reason or "stop"
            self.ws.transport.abort()
            self._finish()
            raise
        except ConnectionClosed:
            self._finish()
            return True
        self.started = True
        self.host._log(self.call.call_uuid, "stream.started", stream_id=self.stream_id,
                       format=self.format.content_type)
        name = f"{self.call.call_uuid}:{self.stream_id}"
        self._tasks = [
            self.host._spawn(self._read(), f"{name}:read"),
            self.host._spawn(self.guard(self._send_audio()), f"{name}:audio"),
            self.host._spawn(self.guard(self._play()), f"{name}:play"),
        ]
        if self.call.callee.script.dtmf:
            self._tasks.append(self.host._spawn(self.guard(self._scripted_dtmf()),
                                                f"{name}:dtmf"))
        if self.call.callee.script.speak_first:
            self.host._callee_turn(self.call, self)
        return True

    @staticmethod
    async def guard(coro: Coroutine[Any, Any, None]) -> None:
        with contextlib.suppress(ConnectionClosed):
            await coro

    def _failed(self, why: str) -> bool:
        self.record.end_reason = "failed"
        self.call.errors.append(PlivoError(0, f"stream connection failed: {why}"))
        self.host._log(self.call.call_uuid, "stream.failed", stream_id=self.stream_id,
                       reason=why)
        self.closed.set()
        return False

    async def stop(self) -> None:
        """End the stream as Plivo does when the call or the XML moves on: stop, close."""
        if self.ws is None or self.closed.is_set():
            return
        if self._end_reason is None:
            self._end_reason = "stop"
            with contextlib.suppress(ConnectionClosed):
                await self._send(encode_stop(self.stream_id, sequence_number=self._next_seq()))
            await self.ws.close()
        if not self._tasks:
            self._finish()
        await self.closed.wait()

    def drop(self) -> None:
        """A network failure: the TCP connection vanishes, no stop, no close frame."""
        if not self.is_open or self._end_reason is not None:
            return
        self._end_reason = "dropped"
        assert self.ws is not None
        self.ws.transport.abort()

    def _finish(self) -> None:
        if self.closed.is_set():
            return
        ws = self.ws
        self.record.end_reason = self._end_reason or "closed-by-gateway"
        self.record.close_code = ws.close_code if ws is not None else None
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        self.closed.set()
        self.host._log(self.call.call_uuid, "stream.ended", stream_id=self.stream_id,
                       reason=self.record.end_reason, close_code=self.record.close_code)
        self.host._stream_closed(self.call, self)

    async def _send(self, text: str) -> None:
        assert self.ws is not None
        await self.ws.send(text)
        self.record.frames_out.append(json.loads(text))

    # -- caller -> gateway ---------------------------------------------------------

    def speak(self, mulaw: bytes) -> None:
        """Queue caller audio (mu-law 8 kHz), sent in the stream's format in 20 ms frames."""
        wire = encode_audio(mulaw, self.format)
        rest = len(wire) % self.frame_bytes
        if rest:
            wire += self.silence[: self.frame_bytes - rest]
        self._inbound.extend(wire)
        self._inbound_ready.set()

    async def press(self, digits: str) -> None:
        for i, digit in enumerate(digits):
            if i:
                await asyncio.sleep(self.host.timings.dtmf_gap)
            await self._send(encode_dtmf(self.stream_id, digit,
                                         sequence_number=self._next_seq()))
            self.host._log(self.call.call_uuid, "stream.dtmf", digit=digit)

    async def _send_audio(self) -> None:
        loop = asyncio.get_running_loop()
        realtime = self.host.timings.realtime
        while True:
            if not realtime:
                while not self._inbound:
                    self._inbound_ready.clear()
                    await self._inbound_ready.wait()
            if self._inbound:
                frame = bytes(self._inbound[: self.frame_bytes])
                del self._inbound[: self.frame_bytes]
            else:
                frame = self.silence
            self._chunk += 1
            await self._send(encode_media(
                self.stream_id, frame, sequence_number=self._next_seq(), chunk=self._chunk,
                timestamp_ms=(self._chunk - 1) * 20))
            if realtime:
                await asyncio.sleep(max(0.0, self._t0 + self._chunk * 0.02 - loop.time()))
            else:
                await asyncio.sleep(0)

    async def _scripted_dtmf(self) -> None:
        loop = asyncio.get_running_loop()
        for at, digits in sorted(self.call.callee.script.dtmf):
            await asyncio.sleep(max(0.0, self._t0 + at - loop.time()))
            await self.press(digits)

    # -- gateway -> caller ---------------------------------------------------------

    async def _read(self) -> None:
        assert self.ws is not None
        try:
            async for message in self.ws:
                await self._handle(message)
        except ConnectionClosed:
            pass
        finally:
            self._finish()

    def _warn(self, message: str) -> None:
        self.call.errors.append(PlivoError(0, message, "warning"))
        self.host._log(self.call.call_uuid, "stream.warning", message=message)

    async def _handle(self, message: str | bytes) -> None:
        call = self.call
        if isinstance(message, bytes):
            self._warn("binary frame on audio stream")
            return
        try:
            self.record.frames_in.append(json.loads(message))
            frame = parse_client_frame(message)
        except (ValueError, ProtocolError) as exc:
            self._warn(f"invalid audio stream message: {exc}")
            return
        sid = getattr(frame, "stream_id", None)
        if sid is not None and sid != self.stream_id:
            self._warn(f"streamId {sid!r} is not {self.stream_id!r}")
            return
        if isinstance(frame, PlayAudio):
            if not self.record.bidirectional:
                self._warn("playAudio on a stream that is not bidirectional")
                return
            if frame.format != self.format:
                # Plivo does not switch codecs mid-stream: audio in another format is noise.
                self._warn(f"playAudio as {frame.format.content_type} on a "
                           f"{self.format.content_type} stream")
                return
            call.outbound_raw.extend(frame.payload)
            call.outbound_audio.extend(self._decoder.decode(frame.payload))
            if frame.payload:
                self._queue.append(("audio", len(frame.payload)))
                self._queue_ready.set()
        elif isinstance(frame, Checkpoint):
            self._queue.append(("mark", frame.name))
            self._queue_ready.set()
        elif isinstance(frame, ClearAudio):
            await self._clear()
        elif isinstance(frame, SendDtmf):
            call.digits_sent.append(frame.digits)
            self.host._log(call.call_uuid, "stream.send_dtmf", digits=frame.digits)

    async def _played(self, name: str) -> None:
        await self._send(encode_played_stream(self.stream_id, name,
                                              sequence_number=self._next_seq()))
        self.call.checkpoints_played.append(name)
        self.host._log(self.call.call_uuid, "stream.checkpoint", name=name)

    async def _clear(self) -> None:
        loop = asyncio.get_running_loop()
        dropped = sum(v for k, v in self._queue if k == "audio" and isinstance(v, int))
        dropped += int(max(0.0, self._playing_until - loop.time()) * self.bytes_per_s)
        marks = tuple(str(v) for k, v in self._queue if k == "mark")
        self._queue.clear()
        self._playing_until = self._play_clock = loop.time()
        self._interrupt.set()
        self.call.clears.append(ClearRecord(self.stream_id, dropped, marks))
        self.host._log(self.call.call_uuid, "stream.clear", dropped_bytes=dropped,
                       checkpoints=list(marks))
        await self._send(encode_cleared_audio(self.stream_id, sequence_number=self._next_seq()))

    async def _play(self) -> None:
        loop = asyncio.get_running_loop()
        timings = self.host.timings
        while True:
            if not self._queue:
                self._queue_ready.clear()
                if self._played_since_turn:
                    try:
                        await asyncio.wait_for(self._queue_ready.wait(), timings.turn_gap)
                    except TimeoutError:
                        self._played_since_turn = 0
                        if not self.callee_speaking:
                            self.host._callee_turn(self.call, self)
                else:
                    await self._queue_ready.wait()
                continue
            kind, value = self._queue.popleft()
            if kind == "mark":
                await self._played(str(value))
                continue
            assert isinstance(value, int)
            if timings.realtime:
                now = loop.time()
                self._play_clock = max(now, self._play_clock) + value / self.bytes_per_s
                self._playing_until = self._play_clock
                self._interrupt.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._interrupt.wait(), self._play_clock - now)
            self._played_since_turn += value
