"""Helpers for the CLI tests (imported by ``conftest.py`` and the test modules).

Nothing here touches ``~/.voicecall``: every run gets ``VOICECALL_HOME`` in a
temporary directory, and carrier/provider environment variables are cleared.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

VOICECALL = str(Path(sys.executable).with_name("voicecall"))
FAST_MOCK = {"ringDelayMs": 5, "answerDelayMs": 5, "replyDelayMs": 5}
ENV_PREFIXES = ("VOICECALL_", "TWILIO_", "TELNYX_", "PLIVO_", "OPENAI_", "ELEVENLABS_",
                "DEEPGRAM_", "NGROK_")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mock_config(**extra: Any) -> dict[str, Any]:
    """A mock-carrier config on free ports with fast timings."""
    cfg: dict[str, Any] = {
        "provider": "mock", "fromNumber": "+15550100100", "toNumber": "+15550100200",
        "serve": {"port": free_port()}, "control": {"port": free_port()},
        "mock": dict(FAST_MOCK),
    }
    cfg.update(extra)
    return cfg


def clean_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIXES)}
    env["VOICECALL_HOME"] = str(home)
    env["COLUMNS"] = "200"
    return env


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def run_proc(*args: str | Path, home: Path, timeout: float = 20.0) -> Result:
    """Run ``voicecall ARGS`` as a real process."""
    proc = subprocess.run([VOICECALL, *map(str, args)], env=clean_env(home),
                          capture_output=True, text=True, timeout=timeout)
    return Result(proc.returncode, proc.stdout, proc.stderr)


@dataclass
class RunningGateway:
    proc: subprocess.Popen[str]
    home: Path
    config: Path
    info: dict[str, Any]

    @property
    def control_url(self) -> str:
        return str(self.info["controlUrl"])

    @property
    def token(self) -> str:
        return (self.home / "control.token").read_text().strip()


def start_gateway(home: Path, config: Path, timeout: float = 15.0) -> RunningGateway:
    """``voicecall serve`` as a subprocess; returns once it has written gateway.json."""
    home.mkdir(parents=True, exist_ok=True)
    log = (home.parent / "serve.log").open("w")
    proc = subprocess.Popen([VOICECALL, "--config", str(config), "serve"], env=clean_env(home),
                            stdout=log, stderr=subprocess.STDOUT, text=True)
    log.close()
    deadline = time.monotonic() + timeout
    info_path = home / "gateway.json"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("gateway exited: " + (home.parent / "serve.log").read_text())
        try:
            info = json.loads(info_path.read_text())
        except (OSError, ValueError):
            info = None
        if info and info.get("pid") == proc.pid:
            return RunningGateway(proc, home, config, info)
        time.sleep(0.05)
    stop_gateway(proc)
    raise RuntimeError("gateway did not start: " + (home.parent / "serve.log").read_text())


def stop_gateway(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
