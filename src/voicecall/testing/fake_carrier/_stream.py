"""One media-stream WebSocket, dialled from a carrier fake to the gateway.

The carrier-neutral session: dial (presenting the public Host while connecting to
the loopback listener), the reader, ``stop``/``drop``/close bookkeeping, the caller's
audio sent as 20 ms frames (real-time paced, or as fast as possible), and the
gateway's audio "played" at real time with marks answered in playback order and
the callee's turn taken when playback goes quiet. A carrier's session subclass
supplies the frames (``_hello``, ``_encode_*``, ``_parse``, ``_dispatch``) and what
a failure, a played mark and a clear mean on its wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import Coroutine, Mapping
from typing import Any, ClassVar, Protocol
from urllib.parse import urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from voicecall.errors import ProtocolError
from voicecall.testing.fake_carrier._model import BaseStreamRecord
from voicecall.testing.fake_carrier._webhooks import Target

FRAME_S = 0.02  # every carrier streams 20 ms frames


class StreamTimings(Protocol):
    @property
    def realtime(self) -> bool: ...
    @property
    def playback_is_realtime(self) -> bool: ...
    @property
    def turn_gap(self) -> float: ...
    @property
    def dtmf_gap(self) -> float: ...
    @property
    def webhook_timeout(self) -> float: ...
    @property
    def close_timeout(self) -> float: ...


class SessionHost(Protocol):
    """What a session needs from the fake that owns it."""

    @property
    def timings(self) -> StreamTimings: ...

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]: ...

    def _log(self, call_id: str | None, kind: str, **data: Any) -> None: ...

    def _callee_turn(self, call: Any, session: Any, /) -> None: ...

    def _stream_closed(self, call: Any, session: Any, /) -> None: ...


class MediaStreamSession:
    """The carrier-neutral part of one stream (a reconnect makes a new session)."""

    user_agent: ClassVar[str]  # the carrier's WebSocket User-Agent
    stream_key: ClassVar[str] = "stream_id"  # how log entries name the stream
    scripted_dtmf: ClassVar[bool] = True  # send the callee's ``dtmf`` script on the stream

    def __init__(self, host: SessionHost, call: Any, record: BaseStreamRecord, *,
                 frame_bytes: int, silence: bytes) -> None:
        self.host = host
        self.call = call
        self.record = record
        self.frame_bytes = frame_bytes  # one 20 ms frame on the wire
        self.bytes_per_s = frame_bytes * 50
        self.silence = silence  # one 20 ms frame of silence
        self.ws: ClientConnection | None = None
        self.closed = asyncio.Event()
        self.dialled = asyncio.Event()  # open() has finished, successfully or not
        self.started = False  # the carrier's hello (connected/start) has been sent
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

    # -- what a carrier supplies -------------------------------------------------------

    @property
    def _call_id(self) -> str:
        raise NotImplementedError

    @property
    def _stream_ref(self) -> str:
        raise NotImplementedError

    async def _hello(self) -> None:
        """Send the frames that open the stream (``connected``, ``start`` ...)."""
        raise NotImplementedError

    def _started_data(self) -> dict[str, Any]:
        return {}

    def _record_failure(self, why: str) -> None:
        """Record the carrier's error for a stream that could not be dialled."""
        raise NotImplementedError

    def _encode_stop(self) -> str:
        raise NotImplementedError

    def _encode_media(self, frame: bytes) -> str:
        raise NotImplementedError

    def _encode_dtmf(self, digit: str) -> str:
        raise NotImplementedError

    def _to_wire(self, mulaw: bytes) -> bytes:
        """Caller audio (mu-law 8 kHz) as the stream carries it."""
        return mulaw

    def _warn_binary(self) -> None:
        raise NotImplementedError

    def _warn_invalid(self, exc: Exception) -> None:
        raise NotImplementedError

    def _parse(self, message: str) -> Any:
        """One frame from the gateway; ValueError or ProtocolError if it is not valid."""
        raise NotImplementedError

    async def _dispatch(self, frame: Any) -> None:
        raise NotImplementedError

    async def _mark_played(self, name: str) -> None:
        """Everything queued before mark ``name`` has played: tell the gateway."""
        raise NotImplementedError

    async def _cleared(self, dropped: int, marks: tuple[str, ...]) -> None:
        """A clear dropped ``dropped`` bytes of our audio and the pending ``marks``."""
        raise NotImplementedError

    # -- state -------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self.ws is not None and not self.closed.is_set()

    @property
    def callee_speaking(self) -> bool:
        return bool(self._inbound)

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _log(self, kind: str, **data: Any) -> None:
        self.host._log(self._call_id, kind, **data)

    # -- lifecycle ---------------------------------------------------------------------

    async def _dial(self, target: Target, headers: Mapping[str, str] | None = None) -> bool:
        """Dial the gateway; False (with the reason recorded) if the upgrade fails."""
        try:
            return await self._open(target, headers)
        finally:
            self.dialled.set()

    async def _open(self, target: Target, headers: Mapping[str, str] | None) -> bool:
        uri = target.local
        kwargs: dict[str, Any] = {}
        if target.host_header is not None:
            # Present the public Host (as the carrier does) while connecting to the loopback
            # listener: websockets derives Host from the URI, the socket from host/port.
            host, port = _split_hostport(target.local)
            uri = _replace_netloc(target.local, target.host_header)
            kwargs = {"host": host, "port": port}
        timings = self.host.timings
        try:
            self.ws = await connect(uri, additional_headers=headers, proxy=None,
                                    compression=None, ping_interval=None,
                                    user_agent_header=self.user_agent,
                                    open_timeout=timings.webhook_timeout,
                                    close_timeout=timings.close_timeout, **kwargs)
        except InvalidStatus as exc:
            self.record.handshake_status = exc.response.status_code
            return self._failed(f"upgrade refused: HTTP {exc.response.status_code}")
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            return self._failed(f"{type(exc).__name__}: {exc}")
        self.record.connected = True
        self._t0 = asyncio.get_running_loop().time()
        try:
            await self._hello()
        except asyncio.CancelledError:
            # The call moved on while we were still saying hello: hang up the socket.
            self._end_reason = self._end_reason or "stop"
            self.ws.transport.abort()
            self._finish()
            raise
        except ConnectionClosed:
            self._finish()
            return True
        self.started = True
        self._log("stream.started", **{self.stream_key: self._stream_ref},
                  **self._started_data())
        name = f"{self._call_id}:{self._stream_ref}"
        spawn = self.host._spawn
        self._tasks = [
            spawn(self._read(), f"{name}:read"),
            spawn(self.guard(self._send_audio()), f"{name}:audio"),
            spawn(self.guard(self._play()), f"{name}:play"),
        ]
        script = self.call.callee.script
        if self.scripted_dtmf and script.dtmf:
            self._tasks.append(spawn(self.guard(self._scripted_dtmf()), f"{name}:dtmf"))
        if script.speak_first:
            self.host._callee_turn(self.call, self)
        return True

    @staticmethod
    async def guard(coro: Coroutine[Any, Any, None]) -> None:
        """Run a sender; the socket closing under it is the normal way for it to end."""
        with contextlib.suppress(ConnectionClosed):
            await coro

    def _failed(self, why: str) -> bool:
        self.record.end_reason = "failed"
        self._record_failure(why)
        self._log("stream.failed", **{self.stream_key: self._stream_ref}, reason=why)
        self.closed.set()
        return False

    async def stop(self) -> None:
        """End the stream as the carrier does when the call moves on: stop, then close."""
        if self.ws is None or self.closed.is_set():
            return
        if self._end_reason is None:
            self._end_reason = "stop"
            with contextlib.suppress(ConnectionClosed):
                await self._send(self._encode_stop())
            await self.ws.close()
        if not self._tasks:  # never got as far as starting the reader
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
        self._log("stream.ended", **{self.stream_key: self._stream_ref},
                  reason=self.record.end_reason, close_code=self.record.close_code)
        self.host._stream_closed(self.call, self)

    async def _send(self, text: str) -> None:
        assert self.ws is not None
        await self.ws.send(text)
        self.record.frames_out.append(json.loads(text))

    # -- caller -> gateway -------------------------------------------------------------

    def speak(self, mulaw: bytes) -> None:
        """Queue caller audio; it goes out in 20 ms frames after anything already queued."""
        wire = self._to_wire(mulaw)
        rest = len(wire) % self.frame_bytes
        if rest:
            wire += self.silence[: self.frame_bytes - rest]
        self._inbound.extend(wire)
        self._inbound_ready.set()

    async def press_digit(self, digit: str) -> None:
        await self._send(self._encode_dtmf(digit))
        self._log("stream.dtmf", digit=digit)

    async def press(self, digits: str) -> None:
        for i, digit in enumerate(digits):
            if i:
                await asyncio.sleep(self.host.timings.dtmf_gap)
            await self.press_digit(digit)

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
                frame = bytes(self._inbound[: self.frame_bytes])
                del self._inbound[: self.frame_bytes]
            else:
                frame = self.silence  # carriers stream continuously, silence included
            self._chunk += 1
            await self._send(self._encode_media(frame))
            if realtime:
                # Absolute schedule so per-frame sleep overshoot does not accumulate.
                await asyncio.sleep(max(0.0, self._t0 + self._chunk * FRAME_S - loop.time()))
            else:
                await asyncio.sleep(0)

    async def _scripted_dtmf(self) -> None:
        loop = asyncio.get_running_loop()
        for at, digits in sorted(self.call.callee.script.dtmf):
            await asyncio.sleep(max(0.0, self._t0 + at - loop.time()))
            await self.press(digits)

    # -- gateway -> caller -------------------------------------------------------------

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
        if isinstance(message, bytes):
            self._warn_binary()
            return
        try:
            self.record.frames_in.append(json.loads(message))
            frame = self._parse(message)
        except (ValueError, ProtocolError) as exc:
            self._warn_invalid(exc)
            return
        await self._dispatch(frame)

    def _queue_audio(self, nbytes: int) -> None:
        """Our audio to play, after anything already queued."""
        if nbytes:
            self._queue.append(("audio", nbytes))
            self._queue_ready.set()

    def _queue_mark(self, name: str) -> None:
        self._queue.append(("mark", name))
        self._queue_ready.set()

    async def _clear(self) -> None:
        loop = asyncio.get_running_loop()
        dropped = sum(v for k, v in self._queue if k == "audio" and isinstance(v, int))
        dropped += int(max(0.0, self._playing_until - loop.time()) * self.bytes_per_s)
        marks = tuple(str(v) for k, v in self._queue if k == "mark")
        self._queue.clear()
        self._playing_until = self._play_clock = loop.time()
        self._interrupt.set()
        await self._cleared(dropped, marks)

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
                await self._mark_played(str(value))
                continue
            assert isinstance(value, int)
            if timings.playback_is_realtime:
                now = loop.time()
                self._play_clock = max(now, self._play_clock) + value / self.bytes_per_s
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
