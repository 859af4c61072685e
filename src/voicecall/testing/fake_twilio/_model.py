"""What the fake records and how a test scripts the far end of a call."""

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

AnswerMode = Literal["answer", "busy", "no-answer", "failed"]
Direction = Literal["inbound", "outbound-api"]
TERMINAL = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})


@dataclass
class Timings:
    """Every delay the fake simulates, in seconds. Defaults keep tests fast."""

    ring: float = 0.02  # initiated -> ringing
    answer: float = 0.02  # ringing -> answered (or busy / no-answer / failed)
    time_scale: float = 0.01  # multiplies TwiML-given seconds: Pause, Gather timeout, w/W
    say_per_word: float = 0.002  # how long a <Say> "plays" per word
    reply_delay: float = 0.01  # callee thinking time before answering a <Gather>
    realtime: bool = True  # pace stream media in real time (False: as fast as possible)
    playback_realtime: bool | None = None  # our audio plays at real time; None = realtime
    turn_gap: float = 0.25  # quiet after our playback before the callee takes its turn
    dtmf_gap: float = 0.1  # between digits of one scripted press on a stream
    webhook_timeout: float = 15.0  # Twilio's read timeout for webhooks
    close_timeout: float = 2.0  # WebSocket closing handshake

    @property
    def playback_is_realtime(self) -> bool:
        return self.realtime if self.playback_realtime is None else self.playback_realtime


@dataclass
class CalleeScript(BaseCalleeScript):
    """The person (or machine) at the other end of a call.

    ``replies`` are used in order: one per ``<Gather>``, or one per turn on a
    media stream (a turn comes when our playback has gone quiet for
    ``Timings.turn_gap``). ``audio`` turns a reply into mu-law for streams.
    ``dtmf`` is ``(seconds after stream start, digits)``. The callee hangs up
    when a turn comes after ``hangup_after_turns`` replies, or when replies run
    out and ``hangup_when_done`` is set.
    """

    answer: AnswerMode = "answer"


@dataclass(frozen=True)
class RestRequest:
    """One request the gateway made to the fake's REST API."""

    method: str
    path: str
    params: list[tuple[str, str]]  # form fields in wire order, repeats kept
    headers: dict[str, str]  # names lower-cased
    status: int = 0
    response: Any = None

    @property
    def form(self) -> dict[str, str]:
        """First value of each field (``getlist`` for repeated ones)."""
        out: dict[str, str] = {}
        for name, value in self.params:
            out.setdefault(name, value)
        return out

    def getlist(self, name: str) -> list[str]:
        return [v for k, v in self.params if k == name]


@dataclass
class SentWebhook:
    """One HTTP request the fake made to the gateway, and what came back."""

    # status | voice (Url on create / inbound) | update (Url= on a REST update) | gather |
    # redirect | action (<Connect action>) | fallback | raw (send_webhook / replay)
    kind: str
    method: str
    url: str  # the public URL, as signed
    target: str  # where it was actually delivered (after rewriting)
    params: dict[str, str]
    signature: str | None
    headers: dict[str, str]
    call_sid: str | None = None
    status_code: int | None = None
    response_body: str = ""
    response_headers: dict[str, str] = field(default_factory=dict)
    error: str | None = None  # transport failure, if any


@dataclass(frozen=True)
class AppError:
    """What Twilio's debugger would log for the call."""

    code: int
    message: str
    level: Literal["error", "warning"] = "error"


@dataclass(frozen=True)
class ClearRecord:
    stream_sid: str
    dropped_bytes: int
    marks_flushed: tuple[str, ...]


@dataclass
class StreamRecord(BaseStreamRecord):
    """One media-stream WebSocket connection (a reconnect makes a new one)."""

    stream_sid: str
    url: str  # as written in the TwiML
    target: str  # what was dialled
    custom_parameters: dict[str, str]
    signature: str


@dataclass(frozen=True)
class FakeEvent:
    at: float  # seconds since the fake started
    call_sid: str | None
    kind: str
    data: dict[str, Any]


@dataclass
class FakeCall:
    """Everything the fake knows about one call, for assertions."""

    sid: str
    account_sid: str
    direction: Direction
    from_: str
    to: str
    status: str
    callee: CalleeRun[CalleeScript]
    created: float = field(default_factory=time.time)
    answered: float | None = None
    ended: float | None = None
    url: str | None = None
    method: str = "POST"
    twiml: str | None = None
    fallback_url: str | None = None
    fallback_method: str = "POST"
    status_callback: str | None = None
    status_callback_method: str = "POST"
    status_callback_events: tuple[str, ...] = ()
    timeout: int = 60
    send_digits: str | None = None
    create_params: dict[str, list[str]] = field(default_factory=dict)
    extra_params: dict[str, str] = field(default_factory=dict)  # sent on every webhook
    requests: list[RestRequest] = field(default_factory=list)
    webhooks: list[SentWebhook] = field(default_factory=list)
    twiml_executed: list[str] = field(default_factory=list)  # documents, in order
    verbs: list[str] = field(default_factory=list)  # verb names, in order
    heard: list[str] = field(default_factory=list)  # what the callee heard via <Say>
    played: list[str] = field(default_factory=list)  # <Play> URLs
    digits_played: list[str] = field(default_factory=list)
    callee_said: list[str] = field(default_factory=list)  # replies, as text or "dtmf:123"
    enqueued: list[str] = field(default_factory=list)
    streams: list[StreamRecord] = field(default_factory=list)
    marks_echoed: list[str] = field(default_factory=list)
    clears: list[ClearRecord] = field(default_factory=list)
    outbound_audio: bytearray = field(default_factory=bytearray)  # media the gateway sent
    errors: list[AppError] = field(default_factory=list)
    hung_up_by: str | None = None  # api | callee | twiml | error | timeout
    signature_override: str | None = None  # per-call X-Twilio-Signature value
    deleted: bool = False
    sequence: int = 0  # next status-callback SequenceNumber

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def duration(self) -> int:
        if self.answered is None:
            return 0
        return int(round((self.ended or time.time()) - self.answered))

    @property
    def stream(self) -> StreamRecord | None:
        """The latest media stream, if any."""
        return self.streams[-1] if self.streams else None

    @property
    def stream_frames_in(self) -> list[dict[str, Any]]:
        """Frames the gateway sent, over all of this call's streams."""
        return [f for s in self.streams for f in s.frames_in]

    def status_callbacks(self) -> list[SentWebhook]:
        return [w for w in self.webhooks if w.kind == "status"]
