"""The gateway over real sockets: control JSON-RPC, bearer auth, mock webhook, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from gw_helpers import CALLEE, CALLER, OUR_NUMBER, bounded, free_port, wait_until

from voicecall.calls import CallState
from voicecall.carriers import mock
from voicecall.config import load_config
from voicecall.errors import ConfigError
from voicecall.gateway.server import Gateway, _bind, gateway_file, run_gateway
from voicecall.gateway.token import read_token, token_path
from voicecall.store import SqliteCallStore, read_events

FAST_MOCK = {"ringDelayMs": 5, "answerDelayMs": 5, "replyDelayMs": 5,
             "calleeReplies": ["Yes, one question.", "Second answer.", "Third answer."],
             "hangupAfterReplies": False}


def _write_config(home: Path, **fields: Any) -> Path:
    cfg: dict[str, Any] = {"provider": "mock", "fromNumber": "+15550100100",
                           "serve": {"port": free_port()}, "control": {"port": free_port()},
                           "mock": FAST_MOCK}
    cfg.update(fields)
    home.mkdir(parents=True, exist_ok=True)
    path = home / "config.json5"
    path.write_text("// written by the test\n" + json.dumps(cfg, indent=2))
    return path


@contextlib.asynccontextmanager
async def serving(home: Path, **fields: Any) -> AsyncIterator[Gateway]:
    """``run_gateway`` in-process, as ``voicecall serve`` runs it; stopped on exit."""
    loaded = load_config(_write_config(home, **fields), env={})
    stop = asyncio.Event()
    ready: asyncio.Future[Gateway] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(run_gateway(loaded, home, stop=stop, ready=ready,
                                           install_signals=False))
    try:
        yield await asyncio.wait_for(ready, 10)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


class Rpc:
    def __init__(self, http: httpx.AsyncClient, gw: Gateway, home: Path) -> None:
        self.http, self.url = http, gw.control_url
        self.headers = {"Authorization": f"Bearer {read_token(home)}"}
        self._id = 0

    async def raw(self, body: Any, *, content: bytes | None = None) -> httpx.Response:
        if content is None:
            content = json.dumps(body).encode()
        return await self.http.post(self.url, content=content,
                                    headers={**self.headers, "Content-Type": "application/json"})

    async def __call__(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """The reply object (with ``result`` or ``error``)."""
        self._id += 1
        resp = await self.raw({"jsonrpc": "2.0", "id": self._id, "method": method,
                               "params": params or {}})
        assert resp.status_code == 200, resp.text
        doc = resp.json()
        assert doc["jsonrpc"] == "2.0" and doc["id"] == self._id
        return doc

    async def ok(self, method: str, params: dict[str, Any] | None = None) -> Any:
        doc = await self(method, params)
        assert "result" in doc, doc
        return doc["result"]

    async def error(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        doc = await self(method, params)
        assert "error" in doc, doc
        return dict(doc["error"])


@contextlib.asynccontextmanager
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10, trust_env=False) as http:
        yield http


def _carrier(gw: Gateway) -> mock.Carrier:
    assert gw.runtime.manager is not None
    carrier = gw.runtime.manager.carrier
    assert isinstance(carrier, mock.Carrier)
    return carrier


# ---------------------------------------------------------------------------- auth

@bounded(10)
async def test_bearer_auth_and_token_file(tmp_path: Path) -> None:
    home = tmp_path / "home"
    async with serving(home) as gw, client() as http:
        path = token_path(home)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        token = read_token(home)
        assert token and len(token) >= 32
        body = {"jsonrpc": "2.0", "id": 1, "method": "voicecall.ping"}
        for headers in ({}, {"Authorization": "Bearer wrong"},
                        {"Authorization": f"Basic {token}"}, {"Authorization": token}):
            resp = await http.post(gw.control_url, json=body, headers=headers)
            assert resp.status_code == 401
            assert resp.headers["www-authenticate"].startswith("Bearer")
        resp = await http.post(gw.control_url, json=body,
                               headers={"Authorization": f"Bearer {token}"})
        assert resp.status_code == 200 and resp.json()["result"]["runtime"] is True
        info = json.loads(gateway_file(home).read_text())
        assert info == {"pid": os.getpid(), "webhookUrl": gw.webhook_url,
                        "controlUrl": gw.control_url}
    assert not gateway_file(home).exists()
    # The token survives a restart.
    async with serving(home) as gw2, client() as http:
        assert read_token(home) == token
        resp = await http.post(gw2.control_url, json=body,
                               headers={"Authorization": f"Bearer {token}"})
        assert resp.status_code == 200


# ---------------------------------------------------------------------------- methods

@bounded(15)
async def test_every_method_over_rpc(tmp_path: Path) -> None:
    home = tmp_path / "home"
    async with serving(home, outbound={"notifyHangupDelaySec": 60}) as gw, client() as http:
        rpc = Rpc(http, gw, home)
        carrier = _carrier(gw)
        # Argument checks come back as invalid params.
        err = await rpc.error("voicecall.initiate", {"to": CALLEE})
        assert err["code"] == -32602 and err["message"] == "message is required"
        err = await rpc.error("voicecall.initiate", {"to": CALLEE, "message": "x",
                                                     "mode": "shout"})
        assert err["code"] == -32602
        err = await rpc.error("voicecall.initiate", {"to": CALLEE, "message": "x",
                                                     "dtmfSequence": "1#"})
        assert err == {"code": -32602,
                       "message": 'dtmfSequence is only valid with mode: "conversation"'}
        err = await rpc.error("voicecall.start", {"message": "x"})
        assert err["code"] == -32602 and err["message"] == "to is required"
        err = await rpc.error("voicecall.initiate", {"to": 15550002222, "message": "x"})
        assert err == {"code": -32602, "message": "to must be a string"}

        placed = await rpc.ok("voicecall.initiate", {"to": CALLEE, "message": "Hello there."})
        assert placed["initiated"] is True
        call_id = placed["callId"]
        pid = f"mock-{call_id}"
        # One call at a time (maxConcurrentCalls defaults to 1).
        err = await rpc.error("voicecall.start", {"to": "+15550003333", "message": "x"})
        assert err == {"code": -32002, "message": "Maximum concurrent calls (1) reached"}
        await wait_until(lambda: pid in carrier.callees and carrier.callees[pid].heard,
                         what="the notify message")

        status = await rpc.ok("voicecall.status", {"callId": call_id})
        assert status["found"] is True and status["call"]["callId"] == call_id
        assert status["call"]["mode"] == "notify" and status["call"]["to"] == CALLEE
        assert status["call"]["state"] == "speaking"
        by_pid = await rpc.ok("voicecall.status", {"callId": pid})
        assert by_pid["call"]["callId"] == call_id
        assert (await rpc.ok("voicecall.status", {"sid": pid}))["call"]["callId"] == call_id
        everything = await rpc.ok("voicecall.status")
        assert [c["callId"] for c in everything["calls"]] == [call_id]
        assert await rpc.ok("voicecall.status", {"callId": "nope"}) == {"found": False}

        result = await rpc.ok("voicecall.continue", {"callId": call_id,
                                                     "message": "Any questions?"})
        assert result == {"success": True, "transcript": "Yes, one question."}

        op = await rpc.ok("voicecall.continue.start", {"callId": call_id,
                                                       "message": "Go on?"})
        assert op["status"] == "pending" and op["pollTimeoutMs"] > 0
        for _ in range(200):
            polled = await rpc.ok("voicecall.continue.result",
                                  {"operationId": op["operationId"]})
            if polled["status"] != "pending":
                break
            await asyncio.sleep(0.01)
        assert polled["status"] == "completed"
        assert polled["result"] == {"success": True, "transcript": "Second answer."}
        err = await rpc.error("voicecall.continue.result", {"operationId": "nope"})
        assert err["code"] == -32001

        assert await rpc.ok("voicecall.speak", {"callId": call_id,
                                                "message": "Goodbye soon."}) == {
            "success": True}
        assert await rpc.ok("voicecall.dtmf", {"callId": call_id, "digits": "ww12#"}) == {
            "success": True}
        err = await rpc.error("voicecall.dtmf", {"callId": call_id, "digits": "12x"})
        assert err["code"] == -32602
        err = await rpc.error("voicecall.dtmf", {"digits": "1"})
        assert err == {"code": -32602, "message": "callId is required"}
        callee = carrier.callees[pid]
        assert callee.heard == ["Hello there.", "Any questions?", "Go on?", "Goodbye soon."]
        assert callee.dtmf_received == ["ww12#"]

        active = await rpc.ok("voicecall.list")
        assert [c["callId"] for c in active["calls"]] == [call_id]
        assert await rpc.ok("voicecall.end", {"callId": call_id}) == {"success": True}
        err = await rpc.error("voicecall.end", {"callId": call_id})
        assert err["code"] == -32002
        assert err["message"].startswith("call is not active (last state=hangup-bot")
        err = await rpc.error("voicecall.end", {"callId": "nope"})
        assert err == {"code": -32001, "message": "call not found: nope"}
        err = await rpc.error("voicecall.speak", {"callId": call_id, "message": "hello?"})
        assert err["code"] == -32002
        assert (await rpc.ok("voicecall.list"))["calls"] == []
        history = await rpc.ok("voicecall.list", {"all": True})
        assert [c["callId"] for c in history["calls"]] == [call_id]
        ended = history["calls"][0]
        assert ended["state"] == "hangup-bot" and ended["endReason"] == "hangup-bot"
        assert [t["text"] for t in ended["transcript"]] == [
            "Hello there.", "Any questions?", "Yes, one question.", "Go on?",
            "Second answer.", "Goodbye soon."]
        for bad in (0, 1001, "5", True):
            err = await rpc.error("voicecall.list", {"all": True, "limit": bad})
            assert err["code"] == -32602

        # voicecall.start: `to` required, message optional for a conversation call.
        started = await rpc.ok("voicecall.start", {"to": "+15550003333",
                                                   "mode": "conversation"})
        second = started["callId"]
        await wait_until(lambda: f"mock-{second}" in carrier.callees
                         and carrier.callees[f"mock-{second}"].turns_answered >= 1,
                         what="the conversation to start")
        assert await rpc.ok("voicecall.end", {"callId": second}) == {"success": True}

    records = list(read_events(home / "calls.jsonl"))
    kinds = [r["kind"] for r in records if r["type"] == "turn" and r["callId"] == call_id]
    assert kinds == ["continue", "continue"]
    assert [r["digits"] for r in records if r["type"] == "dtmf"] == ["ww12#"]


@bounded(10)
async def test_continue_result_reports_failures(tmp_path: Path) -> None:
    home = tmp_path / "home"
    async with serving(home, outbound={"notifyHangupDelaySec": 60},
                       transcriptTimeoutMs=50,
                       mock={**FAST_MOCK, "calleeReplies": []}) as gw, client() as http:
        rpc = Rpc(http, gw, home)
        call_id = (await rpc.ok("voicecall.initiate", {"to": CALLEE, "message": "Hi."}))[
            "callId"]
        await wait_until(lambda: _carrier(gw).callees.get(f"mock-{call_id}") is not None
                         and _carrier(gw).callees[f"mock-{call_id}"].heard)
        err = await rpc.error("voicecall.continue", {"callId": call_id, "message": "Hm?"})
        assert err == {"code": -32002,
                       "message": "Timed out waiting for transcript after 50ms"}
        op = await rpc.ok("voicecall.continue.start", {"callId": call_id, "message": "?"})
        await asyncio.sleep(0.2)
        polled = await rpc.ok("voicecall.continue.result", {"operationId": op["operationId"]})
        assert polled["status"] == "failed"
        assert polled["error"] == "Timed out waiting for transcript after 50ms"
        err = await rpc.error("voicecall.continue.start", {"callId": "nope", "message": "?"})
        assert err["code"] == -32001


# ---------------------------------------------------------------------------- protocol

@bounded(10)
async def test_json_rpc_protocol_errors(tmp_path: Path) -> None:
    home = tmp_path / "home"
    async with serving(home) as gw, client() as http:
        rpc = Rpc(http, gw, home)
        resp = await rpc.raw(None, content=b'{"jsonrpc": "2.0", "method": ')
        assert resp.status_code == 200
        assert resp.json() == {"jsonrpc": "2.0", "id": None,
                               "error": {"code": -32700, "message": "Parse error"}}
        for bad in ({"method": "voicecall.list", "id": 3},
                    {"jsonrpc": "1.0", "method": "voicecall.list", "id": 3},
                    {"jsonrpc": "2.0", "method": 7, "id": 3}):
            doc = (await rpc.raw(bad)).json()
            assert doc["error"]["code"] == -32600 and doc["id"] == 3
        doc = (await rpc.raw("just a string")).json()
        assert doc["error"]["code"] == -32600 and doc["id"] is None
        doc = (await rpc.raw([])).json()
        assert doc["error"]["code"] == -32600

        doc = await rpc("voicecall.nope")
        assert doc["error"] == {"code": -32601, "message": "unknown method: voicecall.nope"}
        doc = (await rpc.raw({"jsonrpc": "2.0", "id": "a", "method": "voicecall.status",
                              "params": ["x"]})).json()
        assert doc == {"jsonrpc": "2.0", "id": "a",
                       "error": {"code": -32602, "message": "params must be an object"}}

        # Notifications (no id) get no reply at all, whatever happens to them.
        for note in ({"jsonrpc": "2.0", "method": "voicecall.list"},
                     {"jsonrpc": "2.0", "method": "voicecall.nope"},
                     {"jsonrpc": "2.0", "method": "voicecall.end", "params": {}},
                     {"jsonrpc": "2.0", "method": "voicecall.list", "params": [1]}):
            resp = await rpc.raw(note)
            assert resp.status_code == 204 and resp.content == b""

        batch = [{"jsonrpc": "2.0", "id": 1, "method": "voicecall.ping"},
                 {"jsonrpc": "2.0", "method": "voicecall.ping"},
                 {"jsonrpc": "2.0", "id": 2, "method": "voicecall.nope"},
                 42,
                 {"jsonrpc": "2.0", "id": 3, "method": "voicecall.list"}]
        replies = (await rpc.raw(batch)).json()
        assert [r["id"] for r in replies] == [1, 2, None, 3]
        assert replies[0]["result"]["ok"] is True
        assert replies[1]["error"]["code"] == -32601
        assert replies[2]["error"]["code"] == -32600
        assert replies[3]["result"] == {"calls": []}
        resp = await rpc.raw([{"jsonrpc": "2.0", "method": "voicecall.ping"}] * 2)
        assert resp.status_code == 204

        resp = await http.get(gw.control_url, headers=rpc.headers)
        assert resp.status_code == 405
        resp = await http.post(gw.control_url.replace("/rpc", "/rpcx"), headers=rpc.headers)
        assert resp.status_code == 404


@bounded(10)
async def test_setup_incomplete_still_serves_rpc(tmp_path: Path) -> None:
    home = tmp_path / "home"
    async with serving(home, provider="twilio", fromNumber=None) as gw, client() as http:
        assert gw.runtime.manager is None
        rpc = Rpc(http, gw, home)
        ping = await rpc.ok("voicecall.ping")
        assert ping["runtime"] is False and "setup incomplete" in ping["setupError"]
        missing = ["fromNumber is required (or set TWILIO_FROM_NUMBER env)",
                   "twilio.accountSid is required (or set TWILIO_ACCOUNT_SID env)",
                   "twilio.authToken is required (or set TWILIO_AUTH_TOKEN env)"]
        for method, params in (("voicecall.initiate", {"to": CALLEE, "message": "x"}),
                               ("voicecall.status", {}), ("voicecall.list", {}),
                               ("voicecall.end", {"callId": "x"}),
                               ("voicecall.continue.start", {"callId": "x", "message": "y"})):
            err = await rpc.error(method, params)
            assert err["code"] == -32003, (method, err)
            assert err["data"] == {"missing": missing}
            assert err["message"] == "setup incomplete: " + "; ".join(missing)
        resp = await http.post(gw.webhook_url, json={"event": {}})
        assert resp.status_code == 503
        health = await http.get(gw.webhook_url.replace("/voice/webhook", "/healthz"))
        assert health.json() == {"ok": True, "runtime": False}


@bounded(10)
async def test_disabled_plugin_answers_without_missing_keys(tmp_path: Path) -> None:
    home = tmp_path / "home"
    async with serving(home, enabled=False) as gw, client() as http:
        err = await Rpc(http, gw, home).error("voicecall.status")
        assert err["code"] == -32003 and "disabled" in err["message"]
        assert "data" not in err


# ---------------------------------------------------------------------------- webhook

@bounded(10)
async def test_mock_webhook_drives_an_inbound_call(tmp_path: Path) -> None:
    home = tmp_path / "home"
    async with serving(home, inboundPolicy="open",
                       numbers={OUR_NUMBER: {"inboundGreeting": "Thanks for calling."}}
                       ) as gw, client() as http:
        manager = gw.runtime.manager
        assert manager is not None

        async def post(*events: dict[str, Any]) -> httpx.Response:
            body = {"event": events[0]} if len(events) == 1 else {"events": list(events)}
            return await http.post(gw.webhook_url, json=body)

        resp = await post({"type": "call.initiated", "providerCallId": "ext-1",
                           "direction": "inbound", "from": CALLER, "to": OUR_NUMBER,
                           "id": "evt-1"})
        assert resp.status_code == 200 and resp.json() == {"ok": True, "events": 1}
        call = manager.get("ext-1")
        assert call is not None and call.state is CallState.RINGING
        assert call.number_route_key == OUR_NUMBER
        resp = await post({"type": "call.ringing", "providerCallId": "ext-1", "id": "evt-2"},
                          {"type": "call.answered", "providerCallId": "ext-1", "id": "evt-3"})
        assert resp.json() == {"ok": True, "events": 2}
        await wait_until(lambda: manager.get("ext-1").state  # type: ignore[union-attr]
                         is CallState.LISTENING, what="the greeting to finish")
        assert _carrier(gw).callees["ext-1"].heard == ["Thanks for calling."]

        resp = await post({"type": "call.speech", "providerCallId": "ext-1", "id": "evt-4",
                           "transcript": "What are your opening hours?", "isFinal": True})
        assert resp.status_code == 200
        await wait_until(lambda: len(_carrier(gw).callees["ext-1"].heard) == 2,
                         what="the agent's reply")
        assert "9 a.m. to 5 p.m." in _carrier(gw).callees["ext-1"].heard[1]
        # A replayed event changes nothing.
        await post({"type": "call.speech", "providerCallId": "ext-1", "id": "evt-4",
                    "transcript": "What are your opening hours?"})
        await post({"type": "call.dtmf", "providerCallId": "ext-1", "digits": "9",
                    "id": "evt-5"})
        await post({"type": "call.ended", "providerCallId": "ext-1", "reason": "hangup-user",
                    "id": "evt-6"})
        ended = manager.get("ext-1")
        assert ended is not None and ended.end_reason is CallState.HANGUP_USER
        assert [t.speaker for t in ended.transcript] == ["bot", "user", "bot"]
        assert ended.dtmf == ("9",)


@bounded(10)
async def test_webhook_guards(tmp_path: Path) -> None:
    home = tmp_path / "home"
    async with serving(home, inboundPolicy="open") as gw, client() as http:
        url = gw.webhook_url
        resp = await http.post(url, content=b"{" + b" " * (64 * 1024) + b"}",
                               headers={"Content-Type": "application/json"})
        assert resp.status_code == 413

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(20):
                yield b" " * 4096  # 80 KB in all, no Content-Length

        resp = await http.post(url, content=chunks())
        assert resp.status_code == 413
        resp = await http.post(url, content=b"{not json")
        assert resp.status_code == 400 and "not JSON" in resp.text
        bad_bodies: list[Any] = [
            {"events": []}, ["x"], {"event": {"type": "call.nope", "callId": "a"}},
            {"event": {"type": "call.ringing"}},
            {"event": {"type": "call.ringing", "callId": "a", "timestamp": "soon"}},
            {"event": {"type": "call.ringing", "callId": 5}},
            {"event": {"type": "call.ended", "callId": "a", "reason": "ringing"}},
            {"event": {"type": "call.speech", "callId": "a", "isFinal": "no"}},
        ]
        for body in bad_bodies:
            resp = await http.post(url, json=body)
            assert resp.status_code == 400, body
        ok = {"event": {"type": "call.ringing", "callId": "unknown-call"}}
        assert (await http.post(url + "/", json=ok)).status_code == 200
        for lookalike in (url + "x", url + "/extra", url.replace("/webhook", "/webhoo")):
            assert (await http.post(lookalike, json=ok)).status_code == 404, lookalike
        assert (await http.get(url)).status_code == 405


# ---------------------------------------------------------------------------- lifecycle

@bounded(10)
async def test_graceful_shutdown_ends_live_calls(tmp_path: Path) -> None:
    home = tmp_path / "home"
    slow = {**FAST_MOCK, "replyDelayMs": 5000}
    async with serving(home, mock=slow) as gw, client() as http:
        rpc = Rpc(http, gw, home)
        call_id = (await rpc.ok("voicecall.initiate", {"to": CALLEE, "message": "Hi.",
                                                       "mode": "conversation"}))["callId"]
        for _ in range(300):
            status = await rpc.ok("voicecall.status", {"callId": call_id})
            if status["call"]["state"] == "listening":
                break
            await asyncio.sleep(0.01)
        assert status["call"]["state"] == "listening"
        callee = _carrier(gw).callees[f"mock-{call_id}"]
        assert gateway_file(home).exists()
    # serving() set stop and waited for run_gateway to return.
    assert callee.ended
    assert not gateway_file(home).exists()
    with SqliteCallStore(home) as store:
        call = store.get(call_id)
        assert store.load_active() == []
    assert call is not None and call.state is CallState.HANGUP_BOT
    last = [r for r in read_events(home / "calls.jsonl") if r["type"] == "call.state"][-1]
    assert last["callId"] == call_id and last["state"] == "hangup-bot"


@bounded(10)
async def test_start_failure_is_reported_through_ready(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        loaded = load_config(_write_config(home, control={"port": port}), env={})
        ready: asyncio.Future[Gateway] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(run_gateway(loaded, home, ready=ready,
                                               install_signals=False))
        with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{port}"):
            await asyncio.wait_for(ready, 5)
        with pytest.raises(ConfigError):
            await task
    # The webhook port it had already bound is free again.
    with socket.socket() as again:
        again.bind(("127.0.0.1", loaded.config.serve.port))


@bounded()
async def test_accepted_connections_get_tcp_nodelay() -> None:
    # Responses go out as two writes (headers, body); without TCP_NODELAY every
    # request on a kept-alive connection waits for a delayed ACK (~40 ms).
    listener = _bind("127.0.0.1", 0)
    accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    class Probe(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            sock = transport.get_extra_info("socket")
            accepted.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            transport.close()

    server = await asyncio.get_running_loop().create_server(Probe, sock=listener)
    async with server:
        _, writer = await asyncio.open_connection(*listener.getsockname()[:2])
        assert await asyncio.wait_for(accepted, 2) != 0
        writer.close()


@bounded(10)
async def test_webhook_path_is_normalised(tmp_path: Path) -> None:
    home = tmp_path / "home"
    async with serving(home, serve={"port": free_port(), "path": "hooks/voice/"}) as gw, \
            client() as http:
        assert gw.webhook_url.endswith("/hooks/voice")
        ok = {"event": {"type": "call.ringing", "callId": "unknown-call"}}
        for url in (gw.webhook_url, gw.webhook_url + "/"):
            assert (await http.post(url, json=ok)).status_code == 200
        assert (await http.post(gw.webhook_url + "x", json=ok)).status_code == 404
