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

The plumbing shared with the STT sessions (connect and handshake errors,
close codes, redaction, the queue, the reader loop, ``aclose``) is
``voicecall.speech._ws_common.WsSessionCore``; this module adds what only a
realtime session does (resuming on a new connection, the per-connection
"live" state).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Mapping
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from voicecall.errors import ProviderError
from voicecall.speech._ws_common import (
    CLOSE_TIMEOUT_S,
    CONNECT_TIMEOUT_S,
    DEFAULT_MAX_QUEUED_BYTES,
    READY_TIMEOUT_S,
    WsSessionCore,
    open_ws,
)
from voicecall.speech.realtime.base import RealtimeEvent, RealtimeEventType

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


class RealtimeWsSession(WsSessionCore[RealtimeEvent]):
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
    _ws_kind = "realtime"
    _ws_log = log

    def __init__(self, *, call_id: str, secret: str,
                 connect_timeout: float = CONNECT_TIMEOUT_S,
                 ready_timeout: float = READY_TIMEOUT_S,
                 close_timeout: float = CLOSE_TIMEOUT_S,
                 max_queued_bytes: int = DEFAULT_MAX_QUEUED_BYTES) -> None:
        super().__init__(call_id=call_id, secret=secret, connect_timeout=connect_timeout,
                         ready_timeout=ready_timeout, close_timeout=close_timeout,
                         max_queued_bytes=max_queued_bytes)
        self._failed = False
        self.connections = 0         # connections opened (resumptions make it > 1)

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

    # ---------------------------------------------------------------- for subclasses

    def emit(self, type_: RealtimeEventType, **fields: Any) -> None:
        if self._closed_emitted:
            return
        self._events.put_nowait(RealtimeEvent(type_, **fields))

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
    def live(self) -> bool:
        return self._live

    # ---------------------------------------------------------------- public API

    def start(self) -> None:
        self._spawn()

    # ---------------------------------------------------------------- internals

    async def _send_live(self, mulaw: bytes) -> None:
        await self._transmit(bytes(mulaw))

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

    async def _close_ws(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None and ws.state is not State.CLOSED:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), self._close_timeout)

    async def _connected_session(self) -> None:
        while True:
            self._live = False
            try:
                url, headers = self.connect_target()
                self._ws = await open_ws(self.provider, url, headers, self._secret,
                                         connect_timeout=self._connect_timeout,
                                         close_timeout=self._close_timeout,
                                         max_size=MAX_MESSAGE_BYTES, ping_interval=20,
                                         ping_timeout=20)
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

    def _waiting_for(self) -> str | None:
        if self._live:
            return None
        return "ready" if not self._is_ready else "live again"

    def _connection_lost(self, exc: ConnectionClosed) -> Exception:
        if self.on_connection_lost(exc):
            code = exc.rcvd.code if exc.rcvd is not None else 1006
            return Reconnect(f"connection closed (code {code})")
        return self._close_error(exc)

    async def _frame_text(self, data: bytes) -> str | None:
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            log.debug("realtime.bad_frame", extra={"provider": self.provider})
            return None

    async def _dispatch(self, data: dict[str, Any]) -> None:
        await self.on_message(data)

    def _emit_error(self, text: str) -> None:
        if not self._failed:
            self._failed = True
            self.emit("error", text=text)

    def _on_aclose(self) -> None:
        self._live = False

    async def _teardown(self) -> None:
        self._live = False
        await self._close_ws()

    def _emit_closed(self) -> None:
        self.emit("closed")
