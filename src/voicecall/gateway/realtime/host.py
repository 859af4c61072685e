"""Hosting realtime calls for a carrier: stream tokens, one bridge per call, reconnects.

Every carrier does the same around its own media-stream framing:

- a single-use path token per stream (30 s) names the call the socket is for;
  it is checked before the socket is accepted (``claim_token``);
- the first stream of a call opens the provider session and starts the
  bridge's event pump; the bridge belongs to the call, not to the socket;
- when the socket drops, the bridge is detached (what the caller did not hear
  is truncated) and the provider session is kept for the disconnect grace
  (2 s): a stream that comes back in time is attached to the same bridge, so
  the model keeps the conversation; otherwise ``on_expired`` ends the call;
- the provider closing ends the call and closes the current socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from voicecall.calls import Call, CallEvent
from voicecall.errors import VoicecallError
from voicecall.gateway.media import ws_url
from voicecall.gateway.realtime.bridge import MediaPort, RealtimeBridge
from voicecall.speech.realtime.base import RealtimeProvider

if TYPE_CHECKING:
    from voicecall.carriers.base import CarrierHost
    from voicecall.config import VoiceCallConfig
    from voicecall.gateway.manager import CallManager

__all__ = ["REALTIME_TOKEN_TTL_S", "RealtimeCarrier", "RealtimeHost", "StreamPort"]

log = logging.getLogger("voicecall.realtime.host")

REALTIME_TOKEN_TTL_S = 30.0
GRACE_POLL_S = 0.05


class StreamPort(MediaPort, Protocol):
    """A carrier stream as the host uses it: the bridge's port plus closing it."""

    async def close(self, code: int = 1000, reason: str = "") -> None: ...


class _Live:
    """A call's bridge, its event pump, and the socket attached now (if any)."""

    def __init__(self, bridge: RealtimeBridge) -> None:
        self.bridge = bridge
        self.pump: asyncio.Task[None] | None = None
        self.port: StreamPort | None = None
        self.grace: asyncio.Task[None] | None = None


class RealtimeHost:
    """The realtime calls of one carrier; see the module docstring."""

    def __init__(self, provider: RealtimeProvider, *, carrier: str,
                 on_expired: Callable[[str, str], Awaitable[None]],
                 on_failed: Callable[[Call], Awaitable[None]],
                 workspace_dir: Path | None = None, grace_s: float = 2.0,
                 token_ttl_s: float = REALTIME_TOKEN_TTL_S) -> None:
        self.provider = provider
        self.carrier = carrier
        self.workspace_dir = workspace_dir
        self.grace_s = grace_s
        self.token_ttl_s = token_ttl_s
        self._on_expired = on_expired      # (carrier call id, our call id): end the call
        self._on_failed = on_failed        # the provider could not open: hang up
        self._tokens: dict[str, tuple[str, float]] = {}
        self._live: dict[str, _Live] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    # ------------------------------------------------------------------ tokens
    def issue_token(self, sid: str) -> str:
        """A single-use path token for ``sid``'s realtime stream."""
        now = time.monotonic()
        for old, (_, expires) in list(self._tokens.items()):
            if expires <= now:
                del self._tokens[old]
        token = secrets.token_urlsafe(24)
        self._tokens[token] = (sid, now + self.token_ttl_s)
        return token

    def claim_token(self, token: str, lookup: Callable[[str], Call | None]) -> str | None:
        """The carrier call id ``token`` was issued for, consuming it; None if refused."""
        entry = self._tokens.pop(token, None)
        if entry is None or entry[1] <= time.monotonic():
            return None
        call = lookup(entry[0])
        return entry[0] if call is not None and not call.terminal else None

    # ------------------------------------------------------------------ state
    def bridge(self, sid: str) -> RealtimeBridge | None:
        """The call's bridge, attached or waiting out the grace."""
        live = self._live.get(sid)
        return live.bridge if live is not None else None

    def attached(self, sid: str) -> bool:
        live = self._live.get(sid)
        return live is not None and live.port is not None

    # ------------------------------------------------------------------ streams
    async def serve(self, manager: CallManager, call: Call, sid: str, port: StreamPort,
                    read: Callable[[RealtimeBridge], Coroutine[Any, Any, None]]) -> None:
        """Run one accepted stream of ``call`` until it or the provider session ends.

        ``read`` pumps the carrier's frames into the bridge and returns when the
        socket is gone.
        """
        live = self._live.get(sid)
        if live is not None and live.port is None:
            if live.grace is not None:
                live.grace.cancel()
                live.grace = None
            live.port = port
            live.bridge.attach(port)
            log.info("realtime.stream_reattached", extra={"call_id": call.call_id})
        elif live is not None:
            await port.close(1008, "Realtime stream already attached")
            return
        else:
            live = await self._open(manager, call, sid, port)
            if live is None:
                return
        reader = asyncio.get_running_loop().create_task(read(live.bridge))
        assert live.pump is not None
        try:
            await asyncio.wait({reader, live.pump}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not reader.done():
                reader.cancel()
            failed = (await asyncio.gather(reader, return_exceptions=True))[0]
            if isinstance(failed, Exception):
                log.error("realtime.stream_reader_failed", exc_info=failed,
                          extra={"call_id": call.call_id})
        if live.port is port and not live.pump.done():
            # The socket went away under a live session: keep the model for the grace
            # (unless the call is over: then there is nothing to come back to).
            live.port = None
            await live.bridge.detach()
            live.grace = self._spawn(self._grace_expiry(sid, call.call_id, live,
                                                        manager.get))
            log.info("realtime.stream_detached", extra={"call_id": call.call_id})

    async def _open(self, manager: CallManager, call: Call, sid: str,
                    port: StreamPort) -> _Live | None:
        bridge = RealtimeBridge(manager, self.provider, call, port,
                                workspace_dir=self.workspace_dir)
        live = self._live[sid] = _Live(bridge)
        live.port = port
        log.info("realtime.stream_attached", extra={"call_id": call.call_id})
        try:
            await bridge.start()
        except VoicecallError as exc:
            del self._live[sid]
            log.warning("realtime.open_failed", extra={"call_id": call.call_id,
                                                       "why": str(exc)})
            with contextlib.suppress(VoicecallError):
                await manager.handle_event(CallEvent(
                    "call.error", call_id=call.call_id, provider_call_id=sid,
                    timestamp=time.time(), error=f"realtime: {exc}",
                    dedupe_key=f"{self.carrier}:realtime:{sid}:open"))
            with contextlib.suppress(VoicecallError):
                await self._on_failed(call)
            await bridge.aclose()
            await port.close(1011, "Realtime provider unavailable")
            return None
        live.pump = self._spawn(self._pump(sid, live))
        return live

    async def _pump(self, sid: str, live: _Live) -> None:
        """The provider's events, for the call's life; then close whatever socket is up."""
        try:
            await live.bridge.run()
        finally:
            if self._live.get(sid) is live:
                del self._live[sid]
            if live.grace is not None:
                live.grace.cancel()
            port, live.port = live.port, None
            await live.bridge.aclose()
            if port is not None:
                with contextlib.suppress(Exception):
                    await port.close(1011 if live.bridge.ended_by_provider else 1000,
                                     "Realtime session ended")

    async def _grace_expiry(self, sid: str, call_id: str, live: _Live,
                            lookup: Callable[[str], Call | None]) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.grace_s
        # A hang-up ends the grace early: the model session closes with the call.
        while loop.time() < deadline:
            call = lookup(call_id)
            if call is None or call.terminal:
                break
            await asyncio.sleep(min(GRACE_POLL_S, max(0.0, deadline - loop.time())))
        if live.port is not None or self._live.get(sid) is not live:
            return
        log.info("realtime.grace_expired", extra={"call_id": call_id})
        del self._live[sid]
        live.grace = None       # the pump's cleanup must not cancel this task
        if live.pump is not None:
            live.pump.cancel()
        await live.bridge.aclose()
        await self._on_expired(sid, call_id)

    def _spawn(self, coro: Awaitable[None]) -> asyncio.Task[None]:
        async def guarded() -> None:
            try:
                await coro
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("realtime.host_task_failed")

        task = asyncio.get_running_loop().create_task(guarded())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def aclose(self) -> None:
        for live in list(self._live.values()):
            if live.port is not None:
                with contextlib.suppress(Exception):
                    await live.port.close(1001, "gateway shutting down")
            await live.bridge.aclose()
        self._live.clear()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


class RealtimeCarrier:
    """The realtime side of a carrier that hosts its realtime calls in ``rt``."""

    config: VoiceCallConfig
    public_url: str
    realtime: RealtimeProvider | None
    rt: RealtimeHost | None
    _host: CarrierHost | None

    def uses_realtime(self, call: Call) -> bool:
        """Conversation calls go to the realtime model when a provider is configured."""
        return self.realtime is not None and not (
            call.mode == "notify" and call.direction == "outbound")

    def realtime_stream_url(self, token: str) -> str:
        path = self.config.effective_realtime_stream_path.rstrip("/") + "/" + token
        return ws_url(self.public_url, path)

    def issue_realtime_token(self, sid: str) -> str:
        """A single-use path token for ``sid``'s realtime stream, valid 30 s."""
        assert self.rt is not None
        return self.rt.issue_token(sid)

    def claim_realtime_token(self, token: str) -> str | None:
        """The carrier call id ``token`` was issued for, consuming it; None if refused."""
        if self.rt is None or self._host is None:
            return None
        return self.rt.claim_token(token, self._host.get)
