"""Shared plumbing for realtime (speech-to-speech) providers over WebSocket.

``RealtimeWsSession`` is one call's conversation with a provider. A provider
module subclasses it and implements the vendor protocol in the hooks
(``connect_target``, ``on_open``, ``on_message``, ``encode_audio``,
``on_connection_lost``). What the base does for every provider, in the house
style of ``voicecall.speech.stt._ws``:

- connects in the background with the provider's headers, a connect timeout
  and a ready timeout (per connection);
- holds everything handed to it while no connection is live (before the
  provider is ready, and while a provider reconnects): caller audio and
  control messages in one ordered queue, bounded by audio bytes (2 MiB by
  default); on overflow the oldest *audio* goes first (logged once, counted
  in ``dropped_bytes``), control messages are never dropped. The queue is
  flushed in order the moment the connection is live again;
- reads server messages (text or binary frames holding JSON) in one task;
  ``events()`` yields ``RealtimeEvent``s and always ends with exactly one
  ``closed``, right after an ``error`` when the session failed;
- can continue a session on a new connection (``Reconnect`` raised by a hook,
  or ``on_connection_lost`` saying so): the old socket is closed, audio is
  queued meanwhile, and ``on_open`` runs again on the new socket;
- ``aclose`` is idempotent.

Error texts never contain the API key (``redact``), and URLs are never put in
messages (a query string may hold a key).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import AsyncIterator, Mapping
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException
from websockets.protocol import State

from voicecall.errors import ProviderError
from voicecall.speech.realtime.base import RealtimeEvent, RealtimeEventType
from voicecall.speech.stt._ws import handshake_error, redact

__all__ = [
    "CLOSE_TIMEOUT_S",
    "CONNECT_TIMEOUT_S",
    "DEFAULT_MAX_QUEUED_BYTES",
    "READY_TIMEOUT_S",
    "RealtimeWsSession",
    "Reconnect",
    "greeting_instructions",
    "say_instructions",
]

log = logging.getLogger("voicecall.realtime")

DEFAULT_MAX_QUEUED_BYTES = 2 * 1024 * 1024   # mu-law bytes: ~4.4 minutes
CONNECT_TIMEOUT_S = 10.0
READY_TIMEOUT_S = 10.0
CLOSE_TIMEOUT_S = 2.0
USER_AGENT = "voicecall"
MAX_MESSAGE_BYTES = 16 * 1024 * 1024


def greeting_instructions(instructions: str, greeting: str) -> str:
    """The opening-turn instructions, worded as OpenClaw does (§7.1)."""
    head = f"{instructions.strip()}\n\n" if instructions.strip() else ""
    return (f"{head}Start the call by greeting the caller naturally. Include this greeting in "
            f"your first spoken reply: \"{greeting}\"")


def say_instructions(instructions: str, text: str) -> str:
    head = f"{instructions.strip()}\n\n" if instructions.strip() else ""
    return f"{head}Say this to the caller now, naturally and without adding to it: \"{text}\""


class Reconnect(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Raised by a hook: continue this session on a new connection."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


class RealtimeWsSession:
    """One realtime conversation for one call. Subclasses implement the vendor protocol.

    Hooks:

    - ``connect_target``: ``(url, headers)`` for the next connection.
    - ``on_open``: right after each upgrade; send the session setup.
    - ``on_message``: each JSON object from the server. Call ``emit``,
      ``await self.mark_live()`` once the provider accepts input, raise
      ``ProviderError`` for a fatal error or ``Reconnect`` to move on.
    - ``encode_audio``: a mu-law chunk as the text frames to send (may be none).
    - ``on_connection_lost``: the server closed or dropped the socket; return
      True to reconnect (default: never).
    - ``on_first_live``: once, after the first ``ready`` (greeting and such).
    """

    provider = "realtime"

    def __init__(self, *, call_id: str, secret: str,
                 connect_timeout: float = CONNECT_TIMEOUT_S,
                 ready_timeout: float = READY_TIMEOUT_S,
                 close_timeout: float = CLOSE_TIMEOUT_S,
                 max_queued_bytes: int = DEFAULT_MAX_QUEUED_BYTES) -> None:
        self.call_id = call_id
        self._secret = secret
        self._connect_timeout = connect_timeout
        self._ready_timeout = ready_timeout
        self._close_timeout = close_timeout
        self._max_queued = max_queued_bytes
        self._events: asyncio.Queue[RealtimeEvent] = asyncio.Queue()
        self._ready = asyncio.Event()          # set when ready *or* failed before ready
        self._ready_error: ProviderError | None = None
        self._is_ready = False
        self._live = False                     # a connection takes input right now
        self._pending: deque[bytes | str] = deque()   # bytes: mu-law audio; str: a message
        self._pending_bytes = 0
        self._ws: ClientConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._aclose_started = False
        self._aclose_done = asyncio.Event()
        self._closed_emitted = False
        self._closed_delivered = False
        self._failed = False
        self._warned: set[str] = set()
        self.connections = 0         # connections opened (resumptions make it > 1)
        self.sent_bytes = 0          # mu-law bytes handed to a socket
        self.dropped_bytes = 0       # mu-law bytes never sent

    # ---------------------------------------------------------------- hooks

    def connect_target(self) -> tuple[str, Mapping[str, str]]:
        raise NotImplementedError

    async def on_open(self) -> None:
        return None

    async def on_message(self, data: dict[str, Any]) -> None:
        raise NotImplementedError

    def encode_audio(self, mulaw: bytes) -> list[str]:
        raise NotImplementedError

    def on_connection_lost(self, exc: ConnectionClosed) -> bool:
        return False

    async def on_first_live(self) -> None:
        return None

    def connection_error(self, exc: ConnectionClosed) -> ProviderError:
        """The error for a socket the server closed or dropped (no reconnect)."""
        code = exc.rcvd.code if exc.rcvd is not None else 1006
        reason = exc.rcvd.reason if exc.rcvd is not None else ""
        what = "closed by the server" if exc.rcvd is not None else "lost"
        text = f"{self.provider}: connection {what} (code {code}" + \
            (f": {reason})" if reason else ")")
        return ProviderError(self.error_text(text),
                             retryable=code in (1001, 1006, 1011, 1012, 1013, 1014))

    # ---------------------------------------------------------------- for subclasses

    def emit(self, type_: RealtimeEventType, **fields: Any) -> None:
        if self._closed_emitted:
            return
        self._events.put_nowait(RealtimeEvent(type_, **fields))

    def error_text(self, text: str) -> str:
        return redact(text, self._secret)

    async def send_now(self, obj: Mapping[str, Any]) -> None:
        """Send on the current socket regardless of liveness (setup messages)."""
        ws = self._ws
        if ws is None:
            raise ProviderError(f"{self.provider}: not connected")
        await ws.send(json.dumps(obj, separators=(",", ":")))

    async def send_control(self, obj: Mapping[str, Any]) -> None:
        """Send a protocol message now if live, else queue it (in order with the audio)."""
        text = json.dumps(obj, separators=(",", ":"))
        if self._closing or self._closed_emitted:
            log.debug("realtime.message_dropped", extra={"provider": self.provider,
                                                        "call_id": self.call_id})
            return
        if not self._live:
            self._pending.append(text)
            return
        await self._transmit(text)

    async def mark_live(self) -> None:
        """The connection takes input: flush the queue in order, then go live.

        The first time this is also "ready" (``ready`` event, ``wait_ready``
        returns, ``on_first_live`` runs).
        """
        if self._live or self._ready_error is not None:
            return
        while self._pending:
            item = self._pending.popleft()
            if isinstance(item, bytes):
                self._pending_bytes -= len(item)
            if not await self._transmit(item):
                return        # the socket went away mid-flush; the item is back in the queue
        self._live = True
        if not self._is_ready:
            self._is_ready = True
            self._ready.set()
            self.emit("ready")
            log.debug("realtime.ready", extra={"provider": self.provider,
                                               "call_id": self.call_id})
            await self.on_first_live()

    @property
    def ready(self) -> bool:
        return self._is_ready

    @property
    def live(self) -> bool:
        return self._live

    @property
    def queued_bytes(self) -> int:
        return self._pending_bytes

    # ---------------------------------------------------------------- public API

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"realtime-{self.provider}-{self.call_id}")

    async def wait_ready(self) -> None:
        await self._ready.wait()
        err = self._ready_error
        if err is not None:
            raise ProviderError(str(err), retryable=err.retryable, status_code=err.status_code)

    async def send_audio(self, mulaw: bytes) -> None:
        if not mulaw:
            return
        if self._closing or self._closed_emitted or self._ready_error is not None:
            self._drop(len(mulaw), "session closed")
            return
        if not self._live:
            self._enqueue_audio(bytes(mulaw))
            return
        await self._transmit(bytes(mulaw))

    async def events(self) -> AsyncIterator[RealtimeEvent]:
        while not self._closed_delivered:
            ev = await self._events.get()
            if ev.type == "closed":
                self._closed_delivered = True
            yield ev

    async def aclose(self) -> None:
        if self._aclose_started:
            await self._aclose_done.wait()
            return
        self._aclose_started = True
        self._closing = True
        self._live = False
        try:
            task, ws = self._task, self._ws
            if task is not None and not task.done():
                if ws is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(ws.close(), self._close_timeout)
                    await asyncio.wait({task}, timeout=self._close_timeout)
                if not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            self._finish()
        finally:
            self._aclose_done.set()

    # ---------------------------------------------------------------- internals

    def _drop(self, n: int, why: str) -> None:
        self.dropped_bytes += n
        if why not in self._warned:
            self._warned.add(why)
            log.warning("realtime.audio_dropped", extra={"provider": self.provider,
                                                         "call_id": self.call_id, "why": why})

    def _enqueue_audio(self, mulaw: bytes, front: bool = False) -> None:
        if front:
            self._pending.appendleft(mulaw)
        else:
            self._pending.append(mulaw)
        self._pending_bytes += len(mulaw)
        while self._pending_bytes > self._max_queued:
            for i, item in enumerate(self._pending):
                if isinstance(item, bytes):
                    del self._pending[i]
                    self._pending_bytes -= len(item)
                    self._drop(len(item), "queue full, oldest audio dropped")
                    break
            else:  # pragma: no cover - only audio counts towards the bound
                break

    async def _transmit(self, item: bytes | str) -> bool:
        """Send one queued item; on a dead socket put it back (front) and go not-live."""
        ws = self._ws
        frames = self.encode_audio(item) if isinstance(item, bytes) else [item]
        if ws is None:
            self._requeue(item)
            return False
        try:
            for frame in frames:
                await ws.send(frame)
        except ConnectionClosed:
            # The reader reports the close (or reconnects and flushes this again).
            self._requeue(item)
            return False
        if isinstance(item, bytes):
            self.sent_bytes += len(item)
        return True

    def _requeue(self, item: bytes | str) -> None:
        self._live = False
        if self._closing:
            if isinstance(item, bytes):
                self._drop(len(item), "session closed")
            return
        if isinstance(item, bytes):
            self._enqueue_audio(item, front=True)
        else:
            self._pending.appendleft(item)

    async def _connect(self) -> ClientConnection:
        url, headers = self.connect_target()
        try:
            return await asyncio.wait_for(
                connect(url, additional_headers=dict(headers), user_agent_header=USER_AGENT,
                        open_timeout=None, close_timeout=self._close_timeout,
                        max_size=MAX_MESSAGE_BYTES, ping_interval=20, ping_timeout=20),
                self._connect_timeout)
        except InvalidStatus as exc:
            raise handshake_error(self.provider, exc, self._secret) from None
        except TimeoutError:
            raise ProviderError(f"{self.provider}: no connection after "
                                f"{self._connect_timeout:g} s", retryable=True) from None
        except (OSError, WebSocketException) as exc:
            raise ProviderError(self.error_text(
                f"{self.provider}: cannot connect: {type(exc).__name__}: {exc}"),
                retryable=True) from None

    async def _close_ws(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None and ws.state is not State.CLOSED:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), self._close_timeout)

    async def _run(self) -> None:
        try:
            while True:
                self._live = False
                try:
                    self._ws = await self._connect()
                    self.connections += 1
                    log.debug("realtime.connected", extra={
                        "provider": self.provider, "call_id": self.call_id,
                        "connection": self.connections})
                    try:
                        await self.on_open()
                    except ConnectionClosed:
                        pass      # the reader says why, after what the server sent first
                    await self._read(self._ws)
                    return
                except Reconnect as exc:
                    log.info("realtime.reconnecting", extra={
                        "provider": self.provider, "call_id": self.call_id, "why": exc.why})
                    self._live = False
                    await self._close_ws()
                    if self._closing:
                        return
        except ProviderError as exc:
            self._fail(exc)
        except ConnectionClosed as exc:
            if not self._closing:
                self._fail(self.connection_error(exc))
        except Exception as exc:  # a bug or a malformed message: report it, do not hang
            log.debug("realtime.session_failed", exc_info=True)
            self._fail(ProviderError(self.error_text(
                f"{self.provider}: {type(exc).__name__}: {exc}"), retryable=True))
        finally:
            self._live = False
            await self._close_ws()
            self._finish()

    async def _read(self, ws: ClientConnection) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._ready_timeout
        while True:
            try:
                if self._live:
                    message = await ws.recv()
                else:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        what = "ready" if not self._is_ready else "live again"
                        raise ProviderError(f"{self.provider}: not {what} within "
                                            f"{self._ready_timeout:g} s", retryable=True)
                    message = await asyncio.wait_for(ws.recv(), remaining)
            except TimeoutError:
                continue
            except ConnectionClosed as exc:
                if self._closing:
                    return
                if self.on_connection_lost(exc):
                    code = exc.rcvd.code if exc.rcvd is not None else 1006
                    raise Reconnect(f"connection closed (code {code})") from None
                raise self.connection_error(exc) from None
            if isinstance(message, bytes):
                try:
                    message = message.decode("utf-8")
                except UnicodeDecodeError:
                    log.debug("realtime.bad_frame", extra={"provider": self.provider})
                    continue
            try:
                data = json.loads(message)
            except ValueError:
                log.debug("realtime.bad_json", extra={"provider": self.provider})
                continue
            if isinstance(data, dict):
                await self.on_message(data)

    def _fail(self, exc: ProviderError) -> None:
        if not self._is_ready and self._ready_error is None:
            self._ready_error = exc
            self._ready.set()
        if not self._failed:
            self._failed = True
            self.emit("error", text=str(exc))
        log.warning("realtime.failed", extra={"provider": self.provider,
                                              "call_id": self.call_id, "why": str(exc)})

    def _finish(self) -> None:
        if self._closed_emitted:
            return
        if not self._is_ready and self._ready_error is None:
            self._ready_error = ProviderError(f"{self.provider}: session closed before it was "
                                              "ready")
            self._ready.set()
        if self._pending_bytes:
            self._drop(self._pending_bytes, "session closed with audio queued")
        self._pending.clear()
        self._pending_bytes = 0
        self.emit("closed")
        self._closed_emitted = True
