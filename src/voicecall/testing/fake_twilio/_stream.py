"""One Media Streams WebSocket, dialled from the fake to the gateway like Twilio does.

Twilio's side of ``<Connect><Stream>``: send ``connected`` and ``start``, then the
caller's audio as 20 ms ``media`` frames (plus ``dtmf``); play the gateway's
``media`` back at real time, echo each ``mark`` once everything queued before it
has played, and on ``clear`` drop unplayed audio and echo pending marks at once.
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

from voicecall.carriers.twilio.media import (
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
from voicecall.carriers.twilio.signature import SIGNATURE_HEADER
from voicecall.errors import ProtocolError
from voicecall.testing.fake_twilio._audio import (
    FRAME_BYTES,
    SAMPLE_RATE,
    SILENCE_BYTE,
    pad_to_frames,
)
from voicecall.testing.fake_twilio._model import (
    AppError,
    ClearRecord,
    FakeCall,
    StreamRecord,
    Timings,
)
from voicecall.testing.fake_twilio._webhooks import WS_USER_AGENT, Target

_SILENCE_FRAME = bytes([SILENCE_BYTE]) * FRAME_BYTES
_FRAME_S = FRAME_BYTES / SAMPLE_RATE


class StreamHost(Protocol):
    """What a session needs from the fake that owns it."""

    timings: Timings

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]: ...

    def _log(self, call_sid: str | None, kind: str, **data: Any) -> None: ...

    def _callee_turn(self, call: FakeCall, session: StreamSession) -> None: ...

    def _stream_closed(self, call: FakeCall, session: StreamSession) -> None: ...


class StreamSession:
    def __init__(self, host: StreamHost, call: FakeCall, record: StreamRecord) -> None:
        self.host = host
        self.call = call
        self.record = record
        self.ws: ClientConnection | None = None
        self.closed = asyncio.Event()
        self.dialled = asyncio.Event()  # open() has finished, successfully or not
        self.started = False  # connected + start have been sent
        self._end_reason: str | None = None  # set when the fake ends the stream itself
        self._tasks: list[asyncio.Task[None]] = []
        self._seq = 0
        self._chunk = 0
        self._t0 = 0.0
        # The caller's side: audio waiting to be sent to the gateway.
        self._inbound = bytearray()
        self._inbound_ready = asyncio.Event()
        # Our side: the gateway's audio (byte counts) and marks, in playback order.
        self._queue: deque[tuple[str, int | str]] = deque()
        self._queue_ready = asyncio.Event()
        self._interrupt = asyncio.Event()
        self._play_clock = 0.0
        self._playing_until = 0.0
        self._played_since_turn = 0

    @property
    def stream_sid(self) -> str:
        return self.record.stream_sid

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

    async def open(self, target: Target, signature: str, headers: dict[str, str]) -> bool:
        """Dial the gateway; False (with the reason recorded) if the upgrade fails."""
        try:
            return await self._open(target, signature, headers)
        finally:
            self.dialled.set()

    async def _open(self, target: Target, signature: str, headers: dict[str, str]) -> bool:
        host = target.host_header
        local = _split_hostport(target.local)
        uri = target.local
        extra = {SIGNATURE_HEADER: signature}
        extra.update({k: v for k, v in headers.items() if k.lower() != "host"})
        kwargs: dict[str, Any] = {}
        if host is not None:
            # Present the public Host (as Twilio does) while connecting to the loopback
            # listener: websockets derives Host from the URI, the socket from host/port.
            uri = _replace_netloc(target.local, host)
            kwargs = {"host": local[0], "port": local[1]}
        try:
            self.ws = await connect(uri, additional_headers=extra, proxy=None,
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
        try:
            await self._send(encode_connected())
            await self._send(encode_start(self.stream_sid, self.call.sid, self.call.account_sid,
                                          custom_parameters=self.record.custom_parameters,
                                          sequence_number=self._next_seq()))
        except asyncio.CancelledError:
            # The TwiML moved on while we were still saying hello: hang up the socket.
            self._end_reason = self._end_reason or "stop"
            self.ws.transport.abort()
            self._finish()
            raise
        except ConnectionClosed:
            self._finish()
            return True
        self.started = True
        self.host._log(self.call.sid, "stream.started", stream_sid=self.stream_sid)
        name = f"{self.call.sid}:{self.stream_sid}"
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
        """Run a sender; the socket closing under it is the normal way for it to end."""
        with contextlib.suppress(ConnectionClosed):
            await coro

    def _failed(self, why: str) -> bool:
        self.record.end_reason = "failed"
        # 31920: Stream - WebSocket - Handshake Error.
        self.call.errors.append(AppError(31920, f"Stream connection failed: {why}"))
        self.host._log(self.call.sid, "stream.failed", stream_sid=self.stream_sid, reason=why)
        self.closed.set()
        return False

    async def stop(self) -> None:
        """End the stream as Twilio does when the TwiML moves on: ``stop``, then close."""
        if self.ws is None or self.closed.is_set():
            return
        if self._end_reason is None:
            self._end_reason = "stop"
            with contextlib.suppress(ConnectionClosed):
                await self._send(encode_stop(self.stream_sid, self.call.sid,
                                             self.call.account_sid,
                                             sequence_number=self._next_seq()))
            await self.ws.close()
        if not self._tasks:  # never got as far as starting the reader
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
        self.host._log(self.call.sid, "stream.ended", stream_sid=self.stream_sid,
                       reason=self.record.end_reason, close_code=self.record.close_code)
        self.host._stream_closed(self.call, self)

    async def _send(self, text: str) -> None:
        assert self.ws is not None
        await self.ws.send(text)
        self.record.frames_out.append(json.loads(text))

    # -- caller -> gateway ---------------------------------------------------------

    def speak(self, mulaw: bytes) -> None:
        """Queue caller audio; it goes out in 20 ms frames after anything already queued."""
        self._inbound.extend(pad_to_frames(mulaw))
        self._inbound_ready.set()

    async def press(self, digits: str) -> None:
        for i, digit in enumerate(digits):
            if i:
                await asyncio.sleep(self.host.timings.dtmf_gap)
            await self._send(encode_dtmf(self.stream_sid, digit,
                                         sequence_number=self._next_seq()))
            self.host._log(self.call.sid, "stream.dtmf", digit=digit)

    async def _send_audio(self) -> None:
        loop = asyncio.get_running_loop()
        realtime = self.host.timings.realtime
        while True:
            if not realtime:
                # Fast mode sends only real audio (no idle silence), as fast as possible.
                while not self._inbound:
                    self._inbound_ready.clear()
                    await self._inbound_ready.wait()
            if self._inbound:
                frame = bytes(self._inbound[:FRAME_BYTES])
                del self._inbound[:FRAME_BYTES]
            else:
                frame = _SILENCE_FRAME  # Twilio streams continuously, silence included
            self._chunk += 1
            await self._send(encode_inbound_media(
                self.stream_sid, frame, sequence_number=self._next_seq(), chunk=self._chunk,
                timestamp_ms=(self._chunk - 1) * 20))
            if realtime:
                # Absolute schedule so per-frame sleep overshoot does not accumulate.
                await asyncio.sleep(max(0.0, self._t0 + self._chunk * _FRAME_S - loop.time()))
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

    async def _handle(self, message: str | bytes) -> None:
        call = self.call
        if isinstance(message, bytes):
            # 31950: Stream - Protocol - Invalid Message Type (binary).
            call.errors.append(AppError(31950, "binary frame on media stream", "warning"))
            return
        try:
            self.record.frames_in.append(json.loads(message))
            frame = parse_client_frame(message)
        except (ValueError, ProtocolError) as exc:
            # 31951: Stream - Protocol - Invalid Message.
            call.errors.append(AppError(31951, f"invalid media stream message: {exc}",
                                        "warning"))
            return
        if frame.stream_sid != self.stream_sid:
            call.errors.append(AppError(
                31951, f"streamSid {frame.stream_sid!r} is not {self.stream_sid!r}", "warning"))
            return
        if isinstance(frame, OutboundMedia):
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
        await self._send(encode_mark_echo(self.stream_sid, name,
                                          sequence_number=self._next_seq()))
        self.call.marks_echoed.append(name)
        self.host._log(self.call.sid, "stream.mark", name=name)

    async def _clear(self) -> None:
        loop = asyncio.get_running_loop()
        dropped = sum(v for k, v in self._queue if k == "audio" and isinstance(v, int))
        dropped += int(max(0.0, self._playing_until - loop.time()) * SAMPLE_RATE)
        marks = tuple(str(v) for k, v in self._queue if k == "mark")
        self._queue.clear()
        self._playing_until = self._play_clock = loop.time()
        self._interrupt.set()
        self.call.clears.append(ClearRecord(self.stream_sid, dropped, marks))
        self.host._log(self.call.sid, "stream.clear", dropped_bytes=dropped, marks=list(marks))
        for name in marks:  # Twilio answers every pending mark when a clear flushes it
            await self._echo_mark(name)

    async def _play(self) -> None:
        loop = asyncio.get_running_loop()
        timings = self.host.timings
        while True:
            if not self._queue:
                self._queue_ready.clear()
                if self._played_since_turn:
                    # Our side went quiet after saying something: the caller's turn,
                    # unless more audio arrives within the gap.
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


def _split_hostport(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    default = 443 if parts.scheme in ("https", "wss") else 80
    return parts.hostname or "127.0.0.1", parts.port or default


def _replace_netloc(url: str, netloc: str) -> str:
    return urlunsplit(urlsplit(url)._replace(netloc=netloc))
