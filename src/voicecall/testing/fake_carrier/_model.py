"""Records shared by the carrier fakes: how a test scripts the far end of a call."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar


@dataclass(frozen=True)
class Press:
    """A callee reply made on the keypad instead of by voice."""

    digits: str


Reply = str | Press


@dataclass
class BaseCalleeScript:
    """The callee fields every carrier fake understands (each documents its own)."""

    answer: str = "answer"
    replies: Sequence[Reply] = ()
    audio: Callable[[str], bytes] | None = None
    dtmf: Sequence[tuple[float, str]] = ()
    hangup_after_turns: int | None = None
    hangup_when_done: bool = False
    speak_first: bool = False  # streams: take a turn as soon as the stream starts
    answer_delay: float | None = None  # overrides Timings.answer for this callee


ScriptT = TypeVar("ScriptT", bound=BaseCalleeScript)


class CalleeRun(Generic[ScriptT]):
    """A script's progress during one call (scripts themselves stay reusable)."""

    def __init__(self, script: ScriptT) -> None:
        self.script = script
        self.pending: deque[Reply] = deque(script.replies)
        self.turns = 0

    def should_hang_up(self) -> bool:
        s = self.script
        if s.hangup_after_turns is not None and self.turns >= s.hangup_after_turns:
            return True
        return s.hangup_when_done and not self.pending

    def next_reply(self) -> Reply | None:
        if not self.pending:
            return None
        self.turns += 1
        return self.pending.popleft()


@dataclass(kw_only=True)
class BaseStreamRecord:
    """What every media-stream WebSocket connection records (a reconnect makes a new one)."""

    frames_in: list[dict[str, Any]] = field(default_factory=list)  # from the gateway
    frames_out: list[dict[str, Any]] = field(default_factory=list)  # to the gateway
    handshake_status: int | None = None  # HTTP status when the upgrade was refused
    end_reason: str | None = None  # stop | closed-by-gateway | dropped | failed
    close_code: int | None = None
    connected: bool = False
