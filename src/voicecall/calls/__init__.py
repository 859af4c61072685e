"""Calls: the record, the state machine and session keys. Pure; no I/O."""

from voicecall.calls.machine import (
    TRANSITIONS,
    Effect,
    can_transition,
    transition,
)
from voicecall.calls.model import (
    TERMINAL_STATES,
    Call,
    CallEvent,
    CallState,
    Direction,
    Mode,
    TranscriptEntry,
    new_call_id,
)
from voicecall.calls.session import session_key_for

__all__ = [
    "TERMINAL_STATES",
    "TRANSITIONS",
    "Call",
    "CallEvent",
    "CallState",
    "Direction",
    "Effect",
    "Mode",
    "TranscriptEntry",
    "can_transition",
    "new_call_id",
    "session_key_for",
    "transition",
]
