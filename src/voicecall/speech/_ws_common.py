"""What the WebSocket sessions of the STT and realtime providers share.

``voicecall.speech.stt._ws`` (``WsSttSession``) and
``voicecall.speech.realtime._ws`` (``RealtimeWsSession``) differ in their
protocol (STT sessions never reconnect; realtime sessions may continue on a
new connection), but not in their plumbing, which lives here:

- the timeouts and bounds both use, and the ``User-Agent``;
- error texts: ``redact`` (no API key, no masked key fragment, shortened),
  ``handshake_error`` (a refused upgrade), ``close_error`` (a socket the
  server closed or dropped, retryable by close code) and ``open_ws`` (connect
  with a timeout, every failure as a ``ProviderError``; URLs never appear in
  messages, a query string may hold a key);
- ``WsSessionCore``: one call's session state (the ordered queue of audio and
  control messages held while no connection takes input, bounded by audio
  bytes, oldest audio dropped first and counted), the events queue that
  always ends with exactly one ``closed``, ``wait_ready``, the reader loop
  (ready deadline, JSON decoding), the run/fail/finish skeleton and an
  idempotent ``aclose``. Subclasses fill in the hooks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections import deque
from collections.abc import AsyncIterator, Mapping
from typing import Any, Generic, Protocol, TypeVar

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from voicecall.errors import ProviderError

__all__ = [
    "CLOSE_TIMEOUT_S",
    "CONNECT_TIMEOUT_S",
    "DEFAULT_MAX_QUEUED_BYTES",
    "READY_TIMEOUT_S",
    "RETRYABLE_CLOSE_CODES",
    "USER_AGENT",
    "WsSessionCore",
    "close_error",
    "handshake_error",
    "open_ws",
    "redact",
]

DEFAULT_MAX_QUEUED_BYTES = 2 * 1024 * 1024  # 2 MiB of mu-law is ~4.4 minutes (as OpenClaw)
CONNECT_TIMEOUT_S = 10.0
READY_TIMEOUT_S = 10.0
CLOSE_TIMEOUT_S = 2.0
USER_AGENT = "voicecall"
# Close codes after which trying again later may well work.
RETRYABLE_CLOSE_CODES = frozenset({1001, 1006, 1011, 1012, 1013, 1014})
_MAX_DETAIL = 300


# --------------------------------------------------------------------------- errors

# A key echoed back partly masked ("sk-ab***yz", "xa***ey"): drop the whole token.
_MASKED_KEY = re.compile(r"\S*\*{2,}\S*")


def redact(text: str, *secrets: str) -> str:
    """``text`` without any of ``secrets`` or masked key fragments, shortened."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    text = _MASKED_KEY.sub("[redacted]", text)
    return text if len(text) <= _MAX_DETAIL else text[:_MAX_DETAIL] + "..."


def _body_detail(body: bytes | bytearray | None) -> str:
    if not body:
        return ""
    text = bytes(body).decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return " ".join(text.split())[:200]
    if isinstance(data, dict):
        for key in ("err_msg", "error", "message", "description", "detail"):
            value = data.get(key)
            if isinstance(value, dict):
                value = value.get("message")
            if isinstance(value, str) and value:
                code = data.get("err_code") or data.get("code")
                return f"{code}: {value}" if isinstance(code, str) and code else value
    return " ".join(text.split())[:200]


def handshake_error(provider: str, exc: InvalidStatus, *secrets: str) -> ProviderError:
    """A ``ProviderError`` for a refused WebSocket upgrade (401, 400, 429, ...)."""
    status = exc.response.status_code
    detail = _body_detail(exc.response.body)
    message = f"{provider}: connection refused with HTTP {status}"
    if detail:
        message += f": {detail}"
    return ProviderError(redact(message, *secrets), retryable=status == 429 or status >= 500,
                         status_code=status)


def close_error(provider: str, exc: ConnectionClosed, *secrets: str) -> ProviderError:
    code = exc.rcvd.code if exc.rcvd is not None else 1006
    reason = exc.rcvd.reason if exc.rcvd is not None else ""
    what = "closed by the server" if exc.rcvd is not None else "lost"
    message = f"{provider}: connection {what} (code {code}" + (f": {reason})" if reason else ")")
    return ProviderError(redact(message, *secrets), retryable=code in RETRYABLE_CLOSE_CODES)


async def open_ws(provider: str, url: str, headers: Mapping[str, str], secret: str, *,
                  connect_timeout: float, close_timeout: float, max_size: int,
                  where: str = "", **options: Any) -> ClientConnection:
    """Connect within ``connect_timeout``; every failure is a redacted ``ProviderError``.

    ``where`` (" to <host>", or empty) goes into the messages; the URL never does.
    """
    try:
        return await asyncio.wait_for(
            connect(url, additional_headers=dict(headers), user_agent_header=USER_AGENT,
                    open_timeout=None, close_timeout=close_timeout, max_size=max_size,
                    **options),
            connect_timeout)
    except InvalidStatus as exc:
        raise handshake_error(provider, exc, secret) from None
    except TimeoutError:
        raise ProviderError(f"{provider}: no connection{where} after {connect_timeout:g} s",
                            retryable=True) from None
    except (OSError, WebSocketException) as exc:
        raise ProviderError(redact(f"{provider}: cannot connect{where}: "
                                   f"{type(exc).__name__}: {exc}", secret),
                            retryable=True) from None


# --------------------------------------------------------------------------- session


class _Event(Protocol):
    @property
    def type(self) -> str: ...


E = TypeVar("E", bound=_Event)


class WsSessionCore(Generic[E]):
    """The state and life of one provider session over WebSocket (see the module doc).

    Hooks for the subclasses (``voicecall.speech.stt._ws``, ``voicecall.speech.realtime._ws``):
    ``_connected_session`` (connect and read until the end), ``_waiting_for`` (what the
    reader's deadline waits for, or None), ``_connection_lost`` (the exception for a
    socket the server closed or dropped), ``_frame_text`` (a binary frame as text, or
    None when handled), ``_dispatch`` (one JSON object), ``_close_error``,
    ``_emit_error``, ``_teardown``, the ``aclose`` steps ``_on_aclose``,
    ``_before_close`` and ``_after_close``, and for ``send_audio`` ``_send_live``
    (audio while live) and ``_audio_taken`` (after any audio was taken).
    """

    provider = "ws"
    _ws_kind = "ws"                 # log event and task name prefix: "stt", "realtime"
    _ws_log = logging.getLogger("voicecall.speech")
    _overflow_why = "queue full, oldest audio dropped"
    _closed_why = "session closed with audio queued"

    def __init__(self, *, call_id: str, secret: str, connect_timeout: float,
                 ready_timeout: float, close_timeout: float, max_queued_bytes: int) -> None:
        self.call_id = call_id
        self._secret = secret
        self._connect_timeout = connect_timeout
        self._ready_timeout = ready_timeout
        self._close_timeout = close_timeout
        self._max_queued = max_queued_bytes
        self._events: asyncio.Queue[E] = asyncio.Queue()
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
        self._warned: set[str] = set()
        self.sent_bytes = 0          # mu-law bytes handed to a socket
        self.dropped_bytes = 0       # mu-law bytes never sent (queue overflow, after close)

    # ---------------------------------------------------------------- hooks

    async def _connected_session(self) -> None:
        raise NotImplementedError

    def _waiting_for(self) -> str | None:
        return None if self._is_ready else "ready"

    def _connection_lost(self, exc: ConnectionClosed) -> Exception:
        return self._close_error(exc)

    async def _frame_text(self, data: bytes) -> str | None:
        return None

    async def _dispatch(self, data: dict[str, Any]) -> None:
        raise NotImplementedError

    def _close_error(self, exc: ConnectionClosed) -> ProviderError:
        return close_error(self.provider, exc, self._secret)

    def _emit_error(self, text: str) -> None:
        raise NotImplementedError

    async def _teardown(self) -> None:
        return None

    def _on_aclose(self) -> None:
        return None

    async def _before_close(self, task: asyncio.Task[None], ws: ClientConnection | None) -> None:
        return None

    async def _after_close(self) -> None:
        return None

    async def _send_live(self, mulaw: bytes) -> None:
        raise NotImplementedError

    async def _audio_taken(self, mulaw: bytes) -> None:
        return None

    # ---------------------------------------------------------------- shared

    def error_text(self, text: str) -> str:
        return redact(text, self._secret)

    def describe_error(self, err: object, fallback: str) -> str:
        """One line for an OpenAI-style error object ``{type, code, message}``, redacted."""
        if not isinstance(err, dict):
            return f"{self.provider}: {fallback}"
        kind = err.get("type") or "error"
        code = err.get("code")
        message = err.get("message") or fallback
        label = f"{kind}/{code}" if code else str(kind)
        return self.error_text(f"{self.provider}: {label}: {message}")

    @property
    def ready(self) -> bool:
        return self._is_ready

    @property
    def queued_bytes(self) -> int:
        return self._pending_bytes

    def _spawn(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"{self._ws_kind}-{self.provider}-{self.call_id}")

    async def wait_ready(self) -> None:
        await self._ready.wait()
        err = self._ready_error
        if err is not None:
            raise ProviderError(str(err), retryable=err.retryable, status_code=err.status_code)

    async def events(self) -> AsyncIterator[E]:
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
        self._on_aclose()
        try:
            task, ws = self._task, self._ws
            if task is not None and not task.done():
                await self._before_close(task, ws)
                if not task.done() and ws is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(ws.close(), self._close_timeout)
                    await asyncio.wait({task}, timeout=self._close_timeout)
                if not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            await self._after_close()
            self._finish()
        finally:
            self._aclose_done.set()

    async def send_audio(self, mulaw: bytes) -> None:
        if not mulaw:
            return
        if self._closing or self._closed_emitted or self._ready_error is not None:
            self._drop(len(mulaw), "session closed")
            return
        if not self._live:
            self._enqueue_audio(bytes(mulaw))
        else:
            await self._send_live(mulaw)
        await self._audio_taken(mulaw)

    def _drop(self, n: int, why: str) -> None:
        self.dropped_bytes += n
        if why not in self._warned:
            self._warned.add(why)
            self._ws_log.warning(f"{self._ws_kind}.audio_dropped", extra={
                "provider": self.provider, "call_id": self.call_id, "why": why})

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
                    self._drop(len(item), self._overflow_why)
                    break
            else:  # pragma: no cover - only audio counts towards the bound
                break

    async def _run(self) -> None:
        try:
            await self._connected_session()
        except ProviderError as exc:
            self._fail(exc)
        except ConnectionClosed as exc:
            if not self._closing:
                self._fail(self._close_error(exc))
        except Exception as exc:  # a bug or a malformed message: report it, do not hang
            self._ws_log.debug(f"{self._ws_kind}.session_failed", exc_info=True)
            self._fail(ProviderError(self.error_text(
                f"{self.provider}: {type(exc).__name__}: {exc}"), retryable=True))
        finally:
            await self._teardown()
            self._finish()

    async def _read(self, ws: ClientConnection) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._ready_timeout
        while True:
            try:
                what = self._waiting_for()
                if what is None:
                    message = await ws.recv()
                else:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        raise ProviderError(f"{self.provider}: not {what} within "
                                            f"{self._ready_timeout:g} s", retryable=True)
                    message = await asyncio.wait_for(ws.recv(), remaining)
            except TimeoutError:
                continue
            except ConnectionClosed as exc:
                if self._closing:
                    return
                raise self._connection_lost(exc) from None
            if isinstance(message, bytes):
                text = await self._frame_text(message)
                if text is None:
                    continue
                message = text
            try:
                data = json.loads(message)
            except ValueError:
                self._ws_log.debug(f"{self._ws_kind}.bad_json", extra={"provider": self.provider})
                continue
            if isinstance(data, dict):
                await self._dispatch(data)

    def _fail(self, exc: ProviderError) -> None:
        if not self._is_ready and self._ready_error is None:
            self._ready_error = exc
            self._ready.set()
        self._emit_error(str(exc))
        self._ws_log.warning(f"{self._ws_kind}.failed", extra={
            "provider": self.provider, "call_id": self.call_id, "why": str(exc)})

    def _finish(self) -> None:
        if self._closed_emitted:
            return
        self._before_finish()
        if not self._is_ready and self._ready_error is None:
            self._ready_error = ProviderError(f"{self.provider}: session closed before it was "
                                              "ready")
            self._ready.set()
        if self._pending_bytes:
            self._drop(self._pending_bytes, self._closed_why)
        self._pending.clear()
        self._pending_bytes = 0
        self._emit_closed()
        self._closed_emitted = True

    def _before_finish(self) -> None:
        return None

    def _emit_closed(self) -> None:
        raise NotImplementedError
