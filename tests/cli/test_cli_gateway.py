"""Every operational command against a RUNNING gateway (``voicecall serve`` as a
real process, one per module), the RPC-only paths (no fallback on auth errors),
and the ``voice_call`` agent tool through ``GatewayClient.call``."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_testkit import (
    ENV_PREFIXES,
    FAST_MOCK,
    Result,
    RunningGateway,
    free_port,
    mock_config,
    run_proc,
    start_gateway,
    stop_gateway,
)

from voicecall.client import GatewayClient
from voicecall.tool import voice_call

CliRunner = Callable[..., Result]
LIVE_STATES = {"answered", "active", "speaking", "listening"}
CALLEE_SAYS = "Tell me about weekends."


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    root = tmp_path_factory.mktemp("gateway")
    # A callee with plenty to say and no hang-up keeps calls live while commands act on them.
    cfg = mock_config(maxConcurrentCalls=20, maxDurationSeconds=120,
                      mock={**FAST_MOCK, "calleeReplies": [CALLEE_SAYS] * 400,
                            "hangupAfterReplies": False})
    config = root / "config.json5"
    config.write_text(json.dumps(cfg))
    gw = start_gateway(root / "home", config)
    try:
        yield gw
    finally:
        stop_gateway(gw.proc)


def rpc(gw: RunningGateway, method: str, params: dict[str, Any] | None = None) -> Any:
    return asyncio.run(GatewayClient(gw.control_url, gw.token).call(method, params))


def listed_ids(gw: RunningGateway, *, everything: bool = False) -> set[str]:
    result = rpc(gw, "voicecall.list", {"all": True} if everything else {})
    return {c["callId"] for c in result["calls"]}


@pytest.fixture
def gcli(gateway: RunningGateway, cli: CliRunner, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """The in-process CLI pointed at the running gateway's state dir and config."""
    for key in list(os.environ):
        if key.startswith(ENV_PREFIXES):
            monkeypatch.delenv(key)
    monkeypatch.setenv("VOICECALL_HOME", str(gateway.home))
    monkeypatch.setenv("COLUMNS", "200")

    def run(*args: str | Path) -> Result:
        return cli("--config", gateway.config, *args)
    return run


@pytest.fixture
def live_call(gateway: RunningGateway, gcli: CliRunner) -> Iterator[str]:
    res = gcli("call", "-m", "Hello from the test", "--json")
    assert res.code == 0, res.err
    call_id = str(res.json()["callId"])
    deadline = time.monotonic() + 5
    while rpc(gateway, "voicecall.status", {"callId": call_id})["call"]["state"] \
            not in LIVE_STATES:
        assert time.monotonic() < deadline, "call never answered"
        time.sleep(0.02)
    yield call_id
    if call_id in listed_ids(gateway):
        rpc(gateway, "voicecall.end", {"callId": call_id})


def events(gw: RunningGateway, call_id: str) -> list[dict[str, Any]]:
    lines = (gw.home / "calls.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r.get("callId") == call_id]


# -- call / start ------------------------------------------------------------------


def test_call_from_a_real_process_goes_over_rpc(gateway: RunningGateway) -> None:
    res = run_proc("--config", gateway.config, "call", "-m", "Hi there", "--json",
                   home=gateway.home)
    assert res.code == 0, res.err
    placed = res.json()
    assert placed["initiated"] is True
    assert "standalone" not in placed  # no in-process runtime in the CLI
    # The gateway owns the call: it is live there, not in a second runtime.
    assert placed["callId"] in listed_ids(gateway)
    rpc(gateway, "voicecall.end", {"callId": placed["callId"]})


def test_start_requires_to_and_places_on_the_gateway(gateway: RunningGateway,
                                                     gcli: CliRunner) -> None:
    assert gcli("start", "-m", "no number").code == 2  # argparse: --to is required
    res = gcli("start", "--to", "+15550100300", "--json")
    assert res.code == 0, res.err
    call_id = res.json()["callId"]
    status = rpc(gateway, "voicecall.status", {"callId": call_id})
    assert status["call"]["to"] == "+15550100300"
    rpc(gateway, "voicecall.end", {"callId": call_id})


def test_call_human_output_is_a_table(gateway: RunningGateway, gcli: CliRunner) -> None:
    res = gcli("call", "-m", "Hi")
    assert res.code == 0, res.err
    assert "Call placed" in res.out and "callId" in res.out and "│" in res.out
    active = listed_ids(gateway)
    placed = [cid for cid in active if cid in res.out]
    assert len(placed) == 1
    rpc(gateway, "voicecall.end", {"callId": placed[0]})


def test_gateway_side_usage_errors_exit_2(gcli: CliRunner, live_call: str) -> None:
    bad_to = gcli("call", "-m", "Hi", "--to", "12345")
    assert bad_to.code == 2 and "E.164" in bad_to.err
    bad_digits = gcli("dtmf", "--call-id", live_call, "--digits", "abc")
    assert bad_digits.code == 2 and "digits" in bad_digits.err
    notify_dtmf = gcli("call", "-m", "Hi", "--mode", "notify", "--dtmf-sequence", "1")
    assert notify_dtmf.code == 2 and "conversation" in notify_dtmf.err


# -- status ------------------------------------------------------------------------


def test_status_variants(gateway: RunningGateway, gcli: CliRunner, live_call: str) -> None:
    active = gcli("status", "--json")
    assert active.code == 0
    assert active.json()["found"] is True
    assert live_call in {c["callId"] for c in active.json()["calls"]}

    one = gcli("status", "--call-id", live_call, "--json").json()
    assert one["found"] is True and one["call"]["callId"] == live_call
    assert one["call"]["state"] in LIVE_STATES

    everything = gcli("status", "--all", "--json").json()
    assert everything["found"] is True and live_call in {c["callId"] for c in everything["calls"]}

    human = gcli("status")
    assert human.code == 0 and "Active calls" in human.out
    assert live_call in human.out

    missing = gcli("status", "--call-id", "no-such-call", "--json")
    assert missing.code == 1 and missing.json() == {"found": False}
    assert gcli("status", "--call-id", "no-such-call").out.strip() == "call not found"


# -- continue / speak / dtmf / end ------------------------------------------------


def test_continue_speak_dtmf_end(gateway: RunningGateway, gcli: CliRunner,
                                 live_call: str) -> None:
    cont = gcli("continue", "--call-id", live_call, "-m", "Anything else?", "--json")
    assert cont.code == 0, cont.err
    assert cont.json() == {"success": True, "transcript": CALLEE_SAYS}

    human = gcli("continue", "--call-id", live_call, "-m", "And then?")
    assert human.code == 0, human.err
    assert "Reply" in human.out and CALLEE_SAYS in human.out

    speak = gcli("speak", "--call-id", live_call, "-m", "Just so you know.", "--json")
    assert speak.code == 0 and speak.json() == {"success": True}

    dtmf = gcli("dtmf", "--call-id", live_call, "--digits", "12#", "--json")
    assert dtmf.code == 0 and dtmf.json() == {"success": True}
    assert any(r["type"] == "dtmf" and r["digits"] == "12#" and r["direction"] == "out"
               for r in events(gateway, live_call))
    bot_lines = [t["text"] for t in rpc(gateway, "voicecall.status", {"callId": live_call})
                 ["call"]["transcript"] if t["speaker"] == "bot"]
    assert "Anything else?" in bot_lines and "Just so you know." in bot_lines

    end = gcli("end", "--call-id", live_call)
    assert end.code == 0 and "success" in end.out
    assert live_call not in listed_ids(gateway)
    state = gcli("status", "--call-id", live_call, "--json").json()["call"]
    assert state["state"] == "hangup-bot" and state["endReason"] == "hangup-bot"

    again = gcli("end", "--call-id", live_call)
    assert again.code == 1 and "call is not active" in again.err
    again_json = gcli("end", "--call-id", live_call, "--json")
    assert again_json.code == 1 and again_json.json()["ok"] is False
    assert gcli("speak", "--call-id", "nope", "-m", "x").code == 1


# -- smoke / logs --------------------------------------------------------------------


def test_smoke_yes_places_the_call_on_the_gateway(gateway: RunningGateway,
                                                  gcli: CliRunner) -> None:
    dry = gcli("smoke", "--to", "+15550100500", "--json")
    assert dry.code == 0 and dry.json()["wouldCall"] == "+15550100500"
    assert dry.json()["liveCall"] is False
    res = gcli("smoke", "--to", "+15550100500", "--yes", "--json")
    assert res.code == 0, res.err
    out = res.json()
    assert out["ok"] is True and out["liveCall"] is True and "standalone" not in out
    assert out["callId"] in listed_ids(gateway, everything=True)


def test_tail_and_latency_read_the_gateways_log(gateway: RunningGateway, gcli: CliRunner,
                                                live_call: str) -> None:
    deadline = time.monotonic() + 5
    while not any(r["type"] == "turn" for r in events(gateway, live_call)):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    tail = gcli("tail", "--no-follow", "--since", "5", "--json")
    assert tail.code == 0
    assert len([json.loads(line) for line in tail.out.splitlines()]) == 5
    lat = gcli("latency", "--json")
    assert lat.code == 0 and lat.json()["turns"] >= 1


def test_a_second_serve_is_refused(gateway: RunningGateway) -> None:
    res = run_proc("--config", gateway.config, "serve", home=gateway.home)
    assert res.code == 2
    assert "cannot listen" in res.err and "likely a running gateway" in res.err
    info = json.loads((gateway.home / "gateway.json").read_text())
    assert info["pid"] == gateway.proc.pid  # the running gateway's record is untouched
    assert gateway.proc.poll() is None


# -- RPC auth: no fallback ------------------------------------------------------------


def test_wrong_token_is_an_error_not_a_fallback(gateway: RunningGateway, tmp_path: Path,
                                                cli: CliRunner,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    other = tmp_path / "other-home"
    other.mkdir()
    shutil.copy(gateway.home / "gateway.json", other / "gateway.json")
    (other / "control.token").write_text("not-the-token\n")
    monkeypatch.setenv("VOICECALL_HOME", str(other))
    before = listed_ids(gateway, everything=True)
    for args in (["call", "-m", "Hi", "--json"], ["status"], ["end", "--call-id", "x"],
                 ["smoke", "--to", "+15550100600", "--yes"]):
        res = cli("--config", gateway.config, *args)
        assert res.code == 1, (args, res.out, res.err)
        text = res.out + res.err
        assert "rejected the control token" in text and "401" in text
        assert gateway.token not in text
    # Nothing ran in-process: no store was opened in the other state dir, no call placed.
    assert not (other / "calls.jsonl").exists() and not (other / "calls.sqlite3").exists()
    assert listed_ids(gateway, everything=True) == before


def test_wrong_token_from_a_real_process(gateway: RunningGateway, tmp_path: Path) -> None:
    other = tmp_path / "other-home"
    other.mkdir()
    shutil.copy(gateway.home / "gateway.json", other / "gateway.json")
    (other / "control.token").write_text("wrong\n")
    res = run_proc("--config", gateway.config, "call", "-m", "Hi", home=other)
    assert res.code == 1 and "rejected the control token" in res.err
    assert not (other / "calls.sqlite3").exists()


# -- the agent tool through the real control API ---------------------------------------


async def test_voice_call_tool_against_the_gateway(gateway: RunningGateway) -> None:
    client = GatewayClient(gateway.control_url, gateway.token)
    placed = await voice_call({"action": "initiate_call", "message": "Hello from the tool",
                               "to": "+15550100700", "mode": "conversation"}, client.call)
    assert placed["initiated"] is True
    call_id = placed["callId"]

    status = await voice_call({"action": "get_status", "callId": call_id}, client.call)
    assert status["found"] is True and status["call"]["callId"] == call_id
    assert status["call"]["to"] == "+15550100700"

    ended = await voice_call({"action": "end_call", "callId": call_id}, client.call)
    assert ended == {"success": True}

    # Errors come back as {"error": ...}; nothing is raised.
    again = await voice_call({"action": "end_call", "callId": call_id}, client.call)
    assert "call is not active" in again["error"]
    cont = await voice_call({"action": "continue_call", "callId": call_id, "message": "Hi"},
                            client.call)
    assert "error" in cont
    unknown = await voice_call({"action": "get_status", "callId": "nope"}, client.call)
    assert unknown == {"found": False}
    missing_arg = await voice_call({"action": "send_dtmf", "callId": call_id}, client.call)
    assert missing_arg == {"error": "digits is required for send_dtmf"}

    bad_token = GatewayClient(gateway.control_url, "wrong")
    denied = await voice_call({"action": "get_status", "callId": call_id}, bad_token.call)
    assert "401" in denied["error"]
    nobody = GatewayClient(f"http://127.0.0.1:{free_port()}/rpc", "token")
    unreachable = await voice_call({"action": "get_status", "callId": call_id}, nobody.call)
    assert "not reachable" in unreachable["error"]
