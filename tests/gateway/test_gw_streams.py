"""The carriers' shared stream registry: attach, detach, the disconnect grace."""

from __future__ import annotations

import asyncio
import logging
import time

from voicecall.calls import Call, CallEvent, CallState
from voicecall.carriers.streams import StreamRegistry, expire_call

GRACE_S = 0.05
log = logging.getLogger("test.streams")


class _Socket:
    client = "test"

    def __init__(self) -> None:
        self.closed: tuple[int, str] | None = None

    async def receive_text(self) -> str:
        raise NotImplementedError

    async def send_text(self, text: str) -> None:
        raise NotImplementedError

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.closed = (code, reason)

    def started(self) -> None:
        pass


class _Session:
    def __init__(self, call_id: str = "c1") -> None:
        self.call_id = call_id
        self.ready = asyncio.Event()
        self.ws = _Socket()


class _Registry:
    """A registry with a short grace that records its expiries."""

    def __init__(self) -> None:
        self.expired: list[tuple[str, str]] = []
        self.streams: StreamRegistry[_Session] = StreamRegistry(
            grace_s=GRACE_S, on_expired=self._on_expired, log=log)

    async def _on_expired(self, key: str, call_id: str) -> None:
        self.expired.append((key, call_id))


async def _past_grace() -> None:
    await asyncio.sleep(GRACE_S * 4)


async def test_attach_registers_and_signals_up() -> None:
    r = _Registry()
    session = _Session()
    assert r.streams.get("CA1") is None and "CA1" not in r.streams
    r.streams.attach("CA1", session)
    assert r.streams.get("CA1") is session and "CA1" in r.streams
    session.ready.set()
    await asyncio.wait_for(r.streams.wait_up("CA1", 1.0), 1.0)


async def test_wait_up_waits_for_attach_and_session_ready() -> None:
    r = _Registry()
    session = _Session()
    waiter = asyncio.create_task(r.streams.wait_up("CA1", 1.0))
    await asyncio.sleep(0.01)
    assert not waiter.done()
    r.streams.attach("CA1", session)
    await asyncio.sleep(0.01)
    assert not waiter.done()          # up, but its STT is not ready yet
    session.ready.set()
    await asyncio.wait_for(waiter, 1.0)


async def test_wait_up_gives_up_quietly_and_settle_releases_it() -> None:
    r = _Registry()
    started = time.monotonic()
    await r.streams.wait_up("CA1", 0.05)     # nothing came: returns after the timeout
    assert time.monotonic() - started >= 0.04
    waiter = asyncio.create_task(r.streams.wait_up("CA2", 5.0))
    await asyncio.sleep(0.01)
    r.streams.settle("CA2")                  # the carrier says no stream is coming
    await asyncio.wait_for(waiter, 1.0)


async def test_detach_without_reconnect_expires_after_the_grace() -> None:
    r = _Registry()
    session = _Session("c1")
    r.streams.attach("CA1", session)
    r.streams.detach("CA1", session)
    assert "CA1" not in r.streams
    await asyncio.sleep(GRACE_S / 5)
    assert r.expired == []                   # still inside the grace
    await _past_grace()
    assert r.expired == [("CA1", "c1")]


async def test_detach_clears_the_up_signal() -> None:
    r = _Registry()
    session = _Session()
    session.ready.set()
    r.streams.attach("CA1", session)
    r.streams.detach("CA1", session)
    waiter = asyncio.create_task(r.streams.wait_up("CA1", 5.0))
    await asyncio.sleep(0.01)
    assert not waiter.done()
    again = _Session()
    again.ready.set()
    r.streams.attach("CA1", again)
    await asyncio.wait_for(waiter, 1.0)


async def test_reconnect_within_grace_keeps_the_call() -> None:
    r = _Registry()
    first, second = _Session(), _Session()
    r.streams.attach("CA1", first)
    r.streams.detach("CA1", first)
    r.streams.attach("CA1", second)
    await _past_grace()
    assert r.expired == []
    assert r.streams.get("CA1") is second


async def test_stale_detach_is_ignored() -> None:
    r = _Registry()
    old, new = _Session(), _Session()
    r.streams.attach("CA1", old)
    r.streams.attach("CA1", new)             # a newer stream replaced the old one
    r.streams.detach("CA1", old)             # ...and then the old socket finished
    assert r.streams.get("CA1") is new
    await _past_grace()
    assert r.expired == []


async def test_forget_cancels_the_grace() -> None:
    r = _Registry()
    session = _Session()
    r.streams.attach("CA1", session)
    r.streams.detach("CA1", session)
    r.streams.forget("CA1")
    await _past_grace()
    assert r.expired == []


async def test_aclose_cancels_graces_and_closes_sockets() -> None:
    r = _Registry()
    live, gone = _Session("c1"), _Session("c2")
    r.streams.attach("CA1", live)
    r.streams.attach("CA2", gone)
    r.streams.detach("CA2", gone)
    await r.streams.aclose()
    assert live.ws.closed == (1001, "gateway shutting down")
    assert gone.ws.closed is None
    await _past_grace()
    assert r.expired == []


class _Host:
    def __init__(self, call: Call) -> None:
        self.call = call
        self.events: list[CallEvent] = []

    async def handle_event(self, event: CallEvent, *, ack: bool = True) -> None:
        self.events.append(event)

    def get(self, call_id: str) -> Call | None:
        return self.call if call_id == self.call.call_id else None

    def barge_in_allowed(self, call_id: str) -> bool:
        return True


def _call(state: CallState = CallState.ACTIVE) -> Call:
    return Call(call_id="c1", provider="twilio", direction="outbound", state=state,
                from_number="+15550000001", to_number="+15550000002", mode="conversation",
                started_at=time.time(), provider_call_id="CA1")


async def test_expire_call_hangs_up_and_reports_the_end() -> None:
    host = _Host(_call())
    hung_up: list[str] = []

    async def hangup(call: Call) -> None:
        hung_up.append(call.call_id)

    await expire_call(host, "CA1", "c1", carrier="twilio", hangup=hangup, log=log)
    assert hung_up == ["c1"]
    (ended,) = host.events
    assert ended.type == "call.ended" and ended.reason == CallState.COMPLETED
    assert ended.call_id == "c1" and ended.provider_call_id == "CA1"
    assert (ended.dedupe_key or "").startswith("twilio:grace:CA1:")


async def test_expire_call_leaves_an_ended_call_alone() -> None:
    host = _Host(_call(CallState.COMPLETED))
    hung_up: list[str] = []

    async def hangup(call: Call) -> None:
        hung_up.append(call.call_id)

    await expire_call(host, "CA1", "c1", carrier="twilio", hangup=hangup, log=log)
    await expire_call(None, "CA1", "c1", carrier="twilio", hangup=hangup, log=log)
    assert hung_up == [] and host.events == []
