"""Twilio voice webhooks -> carrier-neutral ``CallEvent``s. Pure: bytes and dicts in, events out.

One request yields at most one event, picked in the reference's priority order:
``SpeechResult`` (a ``<Gather>`` speech turn) beats ``Digits`` (keypad) beats
``CallStatus``. A Gather callback also carries ``CallStatus=in-progress``; turning that
into a second ``call.answered`` would be noise, hence "at most one".

``AnsweredBy`` (answering-machine detection) is deliberately not mapped to
``voicemail``: it only arrives when AMD was requested, and for a notify call a
machine is a perfectly good listener. The REST shell decides what to do with AMD.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Literal
from urllib.parse import parse_qs

from voicecall.calls.model import CallEvent, CallState, Direction, EventType
from voicecall.errors import ProtocolError

DEFAULT_SPEECH_CONFIDENCE = 0.9
_CONFIDENCE_RE = re.compile(r"^\d+(\.\d+)?$")

# Twilio CallStatus -> our event. Status callbacks for the ``answered`` event carry
# ``in-progress``; ``initiated`` only appears in status callbacks, ``queued`` in REST
# answers and early voice requests.
_STATUS_EVENTS: dict[str, EventType] = {
    "queued": "call.initiated",
    "initiated": "call.initiated",
    "ringing": "call.ringing",
    "in-progress": "call.answered",
}

# Terminal CallStatus -> end reason (reference ``shared/call-status.ts``). ``canceled``
# only happens when we cancel a queued/ringing call, so it is the bot hanging up.
STATUS_TO_STATE: dict[str, CallState] = {
    "completed": CallState.COMPLETED,
    "busy": CallState.BUSY,
    "failed": CallState.FAILED,
    "no-answer": CallState.NO_ANSWER,
    "canceled": CallState.HANGUP_BOT,
}

_DIRECTIONS: dict[str, Direction] = {
    "inbound": "inbound",
    "outbound-api": "outbound",
    "outbound-dial": "outbound",
}


def parse_form(body: bytes) -> dict[str, list[str]]:
    """Decode an ``application/x-www-form-urlencoded`` body, keeping blank values.

    Blank values matter: Twilio signs them (``Digits=`` contributes ``"Digits"``), so
    dropping them would break signature checks. Invalid UTF-8 is a protocol error rather
    than a silent U+FFFD that would also fail the signature with a confusing reason.
    """
    try:
        text = body.decode("utf-8")
        return parse_qs(text, keep_blank_values=True, strict_parsing=False,
                        encoding="utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"webhook body is not valid UTF-8: {exc.reason}") from None


def _first(params: Mapping[str, Sequence[str]], name: str) -> str | None:
    values = params.get(name)
    if values is None:
        return None
    if isinstance(values, str):  # tolerate a plain dict of str
        return values
    return values[0] if values else None


def _confidence(raw: str | None) -> float:
    # Twilio sends 0.0-1.0; anything else (partial results, "NaN", "-1") is not
    # coerced but replaced by the reference's default.
    if raw is not None and _CONFIDENCE_RE.match(raw.strip()):
        return float(raw.strip())
    return DEFAULT_SPEECH_CONFIDENCE


def parse_events(
    params: Mapping[str, Sequence[str]],
    query: Mapping[str, str],
    *,
    dedupe_key: str,
    now: float,
) -> list[CallEvent]:
    """Events for one verified Twilio webhook (empty list when nothing applies).

    ``query`` is the webhook URL's own query (``callId``, ``turnToken``, ``type``) that we
    put there when placing the call or opening a turn; ``dedupe_key`` is the verified
    request key (see ``signature.request_key``). ``call_id`` is ``None`` when the URL
    has no ``callId`` (inbound calls): the manager resolves by ``provider_call_id``.
    """
    direction_raw = _first(params, "Direction")
    # Fields every event shares; each branch only swaps the type and its payload.
    base = CallEvent(
        type="call.initiated",
        call_id=query.get("callId") or None,
        provider_call_id=_first(params, "CallSid") or None,
        timestamp=now,
        dedupe_key=dedupe_key,
        turn_token=query.get("turnToken") or None,
        direction=_DIRECTIONS.get(direction_raw or ""),
        from_number=_first(params, "From") or None,
        to_number=_first(params, "To") or None,
    )

    speech = _first(params, "SpeechResult")
    if speech is not None and speech.strip():
        return [replace(base, type="call.speech", transcript=speech.strip(), is_final=True,
                        confidence=_confidence(_first(params, "Confidence")))]

    digits = _first(params, "Digits")
    if digits:
        return [replace(base, type="call.dtmf", digits=digits)]

    status = (_first(params, "CallStatus") or "").strip().lower()
    event_type = _STATUS_EVENTS.get(status)
    if event_type is not None:
        return [replace(base, type=event_type)]
    reason = STATUS_TO_STATE.get(status)
    if reason is not None:
        return [replace(base, type="call.ended", reason=reason)]
    return []


def remote_status(twilio_status: str | None) -> Literal["active", "terminal", "unknown"]:
    """Classify a Call resource ``status`` from a REST fetch (used when restoring calls)."""
    status = (twilio_status or "").strip().lower()
    if status in STATUS_TO_STATE:
        return "terminal"
    if status in _STATUS_EVENTS:
        return "active"
    return "unknown"
