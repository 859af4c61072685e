from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from voicecall.calls.model import Call, CallState
from voicecall.store import SqliteCallStore

MakeCall = Callable[..., Call]


@pytest.fixture
def make_call() -> MakeCall:
    counter = iter(range(1, 1_000_000))

    def make(call_id: str | None = None, state: CallState = CallState.INITIATED,
             started_at: float | None = None, **changes: Any) -> Call:
        n = next(counter)
        return Call(call_id=call_id or f"call-{n}", provider="mock", direction="outbound",
                    state=state, from_number="+15550001111", to_number="+15550002222",
                    started_at=started_at if started_at is not None else 1_700_000_000.0 + n,
                    **changes)

    return make


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    return tmp_path / "state" / "store"


@pytest.fixture
def store(store_dir: Path) -> Iterator[SqliteCallStore]:
    s = SqliteCallStore(store_dir)
    yield s
    s.close()


@pytest.fixture
def jsonl_lines() -> Callable[[Path], list[dict[str, Any]]]:
    """Every line of a log parsed strictly: a torn or malformed line fails the test."""

    def read(path: Path) -> list[dict[str, Any]]:
        data = path.read_bytes()
        assert data == b"" or data.endswith(b"\n"), "log must end with a complete line"
        return [json.loads(line) for line in data.split(b"\n") if line]

    return read
