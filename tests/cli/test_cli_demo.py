"""``voicecall demo`` end to end, once, as a real process (it takes a few seconds)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from cli_testkit import VOICECALL, clean_env


def test_demo_runs_offline_and_cleans_up(tmp_path: Path) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {**clean_env(tmp_path / "home"), "TMPDIR": str(scratch), "HOME": str(tmp_path)}
    proc = subprocess.run([VOICECALL, "demo"], env=env, capture_output=True, text=True,
                          timeout=90)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "demo OK" in out
    assert "caller  " in out and "bot     " in out  # the transcript, turn by turn
    assert "latency over" in out and "p50" in out
    assert list(scratch.iterdir()) == []  # its state dir is removed
    assert not (tmp_path / ".voicecall").exists()  # never the user's state dir
