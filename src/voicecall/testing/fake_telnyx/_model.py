"""What the fake Telnyx records and how a test scripts the far end of a call."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

from voicecall.testing.fake_carrier._model import (
    BaseCalleeScript,
    BaseStreamRecord,
)
from voicecall.testing.fake_carrier._model import (
    CalleeRun as CalleeRun,
)
from voicecall.testing.fake_carrier._model import (
    Press as Press,
)
from voicecall.testing.fake_carrier._model import (
    Reply as Reply,
)

AnswerMode = Literal["answer", "busy", "no-answer", "rejected", "failed"]
Direction = Literal["incoming", "outgoing"]
# How an unanswered outbound call ends, as Telnyx reports it in call.hangup.
ANSWER_CAUSES: dict[str, str] = {"busy": "user_busy", "no-answer": "timeout",
                                 "rejected": "call_rejected", "failed": "not_found"}


@dataclass
class Timings:
    """Every delay the fake simulates, in seconds. Defaults keep tests fast."""

    ring: float = 0.02  # call.initiated -> ringing
    answer: float = 0.02  # ringing -> answered (or busy / no-answer / ...)
    speak_per_word: float = 0.002  # how long an actions/speak "plays" per word
    time_scale: float = 0.01  # multiplies Telnyx-given durations (DTMF ms, w/W pauses)
    reply_delay: float = 0.01  # callee thinking time before a transcript arrives
    realtime: bool = True  # pace stream media in real time (False: as fast as possible)
    playback_realtime: bool | None = None  # our audio plays at real time; None = realtime
    turn_gap: float = 0.25  # quiet after our stream playback before the callee's turn
    dtmf_gap: float = 0.1  # between digits of one press
    webhook_timeout: float = 15.0
    webhook_retries: int = 2  # redeliveries of a webhook the gateway did not 2xx
    webhook_retry_delay: float = 0.05
    close_timeout: float = 2.0
    inbound_answer_timeout: float = 10.0  # a parked inbound call nobody answers: caller gives up
    dtmf_webhooks_with_stream: bool = True  # keypresses: stream frame *and* webhook
    stream_stopped_webhooks: bool = True  # streaming.stopped when a stream ends mid-call

    @property
    def playback_is_realtime(self) -> bool:
        return self.realtime if self.playback_realtime is None else self.playback_realtime


@dataclass
class CalleeScript(BaseCalleeScript):
    """The person (or machine) at the other end of a call.

    ``replies`` are used in order: one per transcription window (Telnyx
    ``transcription_start`` while nothing is being spoken), or one per turn on a media
    stream (when our playback has gone quiet for ``Timings.turn_gap``). ``audio`` turns
    a reply into mu-law for streams. ``dtmf`` is ``(seconds after answer, digits)``.
    The callee hangs up when a turn comes after ``hangup_after_turns`` replies, or when
    replies run out and ``hangup_when_done`` is set. ``interim`` sends an interim
    transcript before each final one.
    """

    answer: AnswerMode = "answer"
    interim: bool = False
    confidence: float = 0.93


@dataclass(frozen=True)
class RestRequest:
    """One request the gateway made to the fake's REST API."""

    method: str
    path: str
    action: str | None  # "dial", "answer", "speak", ... (None: status fetch / unknown)
    body: Any  # parsed JSON (None for GET or unparsable bodies)
    headers: dict[str, str]
    status: int = 0
    response: Any = None
    duplicate: bool = False  # a repeated command_id: acknowledged, not executed

    @property
    def command_id(self) -> str | None:
        if isinstance(self.body, dict) and isinstance(self.body.get("command_id"), str):
            return str(self.body["command_id"])
        return None


@dataclass
class SentWebhook:
    """One HTTP request the fake made to the gateway, and what came back."""

    kind: str  # event type (call.initiated, ...) or "raw" for send_webhook
    url: str  # the public URL
    target: str  # where it was delivered
    body: bytes
    headers: dict[str, str]
    event_id: str | None = None
    call_control_id: str | None = None
    attempt: int = 1
    status_code: int | None = None
    response_body: str = ""
    response_headers: dict[str, str] = field(default_factory=dict)
    error: str | None = None

    @property
    def signature(self) -> str | None:
        return self.headers.get("telnyx-signature-ed25519")

    @property
    def timestamp(self) -> str | None:
        return self.headers.get("telnyx-timestamp")


@dataclass(frozen=True)
class ClearRecord:
    stream_id: str
    dropped_bytes: int
    marks_flushed: tuple[str, ...]


@dataclass
class StreamRecord(BaseStreamRecord):
    """One media-stream WebSocket connection (a reconnect makes a new one)."""

    stream_id: str
    url: str  # stream_url as the gateway gave it
    target: str  # what was dialled
    auth_token: str | None


@dataclass(frozen=True)
class FakeEvent:
    at: float
    call_control_id: str | None
    kind: str
    data: dict[str, Any]


@dataclass
class FakeCall:
    """Everything the fake knows about one call leg, for assertions."""

    call_control_id: str
    call_leg_id: str
    call_session_id: str
    connection_id: str
    direction: Direction
    from_: str
    to: str
    state: str  # parked | bridging | answered | hangup
    callee: CalleeRun[CalleeScript]
    webhook_url: str | None
    client_state: str | None = None
    created: float = field(default_factory=time.time)
    answered: float | None = None
    ended: float | None = None
    hangup_cause: str | None = None
    hangup_source: str | None = None
    hung_up_by: str | None = None  # api | callee | reject | timeout | caller
    timeout_secs: int = 30
    dial_body: dict[str, Any] = field(default_factory=dict)
    stream_params: dict[str, Any] = field(default_factory=dict)
    requests: list[RestRequest] = field(default_factory=list)
    webhooks: list[SentWebhook] = field(default_factory=list)
    heard: list[str] = field(default_factory=list)  # speak payloads, as played
    voices: list[str] = field(default_factory=list)
    dtmf_received: list[str] = field(default_factory=list)  # digits the gateway sent
    timeline: list[tuple[str, str]] = field(default_factory=list)  # ("dtmf"|"speak", value)
    transcribing: bool = False
    transcription_windows: int = 0
    transcription_configs: list[dict[str, Any]] = field(default_factory=list)
    callee_said: list[str] = field(default_factory=list)
    command_ids: set[str] = field(default_factory=set)
    rejected_cause: str | None = None
    streams: list[StreamRecord] = field(default_factory=list)
    marks_echoed: list[str] = field(default_factory=list)
    clears: list[ClearRecord] = field(default_factory=list)
    outbound_audio: bytearray = field(default_factory=bytearray)
    errors: list[str] = field(default_factory=list)

    @property
    def is_alive(self) -> bool:
        return self.state != "hangup"

    @property
    def stream(self) -> StreamRecord | None:
        return self.streams[-1] if self.streams else None

    @property
    def actions(self) -> list[str]:
        """The actions the gateway sent for this call, in order (duplicates included)."""
        return [r.action for r in self.requests if r.action is not None]

    def action_bodies(self, action: str) -> list[dict[str, Any]]:
        return [r.body for r in self.requests if r.action == action and isinstance(r.body, dict)]

    def events(self, kind: str | None = None) -> list[SentWebhook]:
        return [w for w in self.webhooks if kind is None or w.kind == kind]
