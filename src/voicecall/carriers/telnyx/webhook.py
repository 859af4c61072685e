"""Telnyx Call Control webhooks -> carrier-neutral ``CallEvent``s. Pure: bytes in, events out.

The body is a JSON envelope ``{"data": {"event_type", "id", "occurred_at", "payload"},
"meta": {...}}``. ``client_state`` is ours, echoed back: base64 of a compact JSON
object ``{"c": callId, "t": turnToken, "s": speakSeq}`` (keys short, because Telnyx
echoes it in every later webhook of the leg). Anything that does not decode to that
shape is treated as absent, never as an error: the call is then found by its
``call_control_id``.

Only events the call state machine cares about become ``CallEvent``s; speak,
streaming and playback lifecycle events are for the carrier shell, which reads them
from the parsed ``Envelope`` directly.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from voicecall.calls.model import CallEvent, CallState, Direction
from voicecall.errors import ProtocolError

DEFAULT_SPEECH_CONFIDENCE = 0.9
MAX_CLIENT_STATE_CHARS = 4096

_DIRECTIONS: dict[str, Direction] = {
    "incoming": "inbound", "inbound": "inbound",
    "outgoing": "outbound", "outbound": "outbound",
}

# hangup_cause -> end reason. The SDK's enum (call_rejected, normal_clearing,
# originator_cancel, timeout, time_limit, user_busy, not_found, no_answer, unspecified)
# plus the extra causes the reference plugin maps (carriers send SIP-derived ones).
HANGUP_CAUSES: dict[str, CallState] = {
    "normal_clearing": CallState.COMPLETED,
    "normal_unspecified": CallState.COMPLETED,
    "unspecified": CallState.COMPLETED,
    "originator_cancel": CallState.HANGUP_BOT,
    "call_rejected": CallState.BUSY,
    "user_busy": CallState.BUSY,
    "timeout": CallState.NO_ANSWER,
    "no_answer": CallState.NO_ANSWER,
    "no_user_response": CallState.NO_ANSWER,
    "time_limit": CallState.TIMEOUT,
    "not_found": CallState.FAILED,
    "destination_out_of_order": CallState.FAILED,
    "network_out_of_order": CallState.FAILED,
    "service_unavailable": CallState.FAILED,
    "recovery_on_timer_expire": CallState.FAILED,
    "machine_detected": CallState.VOICEMAIL,
    "fax_detected": CallState.VOICEMAIL,
    "user_hangup": CallState.HANGUP_USER,
    "subscriber_absent": CallState.HANGUP_USER,
}

# --- client_state ------------------------------------------------------------------

@dataclass(frozen=True)
class ClientState:
    call_id: str | None = None
    turn_token: str | None = None
    speak_seq: int | None = None

    def encode(self) -> str:
        return encode_client_state(self.call_id, turn_token=self.turn_token,
                                   speak_seq=self.speak_seq)


def encode_client_state(call_id: str | None, *, turn_token: str | None = None,
                        speak_seq: int | None = None) -> str:
    """Base64 (standard alphabet, padded: Telnyx requires valid base64) of our state."""
    obj: dict[str, Any] = {}
    if call_id:
        obj["c"] = call_id
    if turn_token:
        obj["t"] = turn_token
    if speak_seq is not None:
        obj["s"] = speak_seq
    text = json.dumps(obj, separators=(",", ":"), sort_keys=True)
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def decode_client_state(raw: object) -> ClientState:
    """Our state from a webhook's ``client_state``; malformed or foreign -> empty state."""
    if not isinstance(raw, str) or not raw or len(raw) > MAX_CLIENT_STATE_CHARS:
        return ClientState()
    try:
        text = base64.b64decode(raw, validate=True).decode("utf-8")
        obj = json.loads(text)
    except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError):
        return ClientState()
    if not isinstance(obj, dict):
        return ClientState()
    call_id, turn, seq = obj.get("c"), obj.get("t"), obj.get("s")
    return ClientState(
        call_id=call_id if isinstance(call_id, str) and call_id else None,
        turn_token=turn if isinstance(turn, str) and turn else None,
        speak_seq=seq if isinstance(seq, int) and not isinstance(seq, bool) else None,
    )


# --- envelope --------------------------------------------------------------------------

@dataclass(frozen=True)
class Envelope:
    """One parsed webhook (``data`` of the JSON body)."""

    event_type: str
    event_id: str | None
    occurred_at: str | None
    payload: Mapping[str, Any] = field(default_factory=dict)
    attempt: int | None = None

    def text(self, key: str) -> str | None:
        value = self.payload.get(key)
        return value if isinstance(value, str) and value else None

    @property
    def call_control_id(self) -> str | None:
        return self.text("call_control_id")

    @property
    def client_state(self) -> ClientState:
        return decode_client_state(self.payload.get("client_state"))

    @property
    def direction(self) -> Direction | None:
        return _DIRECTIONS.get((self.text("direction") or "").lower())


def parse_envelope(body: bytes) -> Envelope | None:
    """The webhook's ``data``; None when it carries no ``event_type`` (acknowledge, ignore).

    Raises ``ProtocolError`` for a body that is not a JSON object (a 400 upstream).
    """
    try:
        doc = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ProtocolError(f"telnyx webhook body is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ProtocolError("telnyx webhook body is not a JSON object")
    data = doc.get("data")
    if not isinstance(data, dict):
        return None
    event_type = data.get("event_type")
    if not isinstance(event_type, str) or not event_type:
        return None
    payload = data.get("payload")
    if payload is None:
        payload = {}
    if not isinstance(payload, dict):
        raise ProtocolError("telnyx webhook data.payload is not an object")
    event_id = data.get("id")
    occurred = data.get("occurred_at")
    meta = doc.get("meta")
    attempt = meta.get("attempt") if isinstance(meta, dict) else None
    return Envelope(
        event_type=event_type,
        event_id=event_id if isinstance(event_id, str) and event_id else None,
        occurred_at=occurred if isinstance(occurred, str) else None,
        payload=payload,
        attempt=attempt if isinstance(attempt, int) and not isinstance(attempt, bool) else None,
    )


# --- mapping ---------------------------------------------------------------------------

def end_reason(cause: str | None) -> CallState:
    """``call.hangup`` ``hangup_cause`` -> end reason; unknown causes count as completed."""
    return HANGUP_CAUSES.get((cause or "").strip().lower(), CallState.COMPLETED)


def dedupe_key(env: Envelope, request_key: str) -> str:
    """Telnyx retries a delivery with a fresh timestamp (so a fresh signature): the event
    id, which the signature covers, is what identifies the event across retries."""
    return f"telnyx:evt:{env.event_id}" if env.event_id else request_key


def _confidence(raw: object) -> float:
    if isinstance(raw, int | float) and not isinstance(raw, bool) and 0.0 <= raw <= 1.0:
        return float(raw)
    return DEFAULT_SPEECH_CONFIDENCE


def transcription(env: Envelope) -> tuple[str, bool, float] | None:
    """``(transcript, is_final, confidence)`` of a ``call.transcription``; None if empty.

    The SDK nests the result in ``transcription_data``; older payloads put the fields
    at the top level, which the reference also reads.
    """
    data = env.payload.get("transcription_data")
    src: Mapping[str, Any] = data if isinstance(data, dict) else env.payload
    text = src.get("transcript")
    if not isinstance(text, str) or not text.strip():
        return None
    final = src.get("is_final")
    return text.strip(), final is not False, _confidence(src.get("confidence"))


def parse_events(env: Envelope, *, dedupe_key: str, now: float | None = None) -> list[CallEvent]:
    """Events for one verified webhook (empty when the state machine has nothing to do)."""
    state = env.client_state
    base = CallEvent(
        type="call.initiated",
        call_id=state.call_id,
        provider_call_id=env.call_control_id,
        timestamp=time.time() if now is None else now,
        dedupe_key=dedupe_key,
        turn_token=state.turn_token,
        direction=env.direction,
        from_number=env.text("from"),
        to_number=env.text("to"),
    )
    kind = env.event_type
    if kind == "call.initiated":
        return [base]
    if kind == "call.ringing":
        return [replace(base, type="call.ringing")]
    if kind == "call.answered":
        return [replace(base, type="call.answered")]
    if kind == "call.bridged":
        return [replace(base, type="call.active")]
    if kind == "call.hangup":
        return [replace(base, type="call.ended", reason=end_reason(env.text("hangup_cause")))]
    if kind == "call.dtmf.received":
        digit = env.text("digit")
        return [replace(base, type="call.dtmf", digits=digit)] if digit else []
    if kind == "call.gather.ended":
        digits = env.text("digits")
        return [replace(base, type="call.dtmf", digits=digits)] if digits else []
    if kind == "call.transcription":
        result = transcription(env)
        if result is None or not result[1]:
            return []  # interim results are not turns
        text, _, confidence = result
        return [replace(base, type="call.speech", transcript=text, is_final=True,
                        confidence=confidence)]
    return []


def remote_status(is_alive: object) -> Literal["active", "terminal", "unknown"]:
    """``GET /calls/{id}`` ``data.is_alive`` -> status (used when restoring calls)."""
    if is_alive is True:
        return "active"
    if is_alive is False:
        return "terminal"
    return "unknown"


# --- DTMF from two sources -------------------------------------------------------------

Source = Literal["webhook", "stream"]


class DtmfMerger:
    """One keypress, reported twice (a ``call.dtmf.received`` webhook and a stream ``dtmf``
    frame), reaches the agent once; a carrier that reports it only one way loses nothing.

    Each report either pairs with an unpaired report of the same digit from the *other*
    source within ``window_s`` (a duplicate: dropped) or is new (forwarded, and left
    waiting for its twin). Pressing ``1`` twice gives two stream and two webhook reports,
    which pair up one to one, so repeated digits are never swallowed.
    """

    def __init__(self, window_s: float = 3.0) -> None:
        self.window_s = window_s
        self._unpaired: dict[Source, deque[tuple[float, str]]] = {
            "webhook": deque(), "stream": deque()}

    def accept(self, source: Source, digit: str, now: float) -> bool:
        """True if this report is a new keypress to forward."""
        other: Source = "stream" if source == "webhook" else "webhook"
        for queue in self._unpaired.values():
            while queue and now - queue[0][0] > self.window_s:
                queue.popleft()
        waiting = self._unpaired[other]
        for i, (_, pending) in enumerate(waiting):
            if pending == digit:
                del waiting[i]
                return False
        self._unpaired[source].append((now, digit))
        return True
