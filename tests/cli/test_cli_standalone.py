"""Every operational command with NO gateway running: the CLI falls back to an
in-process runtime (mock carrier) or reads the store, and never binds a listener."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cli_testkit import FAST_MOCK, Result, mock_config

import voicecall.gateway.server
from voicecall.client import GatewayClient
from voicecall.errors import RpcError

CliRunner = Callable[..., Result]
# A short scripted call: the greeting, one caller turn, the bot's goodbye, hang-up.
SHORT_CALL = {**FAST_MOCK, "calleeReplies": ["Goodbye."]}


@pytest.fixture(autouse=True)
def no_listeners(monkeypatch: pytest.MonkeyPatch) -> None:
    """Operational commands must never bind a webhook (or control) listener."""
    def refuse(host: str, port: int) -> Any:
        raise AssertionError(f"a CLI command tried to listen on {host}:{port}")
    monkeypatch.setattr(voicecall.gateway.server, "_bind", refuse)


@pytest.fixture
def config(home: Path, write_config: Callable[..., Path]) -> Path:
    return write_config(mock_config(mock=SHORT_CALL, outbound={"notifyHangupDelaySec": 0}))


@pytest.fixture
def vc(cli: CliRunner, config: Path) -> CliRunner:
    def run(*args: str | Path) -> Result:
        return cli("--config", config, *args)
    return run


def test_call_runs_to_the_end_and_prints_the_transcript(vc: CliRunner, home: Path) -> None:
    res = vc("call", "-m", "Hi, a quick test call.")
    assert res.code == 0, res.err
    assert "bot     Hi, a quick test call." in res.out
    assert "caller  Goodbye." in res.out
    assert "state  hangup-bot" in res.out
    assert "Call (standalone: no gateway running)" in res.out
    assert not (home / "gateway.json").exists()


def test_call_json_then_status_reads_the_store(vc: CliRunner) -> None:
    res = vc("call", "-m", "Hi", "--json")
    assert res.code == 0, res.err
    out = res.json()
    call_id = out["callId"]
    assert out["initiated"] is True and out["standalone"] is True
    assert out["call"]["state"] == "hangup-bot"
    assert {"speaker": "user", "text": "Goodbye."} in [
        {k: t[k] for k in ("speaker", "text")} for t in out["call"]["transcript"]]

    one = vc("status", "--call-id", call_id, "--json")
    assert one.code == 0 and one.json()["call"]["state"] == "hangup-bot"
    assert one.json()["call"]["callId"] == call_id
    provider_id = one.json()["call"]["providerCallId"]
    assert vc("status", "--call-id", provider_id, "--json").json()["call"]["callId"] == call_id

    active = vc("status", "--json")
    assert active.code == 0 and active.json() == {"found": True, "calls": []}
    everything = vc("status", "--all", "--json")
    assert call_id in [c["callId"] for c in everything.json()["calls"]]

    human = vc("status", "--call-id", call_id)
    assert human.code == 0 and call_id in human.out and "user: Goodbye." in human.out
    assert "Recent calls" in vc("status", "--all").out

    missing = vc("status", "--call-id", "no-such-call", "--json")
    assert missing.code == 1 and missing.json() == {"found": False}


def test_start_takes_to(vc: CliRunner) -> None:
    res = vc("start", "--to", "+15550100300", "-m", "Hi", "--json")
    assert res.code == 0, res.err
    assert res.json()["call"]["to"] == "+15550100300"
    assert vc("start", "-m", "Hi").code == 2


def test_operator_commands_on_an_ended_or_unknown_call(vc: CliRunner) -> None:
    call_id = vc("call", "-m", "Hi", "--json").json()["callId"]
    for args in (["continue", "-m", "More?"], ["speak", "-m", "Hello"], ["dtmf", "--digits", "1"],
                 ["end"]):
        ended = vc(*args, "--call-id", call_id)
        assert ended.code == 1, (args, ended.err)
        assert "call is not active (last state=hangup-bot" in ended.err
        unknown = vc(*args, "--call-id", "no-such-call", "--json")
        assert unknown.code == 1
        assert unknown.json() == {"ok": False, "error": "call not found: no-such-call",
                                  "type": "CallNotFoundError"}


def test_call_argument_errors_exit_2(vc: CliRunner) -> None:
    bad_to = vc("call", "-m", "Hi", "--to", "12345")
    assert bad_to.code == 2 and "E.164" in bad_to.err
    dtmf_notify = vc("call", "-m", "Hi", "--mode", "notify", "--dtmf-sequence", "1")
    assert dtmf_notify.code == 2 and 'only valid with mode: "conversation"' in dtmf_notify.err
    assert vc("call").code == 2  # -m is required
    assert vc("call", "-m", "Hi", "--mode", "shout").code == 2


def test_conversation_with_dtmf_sequence(vc: CliRunner) -> None:
    res = vc("call", "-m", "Hi", "--dtmf-sequence", "1234#", "--json")
    assert res.code == 0, res.err
    assert res.json()["call"]["state"] == "hangup-bot"


def test_smoke_dry_runs_and_yes(vc: CliRunner) -> None:
    plain = vc("smoke", "--json")
    assert plain.code == 0
    assert plain.json()["liveCall"] is False and "wouldCall" not in plain.json()
    assert plain.json()["setup"]["ok"] is True
    human = vc("smoke")
    assert human.code == 0 and "live-call: skipped" in human.out

    dry = vc("smoke", "--to", "+15550100300", "--json")
    assert dry.code == 0
    assert dry.json() == {**dry.json(), "ok": True, "liveCall": False,
                          "wouldCall": "+15550100300"}
    assert vc("status", "--all", "--json").json()["calls"] == []  # nothing was dialled
    assert "dry run (would call +15550100300" in vc("smoke", "--to", "+15550100300").out

    live = vc("smoke", "--to", "+15550100300", "--yes", "--json")
    assert live.code == 0, live.err
    out = live.json()
    assert out["ok"] is True and out["liveCall"] is True and out["standalone"] is True
    assert out["state"] == "completed"  # a notify call: say the message, then hang up
    placed = vc("status", "--call-id", out["callId"], "--json").json()["call"]
    assert placed["to"] == "+15550100300" and placed["mode"] == "notify"


def test_smoke_fails_when_setup_fails(cli: CliRunner, home: Path,
                                      write_config: Callable[..., Path]) -> None:
    config = write_config({"provider": "twilio", "fromNumber": "+15550100100"})
    res = cli("--config", config, "smoke", "--to", "+15550100300", "--yes", "--json")
    assert res.code == 1
    assert res.json()["ok"] is False and "liveCall" not in res.json()


def test_real_carrier_needs_a_gateway(cli: CliRunner, home: Path,
                                      write_config: Callable[..., Path]) -> None:
    config = write_config({
        "provider": "twilio", "fromNumber": "+15550100100",
        "publicUrl": "https://voice.example.com/voice/webhook",
        "twilio": {"accountSid": "AC0123", "authToken": "token-value"},
        "serve": {"port": 1}, "control": {"port": 1}})
    for args in (["call", "-m", "Hi"], ["smoke", "--to", "+15550100300", "--yes"]):
        res = cli("--config", config, *args)
        assert res.code == 2, res.err
        assert "no gateway is running" in res.err


def test_continue_uses_the_blocking_method_on_an_older_gateway(
        vc: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[str] = []

    async def fake_call(self: GatewayClient, method: str, params: Any = None,
                        timeout_s: float = 5.0) -> Any:
        sent.append(method)
        if method == "voicecall.continue.start":
            raise RpcError(RpcError.METHOD_NOT_FOUND, f"unknown method: {method}")
        assert timeout_s > 30  # a blocking turn needs more than the default timeout
        return {"success": True, "transcript": "Yes."}
    monkeypatch.setattr(GatewayClient, "call", fake_call)
    res = vc("continue", "--call-id", "c1", "-m", "Well?", "--json")
    assert res.code == 0, res.err
    assert res.json() == {"success": True, "transcript": "Yes."}
    assert sent == ["voicecall.continue.start", "voicecall.continue"]
