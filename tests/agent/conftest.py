from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest

from voicecall.agent import ResponseRequest, Turn


def _make_request(user_text: str = "hello there", *, history: Sequence[Turn] = (),
                  system_prompt: str | None = None, model: str | None = None,
                  timeout_ms: int = 5000, caller_number: str | None = "+15550001111",
                  session_key: str = "agent:main:voice:15550001111") -> ResponseRequest:
    return ResponseRequest(call_id="call-123", session_key=session_key, user_text=user_text,
                           history=tuple(history), system_prompt=system_prompt, model=model,
                           timeout_ms=timeout_ms, caller_number=caller_number)


@pytest.fixture
def make_request() -> Callable[..., ResponseRequest]:
    """A ResponseRequest factory with the reference tests' defaults."""
    return _make_request
