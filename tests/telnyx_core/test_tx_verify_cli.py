"""``voicecall verify-webhook`` with Telnyx captures: the gateway's own Ed25519 check."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from voicecall.carriers.telnyx.signature import SPKI_PREFIX, public_key_b64, sign
from voicecall.cli import main
from voicecall.errors import ConfigError
from voicecall.webhook_verify import verify_capture

SEED = bytes(range(40, 72))
NOW = 1_800_000_000
BODY = '{"data":{"event_type":"call.initiated","id":"e1","payload":{"call_control_id":"v3:x"}}}'


def capture(**fields: Any) -> dict[str, Any]:
    timestamp = str(fields.pop("timestamp", NOW))
    body = fields.pop("body", BODY)
    data = {"provider": "telnyx", "method": "POST",
            "url": "https://voice.example.com/voice/webhook",
            "headers": {"Content-Type": "application/json",
                        "Telnyx-Signature-Ed25519": sign(SEED, timestamp, BODY.encode()),
                        "Telnyx-Timestamp": timestamp},
            "body": body, "secret_or_public_key": public_key_b64(SEED), "now": NOW}
    data.update(fields)
    return data


def test_valid_tampered_and_stale_captures() -> None:
    assert verify_capture(capture()) == (True, "signature matches")
    ok, why = verify_capture(capture(body=BODY.replace("e1", "e2")))
    assert not ok and why == "Invalid signature"
    ok, why = verify_capture(capture(now=NOW + 301))
    assert not ok and "tolerance" in why
    assert verify_capture(capture(now=NOW - 300))[0]
    other = public_key_b64(bytes(32))
    assert verify_capture(capture(secret_or_public_key=other))[0] is False
    import base64
    der = base64.b64encode(SPKI_PREFIX + base64.b64decode(public_key_b64(SEED))).decode()
    assert verify_capture(capture(secret_or_public_key=der))[0] is True
    headers = capture()["headers"]
    del headers["Telnyx-Timestamp"]
    ok, why = verify_capture(capture(headers=headers))
    assert not ok and why == "missing telnyx-timestamp header"


@pytest.mark.parametrize(("field", "value"), [("secret_or_public_key", ""),
                                              ("secret_or_public_key", "AAAA"),
                                              ("now", "yesterday"), ("now", True)])
def test_capture_errors(field: str, value: Any) -> None:
    with pytest.raises(ConfigError):
        verify_capture(capture(**{field: value}))


def test_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOICECALL_HOME", str(tmp_path / "home"))
    logger = logging.getLogger("voicecall")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    try:
        path = tmp_path / "capture.json"
        path.write_text(json.dumps(capture()))
        assert main(["verify-webhook", str(path)]) == 0
        assert capsys.readouterr().out.strip() == "valid"
        path.write_text(json.dumps(capture(now=NOW + 3600)))
        assert main(["verify-webhook", str(path), "--json"]) == 1
        out = json.loads(capsys.readouterr().out)
        assert out["valid"] is False and "tolerance" in out["reason"]
    finally:
        logger.handlers[:], logger.level, logger.propagate = saved[0], saved[1], saved[2]
