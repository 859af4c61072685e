"""What the fake Plivo records and how a test scripts the far end of a call."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

from voicecall.carriers.plivo.media import StreamFormat
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
Direction = Literal["inbound", "outbound"]
TERMINAL = frozenset({"completed", "busy", "failed", "no-answer", "timeout", "cancel"})


@dataclass
class Timings:
    """Every delay the fake simulates, in seconds. Defaults keep tests fast."""

    ring: float = 0.02  # queued -> ringing
    answer: float = 0.02  # ringing -> answered (or busy / no-answer / failed)
    time_scale: float = 0.01  # multiplies XML-given seconds: Wait, executionTimeout, w/W
    speak_per_word: float = 0.002  # how long a <Speak> "plays" per word
    reply_delay: float = 0.01  # callee thinking time before answering a <GetInput>
    realtime: bool = True  # pace stream media in real time (False: as fast as possible)
    turn_gap: float = 0.25  # quiet after our playback before the callee takes its turn
    dtmf_gap: float = 0.1  # between digits of one scripted press on a stream
    webhook_timeout: float = 15.0  # read timeout for callbacks (Plivo's is 40 s)
    close_timeout: float = 2.0  # WebSocket closing handshake

    @property
    def playback_is_realtime(self) -> bool:
        return self.realtime  # our audio plays at the pace the caller's is sent


@dataclass
class CalleeScript(BaseCalleeScript):
    """The person (or machine) at the other end of a call.

    ``replies`` are used in order: one per ``<GetInput>``, or one per turn on an
    audio stream (a turn comes when our playback has gone quiet for
    ``Timings.turn_gap``). ``audio`` turns a reply into mu-law 8 kHz for streams
    (converted to the stream's format on the way out). ``dtmf`` is ``(seconds after
    stream start, digits)``. The callee hangs up when a turn comes after
    ``hangup_after_turns`` replies, or when replies run out and ``hangup_when_done``.
    """

    answer: AnswerMode = "answer"


@dataclass(frozen=True)
class RestRequest:
    """One request the gateway made to the fake's REST API."""

    method: str
    path: str
    body: dict[str, Any]  # the JSON body ({} without one)
    query: dict[str, str]
    headers: dict[str, str]  # names lower-cased
    status: int = 0
    response: Any = None


@dataclass
class SentWebhook:
    """One HTTP request the fake made to the gateway, and what came back."""

    # ring | answer | hangup | getinput | redirect | transfer | raw
    kind: str
    method: str
    url: str  # the public URL, as signed
    target: str  # where it was actually delivered
    params: dict[str, str]
    nonce: str | None
    signature: str | None  # X-Plivo-Signature-V3 as sent
    headers: dict[str, str]
    call_uuid: str | None = None
    status_code: int | None = None
    response_body: str = ""
    response_headers: dict[str, str] = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True)
class PlivoError:
    """What Plivo's debug log would say about the call (hangup cause codes 7xxx/8xxx)."""

    code: int
    message: str
    level: Literal["error", "warning"] = "error"


@dataclass(frozen=True)
class ClearRecord:
    stream_id: str
    dropped_bytes: int  # of our audio, in the stream's format
    checkpoints_dropped: tuple[str, ...]


@dataclass
class StreamRecord(BaseStreamRecord):
    """One audio-stream WebSocket connection (a reconnect makes a new one)."""

    stream_id: str
    url: str
    target: str
    format: StreamFormat  # negotiated (what ``start`` said)
    requested_content_type: str | None  # what the XML / REST call asked for
    extra_headers: str
    bidirectional: bool


@dataclass(frozen=True)
class FakeEvent:
    at: float
    call_uuid: str | None
    kind: str
    data: dict[str, Any]


@dataclass
class FakeCall:
    """Everything the fake knows about one call, for assertions."""

    call_uuid: str
    request_uuid: str | None
    direction: Direction
    from_: str  # as Plivo shows it: digits, no "+"
    to: str
    status: str
    callee: CalleeRun[CalleeScript]
    created: float = field(default_factory=time.time)
    answered: float | None = None
    ended: float | None = None
    answer_url: str | None = None
    answer_method: str = "POST"
    ring_url: str | None = None
    ring_method: str = "POST"
    hangup_url: str | None = None
    hangup_method: str = "POST"
    fallback_url: str | None = None
    fallback_method: str = "POST"
    ring_timeout: int = 120
    hangup_on_ring: int | None = None
    time_limit: int | None = None
    send_digits: str | None = None
    create_body: dict[str, Any] = field(default_factory=dict)
    hangup_cause: str | None = None
    hangup_source: str | None = None
    requests: list[RestRequest] = field(default_factory=list)
    webhooks: list[SentWebhook] = field(default_factory=list)
    xml_executed: list[str] = field(default_factory=list)  # documents, in order
    elements: list[str] = field(default_factory=list)  # element names, in order
    heard: list[str] = field(default_factory=list)  # <Speak> and the Speak API
    played: list[str] = field(default_factory=list)
    digits_sent: list[str] = field(default_factory=list)  # <DTMF>, DTMF API, sendDTMF
    callee_said: list[str] = field(default_factory=list)  # replies, as text or "dtmf:123"
    streams: list[StreamRecord] = field(default_factory=list)
    checkpoints_played: list[str] = field(default_factory=list)
    clears: list[ClearRecord] = field(default_factory=list)
    outbound_audio: bytearray = field(default_factory=bytearray)  # our audio as mu-law 8 kHz
    outbound_raw: bytearray = field(default_factory=bytearray)  # as it crossed the socket
    errors: list[PlivoError] = field(default_factory=list)
    hung_up_by: str | None = None  # api | callee | xml | error | timeout | cancel
    signature_override: str | None = None

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
        return self.streams[-1] if self.streams else None

    @property
    def stream_frames_in(self) -> list[dict[str, Any]]:
        return [f for s in self.streams for f in s.frames_in]

    def callbacks(self, kind: str) -> list[SentWebhook]:
        return [w for w in self.webhooks if w.kind == kind]
