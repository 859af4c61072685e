"""Fakes and helpers shared by the gateway tests (imported as ``gw_helpers``).

Fakes, not mocks: the carrier is the real mock carrier with a few recording
hooks, the responder wraps the real scripted responder, the store is SQLite.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from voicecall.agent import ResponseRequest, ResponseResult, ScriptedResponder
from voicecall.calls import Call, CallEvent, CallState
from voicecall.carriers import mock
from voicecall.carriers.base import DialRequest, RemoteStatus
from voicecall.config import VoiceCallConfig
from voicecall.errors import CarrierError
from voicecall.gateway.manager import CallManager
from voicecall.store import SqliteCallStore, read_events

P = ParamSpec("P")
T = TypeVar("T")

FAST = mock.MockTimings(ring_delay_ms=5, answer_delay_ms=5, reply_delay_ms=5,
                        speak_ms_per_char=0)
CALLEE = "+15550002222"
CALLER = "+15550001111"
OUR_NUMBER = "+15550009999"


def bounded(seconds: float = 5.0) -> Callable[[Callable[P, Awaitable[T]]],
                                              Callable[P, Awaitable[T]]]:
    """Fail an async test that runs longer than ``seconds`` instead of hanging the suite."""

    def deco(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        @functools.wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            return await asyncio.wait_for(fn(*args, **kwargs), seconds)

        return wrapper

    return deco


async def wait_until(pred: Callable[[], object], limit_s: float = 3.0,
                     what: str = "condition") -> None:
    deadline = time.monotonic() + limit_s
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_config(**fields: Any) -> VoiceCallConfig:
    """A validated config (camelCase keys, as in the file) on the mock carrier."""
    data: dict[str, Any] = {"provider": "mock", "fromNumber": "+15550100100"}
    data.update(fields)
    return VoiceCallConfig.model_validate(data)


class FakeClock:
    def __init__(self, start: float | None = None) -> None:
        self.now = time.time() if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class RecordingCarrier(mock.Carrier):
    """The mock carrier plus a record of what the manager asked of it.

    ``never_answer``: numbers that ring forever. ``remote_status``: what
    ``get_status`` reports (None: the mock's own answer).
    """

    def __init__(self, timings: mock.MockTimings = FAST, callee_replies: Sequence[str] = (),
                 *, never_answer: Sequence[str] = (), remote_status: RemoteStatus | None = None,
                 **kwargs: Any) -> None:
        super().__init__(timings, callee_replies, **kwargs)
        self.never_answer = set(never_answer)
        self.remote_status = remote_status
        self.hangups: list[str | None] = []
        self.status_queries: list[str] = []
        self.listen_tokens: list[str] = []
        self.emitted: list[CallEvent] = []
        self.dials: list[DialRequest] = []
        self.fail_hangups = 0  # the next N hangups fail like a carrier outage

    async def _emit(self, event: CallEvent) -> None:
        self.emitted.append(event)
        await super()._emit(event)

    async def dial(self, req: DialRequest) -> str:
        self.dials.append(req)
        return await super().dial(req)

    async def _progress(self, callee: mock.SimulatedCallee, req: DialRequest) -> None:
        if req.to_number in self.never_answer:
            await asyncio.sleep(self.timings.ring_delay_ms / 1000)
            await self._emit(self._event("call.ringing", callee.provider_call_id))
            return  # rings forever
        await super()._progress(callee, req)

    async def start_listening(self, call: Call, turn_token: str) -> None:
        self.listen_tokens.append(turn_token)
        await super().start_listening(call, turn_token)

    async def hangup(self, call: Call) -> None:
        self.hangups.append(call.provider_call_id)
        if self.fail_hangups:
            self.fail_hangups -= 1
            raise CarrierError("carrier unavailable")
        await super().hangup(call)

    async def get_status(self, provider_call_id: str) -> RemoteStatus:
        self.status_queries.append(provider_call_id)
        if self.remote_status is not None:
            return self.remote_status
        return await super().get_status(provider_call_id)


class RecordingResponder:
    """The scripted responder, keeping every request it was given."""

    name = "recording"

    def __init__(self, inner: ScriptedResponder | None = None, delay_s: float = 0.0) -> None:
        self.inner = inner or ScriptedResponder()
        self.delay_s = delay_s
        self.requests: list[ResponseRequest] = []

    async def respond(self, req: ResponseRequest,
                      on_text: Callable[[str], Awaitable[None]] | None = None
                      ) -> ResponseResult:
        self.requests.append(req)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return await self.inner.respond(req, on_text)

    async def aclose(self) -> None:
        return None


@contextlib.asynccontextmanager
async def running_manager(home: Path, config: VoiceCallConfig,
                          carrier: mock.Carrier | None = None,
                          responder: RecordingResponder | None = None,
                          clock: Callable[[], float] = time.time,
                          store: SqliteCallStore | None = None,
                          ) -> AsyncIterator[CallManager]:
    """A started manager over a real SQLite store in ``home``; closed on exit."""
    own_store = store is None
    st = store or SqliteCallStore(home)
    manager = CallManager(config, carrier or RecordingCarrier(), st,
                          responder or RecordingResponder(), clock=clock)
    await manager.start()
    try:
        yield manager
    finally:
        await manager.aclose()
        if own_store:
            st.close()


async def wait_state(manager: CallManager, call_id: str, *states: CallState,
                     limit_s: float = 3.0) -> Call:
    def current() -> Call | None:
        return manager.get(call_id)

    await wait_until(lambda: (c := current()) is not None and c.state in states, limit_s,
                     f"call {call_id} to reach {[s.value for s in states]}"
                     f" (now {getattr(current(), 'state', None)})")
    call = current()
    assert call is not None
    return call


async def wait_ended(manager: CallManager, call_id: str, limit_s: float = 3.0) -> Call:
    await wait_until(lambda: (c := manager.get(call_id)) is not None and c.terminal, limit_s,
                     f"call {call_id} to end")
    call = manager.get(call_id)
    assert call is not None
    return call


def events_of(home: Path, call_id: str | None = None,
              type_: str | None = None) -> list[dict[str, Any]]:
    """Records of ``calls.jsonl`` in ``home``, optionally one call's / one type's."""
    path = home / "calls.jsonl"
    if not path.exists():
        return []
    return [r for r in read_events(path)
            if (call_id is None or r.get("callId") == call_id)
            and (type_ is None or r.get("type") == type_)]


def states_of(home: Path, call_id: str) -> list[str]:
    return [r["state"] for r in events_of(home, call_id, "call.state")]
