"""Small pure(ish) parts of the gateway: token file, body limits, mock webhook parsing, RPC dispatch."""

from __future__ import annotations

import asyncio
import json
import os
import re
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from gw_helpers import CALLEE, FAST, RecordingCarrier, bounded, make_config, running_manager

from voicecall.calls import CallState
from voicecall.carriers import mock
from voicecall.errors import CarrierError, ProtocolError
from voicecall.gateway import rpc
from voicecall.gateway.limits import BodyTimeout, BodyTooLarge, InFlight, read_capped
from voicecall.gateway.token import ensure_token, read_token, token_path

# ---------------------------------------------------------------------------- token


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_token_created_private_and_reused(tmp_path: Path) -> None:
    home = tmp_path / "new" / "home"
    token = ensure_token(home)
    assert _mode(token_path(home)) == 0o600
    assert _mode(home) == 0o700
    assert token_path(home).read_text() == token + "\n"
    assert ensure_token(home) == token == read_token(home)


def test_empty_token_file_gets_a_fresh_token(tmp_path: Path) -> None:
    token_path(tmp_path).write_text("")
    os.chmod(token_path(tmp_path), 0o600)
    token = ensure_token(tmp_path)
    assert token and read_token(tmp_path) == token
    assert _mode(token_path(tmp_path)) == 0o600


def test_a_world_readable_token_file_is_closed_again(tmp_path: Path) -> None:
    token_path(tmp_path).write_text("kept-token\n")
    os.chmod(token_path(tmp_path), 0o644)
    assert ensure_token(tmp_path) == "kept-token"
    assert _mode(token_path(tmp_path)) == 0o600


def test_read_token_missing(tmp_path: Path) -> None:
    assert read_token(tmp_path) is None


# ---------------------------------------------------------------------------- limits

async def _chunks(*parts: bytes, pause: float = 0.0) -> AsyncIterator[bytes]:
    for part in parts:
        if pause:
            await asyncio.sleep(pause)
        yield part


async def test_read_capped_limits() -> None:
    assert await read_capped(_chunks(b"ab", b"cd"), declared_length="4") == b"abcd"
    assert await read_capped(_chunks(), declared_length=None) == b""
    with pytest.raises(BodyTooLarge):  # refused on the header alone
        await read_capped(_chunks(b"x"), declared_length=str(64 * 1024 + 1))
    with pytest.raises(BodyTooLarge):
        await read_capped(_chunks(b"x"), declared_length="lots")
    with pytest.raises(BodyTooLarge):  # a lying or missing length is caught while reading
        await read_capped(_chunks(b"x" * 40_000, b"y" * 40_000), declared_length="10")
    assert len(await read_capped(_chunks(b"x" * 65_536), declared_length=None)) == 65_536
    with pytest.raises(BodyTimeout):
        await read_capped(_chunks(b"a", b"b", pause=0.2), declared_length=None, timeout_s=0.1)


def test_in_flight_per_ip() -> None:
    guard = InFlight(per_ip=2)
    assert guard.try_acquire("1.2.3.4") and guard.try_acquire("1.2.3.4")
    assert not guard.try_acquire("1.2.3.4")
    assert guard.try_acquire("5.6.7.8")
    guard.release("1.2.3.4")
    assert guard.try_acquire("1.2.3.4")
    for _ in range(2):
        guard.release("1.2.3.4")
    guard.release("5.6.7.8")
    assert guard._counts == {}  # no entry left behind per address


# ---------------------------------------------------------------------------- mock webhook

def test_parse_webhook_single_and_batch() -> None:
    [ev] = mock.parse_webhook(json.dumps({"event": {
        "type": "call.speech", "callId": "c1", "providerCallId": "p1", "id": "k1",
        "timestamp": 1700000000.5, "transcript": "hello", "isFinal": False,
        "confidence": 0.5, "turnToken": "t1"}}).encode())
    assert (ev.type, ev.call_id, ev.provider_call_id, ev.dedupe_key) == (
        "call.speech", "c1", "p1", "k1")
    assert ev.timestamp == 1700000000.5 and ev.transcript == "hello" and not ev.is_final
    assert ev.confidence == 0.5 and ev.turn_token == "t1"
    events = mock.parse_webhook(json.dumps({"events": [
        {"type": "call.initiated", "providerCallId": "p2", "direction": "inbound",
         "from": "+15550001111", "to": "+15550009999", "dedupeKey": "k2"},
        {"type": "call.ended", "providerCallId": "p2", "reason": "busy"},
    ]}).encode())
    assert events[0].direction == "inbound" and events[0].from_number == "+15550001111"
    assert events[0].dedupe_key == "k2" and events[0].timestamp > 0
    assert events[1].reason is CallState.BUSY


@pytest.mark.parametrize(("body", "why"), [
    (b"not json", "not JSON"),
    (b"[]", "must be an object"),
    (b'{"events": []}', "non-empty"),
    (b'{"events": [1]}', "events[0] must be an object"),
    (b'{"event": {"type": "call.bogus", "callId": "c"}}', "type must be one of"),
    (b'{"event": {"type": "call.ringing"}}', "needs callId or providerCallId"),
    (b'{"event": {"type": "call.ringing", "callId": "c", "direction": "sideways"}}',
     "direction"),
    (b'{"event": {"type": "call.ended", "callId": "c", "reason": "nope"}}', "end reason"),
    (b'{"event": {"type": "call.ended", "callId": "c", "reason": "listening"}}',
     "end reason"),
    (b'{"event": {"type": "call.ringing", "callId": "c", "timestamp": "noon"}}',
     "timestamp must be a number"),
    (b'{"event": {"type": "call.ringing", "callId": "c", "timestamp": true}}',
     "timestamp must be a number"),
    (b'{"event": {"type": "call.speech", "callId": "c", "transcript": 5}}',
     "transcript must be a string"),
    (b'{"event": {"type": "call.speech", "callId": "c", "isFinal": "yes"}}',
     "isFinal must be true or false"),
    (b'{"event": {"type": "call.dtmf", "callId": ["c"]}}', "callId must be a string"),
])
def test_parse_webhook_rejects(body: bytes, why: str) -> None:
    with pytest.raises(ProtocolError, match=re.escape(why)):
        mock.parse_webhook(body)


# ---------------------------------------------------------------------------- mock carrier

@bounded()
async def test_mock_carrier_status_and_control(tmp_path: Path) -> None:
    carrier = RecordingCarrier(FAST, hangup_after_replies=False)
    async with running_manager(tmp_path, make_config(), carrier) as m:
        assert await carrier.get_status("mock-unknown") == "not-found"
        call = await m.initiate(CALLEE, "hi", "conversation")
        pid = f"mock-{call.call_id}"
        assert await carrier.get_status(pid) == "active"
        with pytest.raises(CarrierError, match="digits may only contain"):
            await carrier.send_dtmf(call, "12x")
        await m.end(call.call_id)
        assert await carrier.get_status(pid) == "terminal"
        ended = m.get(call.call_id)
        assert ended is not None
        with pytest.raises(CarrierError, match="is not active"):
            await carrier.speak(ended, "too late")


async def test_mock_carrier_needs_start() -> None:
    carrier = mock.Carrier(FAST)
    with pytest.raises(CarrierError, match="not started"):
        await carrier.simulate_inbound("+15550001111", "+15550009999")


# ---------------------------------------------------------------------------- rpc dispatch

async def test_dispatch_turns_unexpected_errors_into_internal_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(ctx: rpc.RpcContext, params: Any) -> Any:
        raise RuntimeError("bug")

    monkeypatch.setitem(rpc.METHODS, "test.broken", broken)
    ctx = rpc.RpcContext(None)
    reply = await rpc.dispatch(ctx, b'{"jsonrpc": "2.0", "id": 9, "method": "test.broken"}')
    assert reply == {"jsonrpc": "2.0", "id": 9,
                     "error": {"code": -32603, "message": "Internal error"}}
    assert await rpc.dispatch(ctx, b'{"jsonrpc": "2.0", "method": "test.broken"}') is None


async def test_dispatch_without_runtime() -> None:
    ctx = rpc.RpcContext(None)
    reply = await rpc.dispatch(ctx, b'{"jsonrpc": "2.0", "id": 1, "method": "voicecall.list"}')
    assert isinstance(reply, dict)
    assert reply["error"] == {"code": -32003, "message": "voice-call runtime is not running"}
    reply = await rpc.dispatch(ctx, b'{"jsonrpc": "2.0", "id": 2, "method": "voicecall.ping"}')
    assert isinstance(reply, dict)
    assert reply["result"] == {"ok": True, "runtime": False, "setupError": None}
