"""The loopback HTTP server under every carrier fake, and the fake's lifecycle.

Everything runs as tasks in the test's event loop (uvicorn included, no threads);
``aclose`` cancels them all. Task failures that are bugs in the fake (not gateway
misbehaviour, which becomes a recorded carrier error) are collected in
``task_errors`` and re-raised when the ``async with`` block exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable, Coroutine, Iterator
from types import TracebackType
from typing import Any, ClassVar, Generic, Protocol, Self, TypeVar

import uvicorn

from voicecall.testing.fake_carrier._audio import tone_burst
from voicecall.testing.fake_carrier._model import CalleeRun
from voicecall.testing.fake_carrier._stream import MediaStreamSession


class LoopbackServer(uvicorn.Server):
    """uvicorn without signal capture and without its 100 ms polling on shutdown.

    Tests start and stop many fakes; the stock main loop and shutdown each sleep in
    0.1 s steps, which would add ~0.2 s to every test.
    """

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._stop = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the test runner owns SIGINT

    def stop(self) -> None:
        self.should_exit = True
        self._stop.set()

    async def main_loop(self) -> None:
        await self._stop.wait()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        for connection in list(self.server_state.connections):
            connection.shutdown()  # idle keep-alive connections close now
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.config.timeout_graceful_shutdown or 1)
        # uvicorn offers the connection set but no event for "all closed": poll briefly.
        while self.server_state.connections and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
        for task in list(self.server_state.tasks):
            task.cancel()
        for server in self.servers:
            await server.wait_closed()


class _RestApi(Protocol):
    @property
    def app(self) -> Any: ...


class _Sender(Protocol):
    async def start(self) -> None: ...

    async def aclose(self) -> None: ...


class _Event(Protocol):
    @property
    def at(self) -> float: ...
    @property
    def kind(self) -> str: ...
    @property
    def data(self) -> dict[str, Any]: ...


class _Call(Protocol):
    @property
    def callee(self) -> CalleeRun[Any]: ...
    @property
    def callee_said(self) -> list[str]: ...


class _Timings(Protocol):
    @property
    def webhook_timeout(self) -> float: ...


CallT = TypeVar("CallT", bound=_Call)
EventT = TypeVar("EventT", bound=_Event)
SessionT = TypeVar("SessionT", bound=MediaStreamSession)


class LoopbackFake(Generic[CallT, EventT, SessionT]):
    """A carrier fake's server, task bookkeeping, stream controls and waiting helpers.

    The carrier's fake supplies ``timings``, ``_rest`` (whose ``app`` is served),
    ``_webhooks`` (started and closed with the server), ``_log`` and ``_live_session``.
    """

    fake_name: ClassVar[str]  # "FakeTwilio"
    task_prefix: ClassVar[str]  # "fake-twilio"
    event_call_key: ClassVar[str]  # the FakeEvent field naming the call
    stream_noun: ClassVar[str] = "media stream"

    timings: _Timings
    _rest: _RestApi
    _webhooks: _Sender

    def __init__(self, *, raise_task_errors: bool) -> None:
        self.raise_task_errors = raise_task_errors
        self.calls: dict[str, CallT] = {}
        self.events: list[EventT] = []
        self.task_errors: list[BaseException] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: LoopbackServer | None = None
        self._serve_task: asyncio.Task[None] | None = None
        self._port: int | None = None
        self._t0 = time.monotonic()
        self._closing = False

    # -- what the carrier supplies ---------------------------------------------------

    def _log(self, call_id: str | None, kind: str, **data: Any) -> None:
        raise NotImplementedError

    def _live_session(self, call_id: str) -> SessionT | None:
        """The call's current media-stream session, if it has had one."""
        raise NotImplementedError

    def _stream_sessions(self) -> list[SessionT]:
        return [s for call_id in list(self.calls)
                if (s := self._live_session(call_id)) is not None]

    # -- bookkeeping -----------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self.task_errors.append(exc)
            self._log(None, "fake.task_error", task=task.get_name(), error=repr(exc))

    # -- lifecycle -------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()
        # Surface bugs in the fake itself, unless the test is already failing anyway.
        errors = [e for e in self.task_errors if isinstance(e, Exception)]
        if exc_type is None and errors and self.raise_task_errors:
            raise ExceptionGroup(f"{self.fake_name} background tasks failed", errors)

    async def start(self) -> None:
        if self._serve_task is not None:
            return
        # IPPROTO_TCP (as in gateway.server._bind) makes asyncio set TCP_NODELAY on
        # accepted sockets; without it every kept-alive response waits ~40 ms for an ACK.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self._port = sock.getsockname()[1]
        config = uvicorn.Config(self._rest.app, log_level="warning", access_log=False,
                                lifespan="off", ws="none", timeout_graceful_shutdown=1)
        self._server = LoopbackServer(config)
        await self._webhooks.start()
        self._serve_task = asyncio.get_running_loop().create_task(
            self._server.serve(sockets=[sock]), name=f"{self.task_prefix}:serve")
        while not self._server.started:
            if self._serve_task.done():
                await self._webhooks.aclose()
                raise RuntimeError(f"{self.fake_name} failed to start")
            await asyncio.sleep(0.005)
        self._log(None, "fake.started", api_base=self.api_base)

    async def aclose(self) -> None:
        if self._serve_task is None or self._closing:
            return
        # Be polite to the gateway (stop + close) but never wait long for it.
        for session in list(self._stream_sessions()):
            if session.is_open:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(session.stop(), 1.0)
        self._closing = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for session in self._stream_sessions():
            if session.ws is not None:
                session.ws.transport.abort()
        assert self._server is not None
        self._server.stop()
        await asyncio.gather(self._serve_task, return_exceptions=True)
        await self._webhooks.aclose()

    @property
    def base_url(self) -> str:
        if self._port is None:
            raise RuntimeError(f"{self.fake_name} is not running")
        return f"http://127.0.0.1:{self._port}"

    @property
    def api_base(self) -> str:
        """What the gateway's REST client uses instead of the carrier's API base URL."""
        raise NotImplementedError

    # -- the callee on the media stream ----------------------------------------------

    def _audio_for(self, call: CallT, text: str) -> bytes:
        return (call.callee.script.audio or tone_burst)(text)

    async def _session(self, call_id: str) -> tuple[CallT, SessionT]:
        """The call's open stream; a dial still in flight is waited for, not an error."""
        call = self.calls[call_id]
        session = self._live_session(call_id)
        if session is not None:
            await asyncio.wait_for(session.dialled.wait(), self.timings.webhook_timeout)
        if session is None or not session.is_open:
            raise RuntimeError(f"{call_id} has no open {self.stream_noun}")
        return call, session

    async def speak(self, call_id: str, speech: str | bytes) -> None:
        """The callee says something now on the stream (text -> script audio)."""
        call, session = await self._session(call_id)
        if isinstance(speech, str):
            call.callee_said.append(speech)
            speech = self._audio_for(call, speech)
        session.speak(speech)

    async def press(self, call_id: str, digits: str) -> None:
        """The callee presses keys now; sent as ``dtmf`` frames on the stream."""
        call, session = await self._session(call_id)
        call.callee_said.append(f"dtmf:{digits}")
        await session.press(digits)

    async def drop_stream(self, call_id: str) -> None:
        """Kill the stream's TCP connection (no ``stop``); the call stays up."""
        _, session = await self._session(call_id)
        session.drop()
        await session.closed.wait()

    async def _wait_stream_up(self, call_id: str, timeout: float) -> None:  # noqa: ASYNC109
        """Wait until the call's stream is up (its opening frames sent)."""

        def up() -> bool:
            session = self._live_session(call_id)
            return session is not None and session.is_open and session.started

        await self.wait_for(up, timeout, what=f"{call_id} {self.stream_noun} up")

    # -- waiting ---------------------------------------------------------------------

    # The timeout parameter is part of the documented test API (mirrors asyncio.wait_for).
    async def wait_for(self, predicate: Callable[[], object], timeout: float = 5.0, *,  # noqa: ASYNC109
                       interval: float = 0.005, what: str | None = None) -> None:
        """Poll ``predicate`` until it is truthy; TimeoutError names the last events."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not predicate():
            if asyncio.get_running_loop().time() > deadline:
                tail = "\n".join(
                    f"  {e.at:7.3f} {getattr(e, self.event_call_key) or '-'} {e.kind} {e.data}"
                    for e in self.events[-15:])
                raise TimeoutError(f"condition {what or predicate!r} not met within "
                                   f"{timeout}s; last fake events:\n{tail}")
            await asyncio.sleep(interval)

    @property
    def latest_call(self) -> CallT:
        if not self.calls:
            raise LookupError("no calls yet")
        return next(reversed(self.calls.values()))
