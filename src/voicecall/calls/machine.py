"""The call state machine: a table of legal moves plus one pure transition function.

``transition(call, event)`` returns the next record and the side effects the
runtime must carry out; it never performs them. Illegal moves raise
``CallStateError``: the caller decides whether a late or out-of-order carrier
event is worth a warning (it usually is not: carriers reorder callbacks).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from voicecall.calls.model import TERMINAL_STATES, Call, CallEvent, CallState, TranscriptEntry
from voicecall.errors import CallStateError

S = CallState
_FORWARD = (S.INITIATED, S.RINGING, S.ANSWERED, S.ACTIVE, S.SPEAKING, S.LISTENING)


def _build_table() -> dict[CallState, frozenset[CallState]]:
    table: dict[CallState, frozenset[CallState]] = {}
    for i, state in enumerate(_FORWARD):
        nxt = set(_FORWARD[i + 1:]) | set(TERMINAL_STATES)
        if state is S.LISTENING:
            nxt.add(S.SPEAKING)  # speaking <-> listening cycle freely across turns
        table[state] = frozenset(nxt)
    for state in TERMINAL_STATES:
        table[state] = frozenset()  # terminal states absorb
    return table


#: state -> states it may move to (same-state is a no-op, not listed).
TRANSITIONS: Mapping[CallState, frozenset[CallState]] = _build_table()

EffectKind = Literal[
    "answered",            # start the max-duration timer, speak the initial message
    "transcript-final",    # resolve a waiting turn (data: transcript, turn_token)
    "dtmf",                # digits received (data: digits)
    "finalize",            # clear timers, fail waiters (data: reason)
]


@dataclass(frozen=True)
class Effect:
    kind: EffectKind
    data: Mapping[str, Any] = field(default_factory=dict)


def can_transition(src: CallState, dst: CallState) -> bool:
    return src is dst or dst in TRANSITIONS[src]


def _move(call: Call, dst: CallState) -> Call:
    if call.state is dst:
        return call
    if dst not in TRANSITIONS[call.state]:
        raise CallStateError(f"illegal transition {call.state.value} -> {dst.value}")
    return call.replace(state=dst)


_SIMPLE = {
    "call.initiated": S.INITIATED,
    "call.ringing": S.RINGING,
    "call.active": S.ACTIVE,
    "call.listening": S.LISTENING,
}


def transition(call: Call, event: CallEvent) -> tuple[Call, list[Effect]]:
    """Apply ``event`` to ``call``. Pure: same inputs, same outputs."""
    if call.terminal and event.type not in ("call.silence",):
        raise CallStateError(f"call {call.call_id} already ended ({call.state.value})")
    ts = event.timestamp
    kind = event.type
    if kind in _SIMPLE:
        return _move(call, _SIMPLE[kind]), []
    if kind == "call.answered":
        nxt = _move(call, S.ANSWERED)
        if nxt is call:
            return call, []
        return nxt.replace(answered_at=ts), [Effect("answered")]
    if kind == "call.speaking":
        nxt = _move(call, S.SPEAKING)
        if event.text:
            nxt = nxt.replace(transcript=(*nxt.transcript, TranscriptEntry(ts, "bot", event.text)))
        return nxt, []
    if kind == "call.speech":
        nxt = _move(call, S.LISTENING)
        if not event.is_final or not event.transcript:
            return nxt, []
        entry = TranscriptEntry(ts, "user", event.transcript)
        nxt = nxt.replace(transcript=(*nxt.transcript, entry))
        return nxt, [Effect("transcript-final",
                            {"transcript": event.transcript, "turn_token": event.turn_token})]
    if kind == "call.silence":
        return call, []
    if kind == "call.said":
        # What the bot said, recorded once it has been played (sentence-by-sentence
        # speech); the state is whatever the conversation has moved on to.
        if not event.text:
            return call, []
        return call.replace(transcript=(*call.transcript, TranscriptEntry(ts, "bot",
                                                                            event.text))), []
    if kind == "call.dtmf":
        digits = event.digits or ""
        if not digits:
            return call, []
        return call.replace(dtmf=(*call.dtmf, digits)), [Effect("dtmf", {"digits": digits})]
    if kind == "call.ended":
        reason = event.reason or S.COMPLETED
        if reason not in TERMINAL_STATES:
            raise CallStateError(f"end reason must be terminal, got {reason.value}")
        return _finalize(call, reason, ts)
    if kind == "call.error":
        if event.retryable:
            return call, []
        return _finalize(call, S.ERROR, ts, error=event.error)
    raise CallStateError(f"unknown event type {kind!r}")


def _finalize(call: Call, reason: CallState, ts: float,
              error: str | None = None) -> tuple[Call, list[Effect]]:
    nxt = _move(call, reason).replace(ended_at=ts, end_reason=reason)
    if error:
        nxt = nxt.with_metadata(error=error)
    return nxt, [Effect("finalize", {"reason": reason.value, "error": error})]


def state_diagram() -> str:
    """Mermaid diagram generated from the table, for the docs."""
    lines = ["stateDiagram-v2"]
    for src, dsts in TRANSITIONS.items():
        for dst in sorted(dsts, key=lambda s: s.value):
            if dst in TERMINAL_STATES and src is not S.INITIATED:
                continue  # every live state may end; draw it once to keep the chart legible
            lines.append(f"    {src.value} --> {dst.value}")
    lines.append("    note right of initiated: any live state may move to any terminal state")
    return "\n".join(lines)
