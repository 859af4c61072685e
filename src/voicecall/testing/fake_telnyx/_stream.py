"""One media-streaming WebSocket, dialled from the fake to the gateway like Telnyx does.

Telnyx's side: send ``connected`` (with the ``x-telnyx-streaming-auth-token`` when the
dial set one, also sent as a header) and ``start``, then the caller's audio as 20 ms
PCMU ``media`` frames (plus ``dtmf``); play the gateway's ``media`` back at real time,
echo each ``mark`` once everything queued before it has played (at once if nothing
is queued), and on ``clear`` drop unplayed audio and return pending marks.
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

from voicecall.carriers.telnyx.media import (
    AUTH_TOKEN_FIELD,
    Clear,
    Mark,
    OutboundMedia,
    encode_connected,
    encode_dtmf,
    encode_inbound_media,
    encode_mark_echo,
    encode_start,
    encode_stop,
    parse_client_frame,
)
from voicecall.errors import ProtocolError
from voicecall.testing.fake_telnyx._model import ClearRecord, FakeCall, StreamRecord, Timings
from voicecall.testing.fake_telnyx._webhooks import Target

SAMPLE_RATE = 8000
FRAME_BYTES = 160
SILENCE_BYTE = 0xFF
_SILENCE_FRAME = bytes([SILENCE_BYTE]) * FRAME_BYTES
_FRAME_S = FRAME_BYTES / SAMPLE_RATE
WS_USER_AGENT = "Telnyx-Media-Streaming/1.0"


def pad_to_frames(audio: bytes) -> bytes:
    rest = len(audio) % FRAME_BYTES
    return audio if rest == 0 else audio + bytes([SILENCE_BYTE]) * (FRAME_BYTES - rest)


class StreamHost(Protocol):
    timings: Timings

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]: ...

    def _log(self, ccid: str | None, kind: str, **data: Any) -> None: ...

    def _stream_turn(self, call: FakeCall, session: StreamSession) -> None: ...

    def _stream_closed(self, call: FakeCall, session: StreamSession) -> None: ...


class StreamSession:
    def __init__(self, host: StreamHost, call: FakeCall, record: StreamRecord,
                 custom_parameters: dict[str, str] | None = None) -> None:
        self.host = host
        self.call = call
        self.record = record
        self.custom_parameters = dict(custom_parameters or {})
        self.ws: ClientConnection | None = None
        self.closed = asyncio.Event()
        self.dialled = asyncio.Event()
        self.started = False
        self._end_reason: str | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._seq = 0
        self._chunk = 0
        self._t0 = 0.0
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

    # -- lifecycle ---------------------------------------------------------------------

    async def open(self, target: Target) -> bool:
        try:
            return await self._open(target)
        finally:
            self.dialled.set()

    async def _open(self, target: Target) -> bool:
        parts = urlsplit(target.local)
        headers: dict[str, str] = {}
        if self.record.auth_token:
            headers[AUTH_TOKEN_FIELD] = self.record.auth_token
        uri = target.local
        kwargs: dict[str, Any] = {}
        if target.host_header is not None:
            # Present the public Host while connecting to the loopback listener.
            uri = urlunsplit(parts._replace(netloc=target.host_header))
            kwargs = {"host": parts.hostname or "127.0.0.1", "port": parts.port or 80}
        try:
            self.ws = await connect(uri, additional_headers=headers, proxy=None,
                                    compression=None, ping_interval=None,
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
        call = self.call
        try:
            await self._send(encode_connected(auth_token=self.record.auth_token))
            await self._send(encode_start(
                self.stream_id, call.call_control_id, call_session_id=call.call_session_id,
                from_number=call.from_, to_number=call.to, client_state=call.client_state,
                custom_parameters=self.custom_parameters, sequence_number=self._next_seq()))
        except asyncio.CancelledError:
            self._end_reason = self._end_reason or "stop"
            self.ws.transport.abort()
            self._finish()
            raise
        except ConnectionClosed:
            self._finish()
            return True
        self.started = True
        self.host._log(call.call_control_id, "stream.started", stream_id=self.stream_id)
        name = f"{call.call_control_id}:{self.stream_id}"
        self._tasks = [
            self.host._spawn(self._read(), f"{name}:read"),
            self.host._spawn(self.guard(self._send_audio()), f"{name}:audio"),
            self.host._spawn(self.guard(self._play()), f"{name}:play"),
        ]
        if call.callee.script.speak_first:
            self.host._stream_turn(call, self)
        return True

    @staticmethod
    async def guard(coro: Coroutine[Any, Any, None]) -> None:
        with contextlib.suppress(ConnectionClosed):
            await coro

    def _failed(self, why: str) -> bool:
        self.record.end_reason = "failed"
        self.call.errors.append(f"stream connection failed: {why}")
        self.host._log(self.call.call_control_id, "stream.failed", stream_id=self.stream_id,
                       reason=why)
        self.closed.set()
        return False

    async def stop(self) -> None:
        """End the stream as Telnyx does when the call ends: ``stop``, then close."""
        if self.ws is None or self.closed.is_set():
            return
        if self._end_reason is None:
            self._end_reason = "stop"
            with contextlib.suppress(ConnectionClosed):
                await self._send(encode_stop(self.stream_id, self.call.call_control_id,
                                             sequence_number=self._next_seq()))
            await self.ws.close()
        if not self._tasks:
            self._finish()
        await self.closed.wait()

    def drop(self) -> None:
        """A network failure: the TCP connection vanishes, no ``stop``, no close frame."""
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
        self.host._log(self.call.call_control_id, "stream.ended", stream_id=self.stream_id,
                       reason=self.record.end_reason, close_code=self.record.close_code)
        self.host._stream_closed(self.call, self)

    async def _send(self, text: str) -> None:
        assert self.ws is not None
        await self.ws.send(text)
        self.record.frames_out.append(json.loads(text))

    # -- caller -> gateway ---------------------------------------------------------------

    def speak(self, mulaw: bytes) -> None:
        self._inbound.extend(pad_to_frames(mulaw))
        self._inbound_ready.set()

    async def press_digit(self, digit: str) -> None:
        await self._send(encode_dtmf(self.stream_id, digit, sequence_number=self._next_seq()))
        self.host._log(self.call.call_control_id, "stream.dtmf", digit=digit)

    async def _send_audio(self) -> None:
        loop = asyncio.get_running_loop()
        realtime = self.host.timings.realtime
        while True:
            if not realtime:
                while not self._inbound:
                    self._inbound_ready.clear()
                    await self._inbound_ready.wait()
            if self._inbound:
                frame = bytes(self._inbound[:FRAME_BYTES])
                del self._inbound[:FRAME_BYTES]
            else:
                frame = _SILENCE_FRAME  # Telnyx streams continuously, silence included
            self._chunk += 1
            await self._send(encode_inbound_media(
                self.stream_id, frame, sequence_number=self._next_seq(), chunk=self._chunk,
                timestamp_ms=(self._chunk - 1) * 20))
            if realtime:
                await asyncio.sleep(max(0.0, self._t0 + self._chunk * _FRAME_S - loop.time()))
            else:
                await asyncio.sleep(0)

    # -- gateway -> caller ---------------------------------------------------------------

    async def _read(self) -> None:
        assert self.ws is not None
        try:
            async for message in self.ws:
                await self._handle(message)
        except ConnectionClosed:
            pass
        finally:
            self._finish()

    async def _handle(self, message: str | bytes) -> None:
        call = self.call
        if isinstance(message, bytes):
            call.errors.append("binary frame on media stream (Telnyx expects JSON media)")
            return
        try:
            self.record.frames_in.append(json.loads(message))
            frame = parse_client_frame(message)
        except (ValueError, ProtocolError) as exc:
            call.errors.append(f"invalid media stream message: {exc}")
            return
        if isinstance(frame, OutboundMedia):
            if len(frame.payload) < FRAME_BYTES:
                call.errors.append(f"media chunk shorter than 20 ms ({len(frame.payload)} B)")
            call.outbound_audio.extend(frame.payload)
            if frame.payload:
                self._queue.append(("audio", len(frame.payload)))
                self._queue_ready.set()
        elif isinstance(frame, Mark):
            self._queue.append(("mark", frame.name))
            self._queue_ready.set()
        elif isinstance(frame, Clear):
            await self._clear()

    async def _echo_mark(self, name: str) -> None:
        await self._send(encode_mark_echo(self.stream_id, name,
                                          sequence_number=self._next_seq()))
        self.call.marks_echoed.append(name)
        self.host._log(self.call.call_control_id, "stream.mark", name=name)

    async def _clear(self) -> None:
        loop = asyncio.get_running_loop()
        dropped = sum(v for k, v in self._queue if k == "audio" and isinstance(v, int))
        dropped += int(max(0.0, self._playing_until - loop.time()) * SAMPLE_RATE)
        marks = tuple(str(v) for k, v in self._queue if k == "mark")
        self._queue.clear()
        self._playing_until = self._play_clock = loop.time()
        self._interrupt.set()
        self.call.clears.append(ClearRecord(self.stream_id, dropped, marks))
        self.host._log(self.call.call_control_id, "stream.clear", dropped_bytes=dropped,
                       marks=list(marks))
        for name in marks:
            await self._echo_mark(name)

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
                            self.host._stream_turn(self.call, self)
                else:
                    await self._queue_ready.wait()
                continue
            kind, value = self._queue.popleft()
            if kind == "mark":
                await self._echo_mark(str(value))
                continue
            assert isinstance(value, int)
            if timings.playback_is_realtime:
                now = loop.time()
                self._play_clock = max(now, self._play_clock) + value / SAMPLE_RATE
                self._playing_until = self._play_clock
                self._interrupt.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._interrupt.wait(), self._play_clock - now)
            self._played_since_turn += value
