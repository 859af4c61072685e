"""Plivo callbacks -> carrier-neutral ``CallEvent``s. Pure: bytes and dicts in, events out.

Plivo posts form-encoded callbacks to the answer, ring, hangup, ``<GetInput>``
action and ``<Redirect>`` URLs (carriers.md §3.2). One request yields at most one
event, in the reference's priority order (openclaw-voice-call.md §4.3.2): a speech
result beats keypad digits beats ``CallStatus``. A ``<GetInput>`` action also
carries ``CallStatus=in-progress``; turning that into a second ``call.answered``
would only be noise, hence "at most one".

Ids: Plivo's create-call answer is a ``request_uuid``; the ``CallUUID`` first shows
up in the ring/answer callbacks, which also carry ``RequestUUID`` (and, for API
calls, ``ALegRequestUUID``) so the two can be joined. ``call_ids`` returns both.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal
from urllib.parse import parse_qs

from voicecall.calls.model import CallEvent, CallState, Direction, EventType
from voicecall.config.routing import normalize_e164
from voicecall.errors import ProtocolError

DEFAULT_SPEECH_CONFIDENCE = 0.9
_CONFIDENCE_RE = re.compile(r"^(0(\.\d+)?|1(\.0+)?)$")

# Non-terminal CallStatus -> event. ``in-progress`` is the answer callback of an
# outbound call; an inbound call's answer URL is fetched while it still rings.
_STATUS_EVENTS: dict[str, EventType] = {
    "queued": "call.initiated",
    "ringing": "call.ringing",
    "early-media": "call.ringing",
    "in-progress": "call.answered",
}

# Terminal CallStatus -> end reason. ``timeout`` is Plivo's ring timeout (nobody
# answered); ``cancel`` only happens when we cancel a queued/ringing call.
STATUS_TO_STATE: dict[str, CallState] = {
    "completed": CallState.COMPLETED,
    "busy": CallState.BUSY,
    "failed": CallState.FAILED,
    "timeout": CallState.NO_ANSWER,
    "no-answer": CallState.NO_ANSWER,
    "cancel": CallState.HANGUP_BOT,
    "canceled": CallState.HANGUP_BOT,
    "cancelled": CallState.HANGUP_BOT,
    "machine": CallState.VOICEMAIL,
}

# HangupCause (FreeSWITCH names, which Plivo reports) -> end reason, used when the
# hangup callback has no usable CallStatus, and to refine ``completed`` for calls
# that never connected.
HANGUP_CAUSE_TO_STATE: dict[str, CallState] = {
    "NORMAL_CLEARING": CallState.COMPLETED,
    "USER_BUSY": CallState.BUSY,
    "CALL_REJECTED": CallState.BUSY,
    "NO_ANSWER": CallState.NO_ANSWER,
    "NO_USER_RESPONSE": CallState.NO_ANSWER,
    "ORIGINATOR_CANCEL": CallState.HANGUP_BOT,
    "ALLOTTED_TIMEOUT": CallState.TIMEOUT,
    "UNALLOCATED_NUMBER": CallState.FAILED,
    "INVALID_NUMBER_FORMAT": CallState.FAILED,
    "NORMAL_TEMPORARY_FAILURE": CallState.FAILED,
    "NETWORK_OUT_OF_ORDER": CallState.FAILED,
    "RECOVERY_ON_TIMER_EXPIRE": CallState.FAILED,
}
_DIRECTIONS: dict[str, Direction] = {
    "inbound": "inbound",
    "outbound": "outbound",
    "outbound-api": "outbound",
}

# Flows where Plivo is fetching the next document of an answered call: their
# ``CallStatus=in-progress`` says nothing new.
DOCUMENT_FLOWS = frozenset({"getinput", "redirect", "doc"})


def parse_form(body: bytes) -> dict[str, list[str]]:
    """Decode an ``application/x-www-form-urlencoded`` body, keeping blank values.

    Blank values are signed (``Digits`` + ``""``), so dropping them would break
    signature checks; invalid UTF-8 is a protocol error.
    """
    try:
        text = body.decode("utf-8")
        return parse_qs(text, keep_blank_values=True, strict_parsing=False,
                        encoding="utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"webhook body is not valid UTF-8: {exc.reason}") from None


def first(params: Mapping[str, Sequence[str]], name: str) -> str | None:
    values = params.get(name)
    if values is None:
        return None
    if isinstance(values, str):  # tolerate a plain dict of str
        return values
    return values[0] if values else None


@dataclass(frozen=True)
class CallIds:
    call_uuid: str | None
    request_uuid: str | None


def call_ids(params: Mapping[str, Sequence[str]]) -> CallIds:
    """``CallUUID`` and the request uuid it answers (``RequestUUID`` or ``ALegRequestUUID``)."""
    request = first(params, "RequestUUID") or first(params, "ALegRequestUUID")
    return CallIds(first(params, "CallUUID") or None, request or None)


def confidence(raw: str | None) -> float:
    """``SpeechConfidenceScore`` (0.0-1.0); anything else becomes the default."""
    if raw is not None and _CONFIDENCE_RE.match(raw.strip()):
        return float(raw.strip())
    return DEFAULT_SPEECH_CONFIDENCE


def end_reason(status: str | None, cause: str | None) -> CallState | None:
    """The end reason of a hangup callback, or ``None`` if it does not end the call.

    ``CallStatus`` decides; ``completed`` with a cause that says the call never
    connected (busy, no answer, cancelled, failed) takes the cause's reason.
    Without a status, a known ``HangupCause`` decides.
    """
    s = (status or "").strip().lower()
    c = (cause or "").strip().upper().replace(" ", "_")
    by_cause = HANGUP_CAUSE_TO_STATE.get(c)
    if s in STATUS_TO_STATE:
        reason = STATUS_TO_STATE[s]
        if reason is CallState.COMPLETED and by_cause is not None and by_cause not in (
                CallState.COMPLETED, CallState.TIMEOUT):
            return by_cause
        return reason
    if s:
        return None
    return by_cause


def _number(raw: str | None) -> str | None:
    # Plivo sends numbers without "+" (``14155551234``); SIP URIs and anything that is
    # not a phone number pass through untouched.
    if not raw:
        return None
    if raw.strip().lower().startswith("sip:"):
        return raw
    return normalize_e164(raw) or raw


def parse_events(
    params: Mapping[str, Sequence[str]],
    query: Mapping[str, str],
    *,
    dedupe_key: str,
    now: float,
) -> list[CallEvent]:
    """Events for one verified Plivo callback (empty list when nothing applies).

    ``query`` is the callback URL's own query that we wrote (``callId``, ``flow``,
    ``turnToken``); ``dedupe_key`` identifies the request for the manager's dedupe.
    Inbound calls have no ``callId``: the manager resolves them by ``CallUUID``.
    """
    flow = query.get("flow") or ""
    base = CallEvent(
        type="call.initiated",
        call_id=query.get("callId") or None,
        provider_call_id=first(params, "CallUUID") or None,
        timestamp=now,
        dedupe_key=dedupe_key,
        turn_token=query.get("turnToken") or None,
        direction=_DIRECTIONS.get((first(params, "Direction") or "").strip().lower()),
        from_number=_number(first(params, "From")),
        to_number=_number(first(params, "To")),
    )

    speech = first(params, "Speech")
    if speech is not None and speech.strip():
        return [replace(base, type="call.speech", transcript=speech.strip(), is_final=True,
                        confidence=confidence(first(params, "SpeechConfidenceScore")))]

    digits = first(params, "Digits")
    if digits:
        return [replace(base, type="call.dtmf", digits=digits)]

    status = (first(params, "CallStatus") or "").strip().lower()
    reason = end_reason(status, first(params, "HangupCause"))
    event_name = (first(params, "Event") or "").strip().lower()
    if reason is None and not status and event_name == "hangup":
        reason = CallState.COMPLETED  # a hangup callback always ends the call
    if reason is not None:
        return [replace(base, type="call.ended", reason=reason)]
    if flow in DOCUMENT_FLOWS:
        return []
    event_type = _STATUS_EVENTS.get(status)
    if event_type is None and event_name == "startapp" and base.provider_call_id:
        event_type = "call.answered"
    if event_type is not None:
        return [replace(base, type=event_type)]
    return []


def remote_status(live: Mapping[str, object] | None, *, ended: bool = False
                  ) -> Literal["active", "terminal", "unknown"]:
    """Classify a live/queued call resource (``call_status``) from a REST fetch."""
    if ended:
        return "terminal"
    if live is None:
        return "unknown"
    status = str(live.get("call_status") or "").strip().lower()
    if status in STATUS_TO_STATE:
        return "terminal"
    if status in _STATUS_EVENTS or status == "queued":
        return "active"
    return "unknown"
