"""The media-stream WebSocket endpoint: connection caps, then the carrier's stream handler.

Caps (from ``streaming.*``): ``maxConnections`` counts every open socket plus
upgrades in flight and is refused with HTTP 503 before the upgrade;
``maxPendingConnections`` / ``maxPendingConnectionsPerIp`` bound sockets that
have not yet sent an accepted ``start`` (closed with 1013), and the carrier
closes a socket that stays silent past ``preStartTimeoutMs`` (1008). A
malformed frame closes that one stream; it never reaches the process.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol, TypeVar
from urllib.parse import urlsplit, urlunsplit

from starlette.routing import WebSocketRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from voicecall.errors import VoicecallError
from voicecall.gateway.security import RequestView, client_ip

if TYPE_CHECKING:
    from voicecall.gateway.runtime import Runtime

log = logging.getLogger("voicecall.media")
MAX_FRAME_CHARS = 64 * 1024  # one 20 ms frame is ~300 chars; anything near this is abuse
CLOSE_POLICY = 1008
CLOSE_TRY_AGAIN = 1013
CLOSE_TOO_BIG = 1009


def ws_url(public_url: str, path: str, query: str = "") -> str:
    """The WebSocket URL of ``path`` on our public host (``ws`` only for plain ``http``)."""
    parts = urlsplit(public_url)
    scheme = "ws" if parts.scheme == "http" else "wss"
    return urlunsplit((scheme, parts.netloc, path, query, ""))


class MediaSocket(Protocol):
    """What a carrier's stream handler gets: text frames in and out, and close."""

    client: str

    async def receive_text(self) -> str:
        """Next text frame; raises ``StreamClosed`` when the peer is gone."""

    async def send_text(self, text: str) -> None: ...

    async def close(self, code: int = 1000, reason: str = "") -> None: ...

    def started(self) -> None:
        """The stream sent an accepted ``start``: it no longer counts as pending."""


class StreamClosed(Exception):
    pass


class ConnectionLimiter:
    def __init__(self, max_connections: int, max_pending: int, max_pending_per_ip: int) -> None:
        self.max_connections = max_connections
        self.max_pending = max_pending
        self.max_pending_per_ip = max_pending_per_ip
        self.open = 0
        self.pending = 0
        self.pending_by_ip: defaultdict[str, int] = defaultdict(int)

    def try_open(self) -> bool:
        if self.open >= self.max_connections:
            return False
        self.open += 1
        return True

    def close(self) -> None:
        self.open -= 1

    def try_pending(self, ip: str) -> bool:
        if self.pending >= self.max_pending or \
                self.pending_by_ip[ip] >= self.max_pending_per_ip:
            return False
        self.pending += 1
        self.pending_by_ip[ip] += 1
        return True

    def release_pending(self, ip: str) -> None:
        self.pending -= 1
        self.pending_by_ip[ip] -= 1
        if self.pending_by_ip[ip] <= 0:
            del self.pending_by_ip[ip]


class _Socket:
    def __init__(self, ws: WebSocket, ip: str, limiter: ConnectionLimiter) -> None:
        self._ws = ws
        self.client = ip
        self._limiter = limiter
        self.is_pending = True

    async def receive_text(self) -> str:
        while True:
            try:
                message = await self._ws.receive()
            except (WebSocketDisconnect, RuntimeError):
                raise StreamClosed from None
            if message["type"] == "websocket.disconnect":
                raise StreamClosed
            text = message.get("text")
            if text is None:
                # Twilio never sends binary; treat one as a protocol error upstream.
                return "\x00binary"
            if len(text) > MAX_FRAME_CHARS:
                await self.close(CLOSE_TOO_BIG, "frame too large")
                raise StreamClosed
            return str(text)

    async def send_text(self, text: str) -> None:
        try:
            await self._ws.send_text(text)
        except (WebSocketDisconnect, RuntimeError):
            raise StreamClosed from None

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self._ws.application_state != WebSocketState.DISCONNECTED:
            try:
                await self._ws.close(code, reason[:120])
            except (RuntimeError, WebSocketDisconnect):
                pass

    def started(self) -> None:
        if self.is_pending:
            self.is_pending = False
            self._limiter.release_pending(self.client)


F = TypeVar("F")


async def await_start(ws: MediaSocket, timeout_s: float, parse: Callable[[str], F], *,
                      is_start: Callable[[F], bool],
                      is_preamble: Callable[[F], bool]) -> tuple[list[F], F] | None:
    """Read a new stream's frames up to its ``start``, within ``timeout_s``.

    Frames allowed before it (``connected`` and the like) are returned with it. On
    silence the socket is closed 1008 "Start timeout", on a malformed frame 1007,
    on anything else first 1008; then None. Shared by every carrier's stream
    handler so the pre-start rules are the same everywhere.
    """
    deadline = time.monotonic() + timeout_s
    preamble: list[F] = []
    while True:
        remaining = deadline - time.monotonic()
        try:
            text = await asyncio.wait_for(ws.receive_text(), max(0.0, remaining))
        except TimeoutError:
            await ws.close(CLOSE_POLICY, "Start timeout")
            return None
        except StreamClosed:
            return None
        try:
            frame = parse(text)
        except VoicecallError:
            await ws.close(1007, "malformed frame")
            return None
        if is_start(frame):
            return preamble, frame
        if not is_preamble(frame):
            await ws.close(CLOSE_POLICY, "expected start")
            return None
        preamble.append(frame)


class StreamHandler(Protocol):
    async def handle_stream(self, ws: MediaSocket, query_string: str) -> None: ...


async def _deny(send: Send, status: int) -> None:
    """HTTP status on the upgrade itself (ASGI websocket denial response)."""
    await send({"type": "websocket.http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "websocket.http.response.body", "body": b"Service unavailable"})


def media_route(runtime: Runtime) -> WebSocketRoute | None:
    cfg = runtime.config
    if not cfg.streaming.enabled:
        return None
    s = cfg.streaming
    limiter = ConnectionLimiter(s.max_connections, s.max_pending_connections,
                                s.max_pending_connections_per_ip)

    async def endpoint(scope: Scope, receive: Receive, send: Send) -> None:
        if not limiter.try_open():
            if "websocket.http.response" in scope.get("extensions", {}):
                await _deny(send, 503)
            else:
                await send({"type": "websocket.close", "code": CLOSE_TRY_AGAIN})
            return
        try:
            ws = WebSocket(scope, receive, send)
            headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                       for k, v in scope.get("headers", [])}
            view = RequestView("GET", scope["path"], scope.get("query_string", b"").decode(),
                               headers, scope["client"][0] if scope.get("client") else None)
            ip = client_ip(view, cfg.webhook_security)
            await ws.accept()
            sock = _Socket(ws, ip, limiter)
            if not limiter.try_pending(ip):
                await sock.close(CLOSE_TRY_AGAIN, "Too many pending connections")
                return
            try:
                manager = runtime.manager
                handler = getattr(manager.carrier, "handle_stream", None) if manager else None
                if handler is None:
                    await sock.close(CLOSE_POLICY, "Media streams unavailable")
                    return
                await handler(sock, view.query_string)
            except StreamClosed:
                pass
            except Exception:
                log.exception("media.stream_failed")
                await sock.close(1011, "Internal error")
            finally:
                if sock.is_pending:
                    sock.started()  # release the pending slot either way
                await sock.close()
        finally:
            limiter.close()

    return WebSocketRoute(cfg.streaming.stream_path, _RawAsgi(endpoint))


def realtime_route(runtime: Runtime) -> WebSocketRoute | None:
    """``<realtime stream path>/<token>``: realtime voice streams (``realtime.enabled``).

    The single-use path token is claimed *before* the upgrade is accepted; an
    unknown, expired or reused token is refused (HTTP 403, or close 1008 where
    the server cannot send a denial response). Caps as for ``media_route``.
    """
    cfg = runtime.config
    if not cfg.realtime.enabled:
        return None
    s = cfg.streaming
    limiter = ConnectionLimiter(s.max_connections, s.max_pending_connections,
                                s.max_pending_connections_per_ip)

    async def refuse(scope: Scope, send: Send, status: int, code: int) -> None:
        if "websocket.http.response" in scope.get("extensions", {}):
            await _deny(send, status)
        else:
            await send({"type": "websocket.close", "code": code})

    async def endpoint(scope: Scope, receive: Receive, send: Send) -> None:
        manager = runtime.manager
        carrier = manager.carrier if manager is not None else None
        claim = getattr(carrier, "claim_realtime_token", None)
        handler = getattr(carrier, "handle_realtime_stream", None)
        token = str(scope.get("path_params", {}).get("token", ""))
        sid = claim(token) if claim is not None and handler is not None and token else None
        if sid is None:
            log.warning("media.realtime_token_refused")
            await refuse(scope, send, 403, CLOSE_POLICY)
            return
        if not limiter.try_open():
            await refuse(scope, send, 503, CLOSE_TRY_AGAIN)
            return
        try:
            ws = WebSocket(scope, receive, send)
            headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                       for k, v in scope.get("headers", [])}
            view = RequestView("GET", scope["path"], "", headers,
                               scope["client"][0] if scope.get("client") else None)
            ip = client_ip(view, cfg.webhook_security)
            await ws.accept()
            sock = _Socket(ws, ip, limiter)
            if not limiter.try_pending(ip):
                await sock.close(CLOSE_TRY_AGAIN, "Too many pending connections")
                return
            try:
                assert handler is not None
                await handler(sock, sid)
            except StreamClosed:
                pass
            except Exception:
                log.exception("media.realtime_stream_failed")
                await sock.close(1011, "Internal error")
            finally:
                if sock.is_pending:
                    sock.started()
                await sock.close()
        finally:
            limiter.close()

    path = cfg.effective_realtime_stream_path.rstrip("/") + "/{token}"
    return WebSocketRoute(path, _RawAsgi(endpoint))


class _RawAsgi:
    # Starlette wraps plain functions in a WebSocket session; an object with
    # __call__ is used as a raw ASGI app, which the denial response needs.
    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app(scope, receive, send)
