"""Fixtures for the CLI tests: an isolated state dir, config files and an in-process
CLI runner. Plain helpers (configs on free ports, a real ``voicecall serve``) live in
``cli_testkit``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_testkit import ENV_PREFIXES, Result

from voicecall.cli import main

CliRunner = Callable[..., Result]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty state dir as ``$VOICECALL_HOME``, with no provider env leaking in."""
    for key in list(os.environ):
        if key.startswith(ENV_PREFIXES):
            monkeypatch.delenv(key)
    path = tmp_path / "home"
    path.mkdir()
    monkeypatch.setenv("VOICECALL_HOME", str(path))
    monkeypatch.setenv("COLUMNS", "200")
    return path


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[..., Path]:
    def write(data: dict[str, Any], name: str = "config.json5") -> Path:
        path = tmp_path / name
        path.write_text(json.dumps(data, indent=2))
        return path
    return write


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Iterator[CliRunner]:
    """Run ``voicecall ARGS`` in this process; argparse exits become exit codes.

    ``main`` configures the ``voicecall`` logger (a handler on the captured stderr);
    it is put back afterwards so later tests do not log into a closed capture.
    """
    logger = logging.getLogger("voicecall")
    saved = (list(logger.handlers), logger.level, logger.propagate)

    def run(*args: str | Path) -> Result:
        capsys.readouterr()
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        out, err = capsys.readouterr()
        return Result(code, out, err)
    try:
        yield run
    finally:
        logger.handlers[:] = saved[0]
        logger.setLevel(saved[1])
        logger.propagate = saved[2]
