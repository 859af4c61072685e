"""The call record and the normalised events carriers feed into the state machine.

Pure data: no I/O. Records are frozen; every change makes a new record, so a
store snapshot is always a consistent value.
"""

from __future__ import annotations

import dataclasses
import enum
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Direction = Literal["outbound", "inbound"]
Mode = Literal["notify", "conversation"]
Speaker = Literal["bot", "user"]


class CallState(enum.StrEnum):
    INITIATED = "initiated"
    RINGING = "ringing"
    ANSWERED = "answered"
    ACTIVE = "active"
    SPEAKING = "speaking"
    LISTENING = "listening"
    # Terminal states double as end reasons.
    COMPLETED = "completed"
    HANGUP_USER = "hangup-user"
    HANGUP_BOT = "hangup-bot"
    TIMEOUT = "timeout"
    ERROR = "error"
    FAILED = "failed"
    NO_ANSWER = "no-answer"
    BUSY = "busy"
    VOICEMAIL = "voicemail"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset({
    CallState.COMPLETED, CallState.HANGUP_USER, CallState.HANGUP_BOT, CallState.TIMEOUT,
    CallState.ERROR, CallState.FAILED, CallState.NO_ANSWER, CallState.BUSY,
    CallState.VOICEMAIL,
})
EndReason = CallState  # a terminal CallState


@dataclass(frozen=True)
class TranscriptEntry:
    timestamp: float
    speaker: Speaker
    text: str
    is_final: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"timestamp": self.timestamp, "speaker": self.speaker, "text": self.text,
                "isFinal": self.is_final}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TranscriptEntry:
        return cls(float(d["timestamp"]), d["speaker"], str(d["text"]),
                   bool(d.get("isFinal", True)))


def new_call_id() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True)
class Call:
    call_id: str
    provider: str
    direction: Direction
    state: CallState
    from_number: str
    to_number: str
    started_at: float
    mode: Mode = "conversation"
    provider_call_id: str | None = None
    session_key: str | None = None
    answered_at: float | None = None
    ended_at: float | None = None
    end_reason: CallState | None = None
    number_route_key: str | None = None
    transcript: tuple[TranscriptEntry, ...] = ()
    dtmf: tuple[str, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def terminal(self) -> bool:
        return self.state.terminal

    def replace(self, **changes: Any) -> Call:
        return dataclasses.replace(self, **changes)

    def with_metadata(self, **items: Any) -> Call:
        meta = dict(self.metadata)
        for key, value in items.items():
            if value is None:
                meta.pop(key, None)
            else:
                meta[key] = value
        return self.replace(metadata=meta)

    def to_dict(self) -> dict[str, Any]:
        return {
            "callId": self.call_id,
            "provider": self.provider,
            "direction": self.direction,
            "state": self.state.value,
            "from": self.from_number,
            "to": self.to_number,
            "startedAt": self.started_at,
            "mode": self.mode,
            "providerCallId": self.provider_call_id,
            "sessionKey": self.session_key,
            "answeredAt": self.answered_at,
            "endedAt": self.ended_at,
            "endReason": self.end_reason.value if self.end_reason else None,
            "numberRouteKey": self.number_route_key,
            "transcript": [t.to_dict() for t in self.transcript],
            "dtmf": list(self.dtmf),
            "metadata": dict(self.metadata),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Call:
        end = d.get("endReason")
        return cls(
            call_id=str(d["callId"]),
            provider=str(d["provider"]),
            direction=d["direction"],
            state=CallState(d["state"]),
            from_number=str(d.get("from", "")),
            to_number=str(d.get("to", "")),
            started_at=float(d["startedAt"]),
            mode=d.get("mode", "conversation"),
            provider_call_id=d.get("providerCallId"),
            session_key=d.get("sessionKey"),
            answered_at=d.get("answeredAt"),
            ended_at=d.get("endedAt"),
            end_reason=CallState(end) if end else None,
            number_route_key=d.get("numberRouteKey"),
            transcript=tuple(TranscriptEntry.from_dict(t) for t in d.get("transcript", ())),
            dtmf=tuple(d.get("dtmf", ())),
            metadata=dict(d.get("metadata") or {}),
        )


EventType = Literal[
    "call.initiated", "call.ringing", "call.answered", "call.active", "call.speaking",
    "call.listening", "call.speech", "call.silence", "call.dtmf", "call.ended", "call.error",
    "call.said",
]


@dataclass(frozen=True)
class CallEvent:
    """A carrier-neutral event. ``dedupe_key`` makes replays harmless."""

    type: EventType
    call_id: str | None = None
    provider_call_id: str | None = None
    timestamp: float = 0.0
    dedupe_key: str | None = None
    turn_token: str | None = None
    direction: Direction | None = None
    from_number: str | None = None
    to_number: str | None = None
    text: str | None = None          # call.speaking
    transcript: str | None = None    # call.speech
    is_final: bool = True
    confidence: float | None = None
    endpoint_ms: float | None = None  # call.speech: caller stopped talking -> final transcript
    digits: str | None = None        # call.dtmf
    reason: CallState | None = None  # call.ended
    error: str | None = None         # call.error
    retryable: bool = False
