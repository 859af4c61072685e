"""Restart: non-terminal calls in the store are restored (carrier still has them) or reaped."""

from __future__ import annotations

import time
from pathlib import Path

from gw_helpers import (
    CALLEE,
    FAST,
    RecordingCarrier,
    bounded,
    events_of,
    make_config,
    running_manager,
    wait_ended,
)

from voicecall.calls import Call, CallState
from voicecall.store import SqliteCallStore


def _seed(home: Path, *, started_ago: float, answered_ago: float | None,
          state: CallState = CallState.LISTENING, pid: str | None = "CA-remote-1") -> Call:
    """A call record left behind by a previous process."""
    now = time.time()
    call = Call(call_id="11111111-2222-3333-4444-555555555555", provider="mock",
                direction="outbound", state=state, from_number="+15550100100",
                to_number=CALLEE, started_at=now - started_ago, mode="conversation",
                provider_call_id=pid,
                answered_at=None if answered_ago is None else now - answered_ago)
    with SqliteCallStore(home) as store:
        store.save(call, [{"type": "call.state", "state": state.value, "prev": None}])
    return call


@bounded()
async def test_active_call_is_restored_and_its_timer_resumes(tmp_path: Path) -> None:
    # 100 s limit, answered 99.7 s ago: 0.3 s remain.
    seeded = _seed(tmp_path, started_ago=99.8, answered_ago=99.7)
    carrier = RecordingCarrier(FAST, remote_status="active")
    async with running_manager(tmp_path, make_config(maxDurationSeconds=100), carrier) as m:
        assert carrier.status_queries == ["CA-remote-1"]
        assert [c.call_id for c in m.active_calls()] == [seeded.call_id]
        restored = m.get("CA-remote-1")  # the carrier id map is rebuilt
        assert restored is not None and restored.state is CallState.LISTENING
        t0 = time.monotonic()
        ended = await wait_ended(m, seeded.call_id, limit_s=2.0)
        waited = time.monotonic() - t0
    assert ended.end_reason is CallState.TIMEOUT
    assert 0.1 < waited < 1.5, waited  # the remaining time, not a fresh 100 s
    assert carrier.hangups == ["CA-remote-1"]
    last = events_of(tmp_path, seeded.call_id, "call.state")[-1]
    assert last["state"] == "timeout" and last["prev"] == "listening"


@bounded()
async def test_unknown_status_keeps_the_call(tmp_path: Path) -> None:
    seeded = _seed(tmp_path, started_ago=5, answered_ago=4)
    carrier = RecordingCarrier(FAST, remote_status="unknown")
    async with running_manager(tmp_path, make_config(), carrier) as m:
        assert [c.call_id for c in m.active_calls()] == [seeded.call_id]
        ended = await m.end(seeded.call_id)
        assert ended.end_reason is CallState.HANGUP_BOT


@bounded()
async def test_call_the_carrier_no_longer_has_is_reaped_completed(tmp_path: Path) -> None:
    seeded = _seed(tmp_path, started_ago=5, answered_ago=4)
    carrier = RecordingCarrier(FAST)  # a fresh mock has never heard of the call
    async with running_manager(tmp_path, make_config(), carrier) as m:
        assert m.active_calls() == []
        call = m.get(seeded.call_id)
        assert call is not None
    assert carrier.status_queries == ["CA-remote-1"]
    assert call.state is CallState.COMPLETED and call.end_reason is CallState.COMPLETED
    assert call.metadata["endNote"] == "restart: carrier status not-found"
    assert call.ended_at is not None
    assert carrier.hangups == []
    with SqliteCallStore(tmp_path) as store:
        assert store.load_active() == []
    last = events_of(tmp_path, seeded.call_id, "call.state")[-1]
    assert last["state"] == "completed" and last["reason"] == "completed"


@bounded()
async def test_terminal_remote_status_is_reaped_completed(tmp_path: Path) -> None:
    seeded = _seed(tmp_path, started_ago=5, answered_ago=4)
    carrier = RecordingCarrier(FAST, remote_status="terminal")
    async with running_manager(tmp_path, make_config(), carrier) as m:
        call = m.get(seeded.call_id)
    assert call is not None and call.end_reason is CallState.COMPLETED
    assert call.metadata["endNote"] == "restart: carrier status terminal"


@bounded()
async def test_call_older_than_max_duration_times_out_and_is_hung_up(tmp_path: Path) -> None:
    seeded = _seed(tmp_path, started_ago=400, answered_ago=390)
    carrier = RecordingCarrier(FAST, remote_status="active")
    async with running_manager(tmp_path, make_config(maxDurationSeconds=300), carrier) as m:
        assert m.active_calls() == []
        call = m.get(seeded.call_id)
    assert call is not None and call.end_reason is CallState.TIMEOUT
    assert carrier.status_queries == []  # no need to ask
    assert carrier.hangups == ["CA-remote-1"]  # best effort
    assert call.metadata["endNote"] == "restart: carrier status expired"


@bounded()
async def test_call_that_never_reached_the_carrier_is_reaped(tmp_path: Path) -> None:
    seeded = _seed(tmp_path, started_ago=1, answered_ago=None, state=CallState.INITIATED,
                   pid=None)
    carrier = RecordingCarrier(FAST, remote_status="active")
    async with running_manager(tmp_path, make_config(), carrier) as m:
        assert m.active_calls() == []
        call = m.get(seeded.call_id)
    assert call is not None and call.terminal
    assert carrier.status_queries == []


@bounded()
async def test_restored_unanswered_call_is_left_to_the_stale_reaper(tmp_path: Path) -> None:
    seeded = _seed(tmp_path, started_ago=10, answered_ago=None, state=CallState.RINGING)
    carrier = RecordingCarrier(FAST, remote_status="active")
    async with running_manager(tmp_path, make_config(staleCallReaperSeconds=1), carrier) as m:
        ended = await wait_ended(m, seeded.call_id, limit_s=3.0)
    assert ended.end_reason is CallState.TIMEOUT
    assert ended.metadata["endNote"] == "stale-call-reaper"
