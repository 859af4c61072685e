"""Twilio webhook bodies -> CallEvents (reference §4.1.2 priority and status mapping)."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest

from voicecall.calls.model import CallEvent, CallState
from voicecall.carriers.twilio.webhook import (
    STATUS_TO_STATE,
    parse_events,
    parse_form,
    remote_status,
)
from voicecall.errors import ProtocolError

KEY = "twilio:req:abc"
NOW = 1_700_000_000.0


def form(**fields: str) -> dict[str, list[str]]:
    return {k: [v] for k, v in fields.items()}


def one(params: dict[str, list[str]], query: dict[str, str] | None = None) -> CallEvent:
    events = parse_events(params, query or {}, dedupe_key=KEY, now=NOW)
    assert len(events) == 1
    return events[0]


# parse_form

def test_parse_form_keeps_blank_and_repeated_values() -> None:
    body = b"CallSid=CA1&Digits=&StatusCallbackEvent=a&StatusCallbackEvent=b&From=%2B1555"
    assert parse_form(body) == {"CallSid": ["CA1"], "Digits": [""],
                                "StatusCallbackEvent": ["a", "b"], "From": ["+1555"]}


def test_parse_form_plus_is_space_and_utf8() -> None:
    body = urlencode({"SpeechResult": "hola señor 漢字"}).encode()
    assert parse_form(body) == {"SpeechResult": ["hola señor 漢字"]}
    assert parse_form(b"a=b+c") == {"a": ["b c"]}


def test_parse_form_empty_body() -> None:
    assert parse_form(b"") == {}


@pytest.mark.parametrize("body", [b"a=\xff", b"a=%FF", b"\xc3(=1"])
def test_parse_form_invalid_utf8_is_protocol_error(body: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_form(body)


# Status mapping table

STATUS_TABLE = [
    ("queued", "call.initiated", None),
    ("initiated", "call.initiated", None),
    ("ringing", "call.ringing", None),
    ("in-progress", "call.answered", None),
    ("completed", "call.ended", CallState.COMPLETED),
    ("busy", "call.ended", CallState.BUSY),
    ("failed", "call.ended", CallState.FAILED),
    ("no-answer", "call.ended", CallState.NO_ANSWER),
    ("canceled", "call.ended", CallState.HANGUP_BOT),
]


@pytest.mark.parametrize(("status", "event_type", "reason"), STATUS_TABLE)
def test_call_status_mapping(status: str, event_type: str, reason: CallState | None) -> None:
    ev = one(form(CallSid="CA1", CallStatus=status, Direction="outbound-api",
                  From="+15550001111", To="+15550002222"), {"callId": "call-1"})
    assert ev.type == event_type
    assert ev.reason == reason
    assert ev.call_id == "call-1"
    assert ev.provider_call_id == "CA1"
    assert ev.direction == "outbound"
    assert ev.from_number == "+15550001111"
    assert ev.to_number == "+15550002222"
    assert ev.dedupe_key == KEY
    assert ev.timestamp == NOW


def test_status_to_state_terminal_only() -> None:
    assert all(state.terminal for state in STATUS_TO_STATE.values())


@pytest.mark.parametrize(("direction", "expected"), [
    ("inbound", "inbound"), ("outbound-api", "outbound"), ("outbound-dial", "outbound"),
    ("trunking-originating", None), ("", None),
])
def test_direction_mapping(direction: str, expected: str | None) -> None:
    ev = one(form(CallSid="CA1", CallStatus="ringing", Direction=direction))
    assert ev.direction == expected


def test_unknown_or_missing_status_yields_nothing() -> None:
    assert parse_events(form(CallSid="CA1", CallStatus="weird"), {}, dedupe_key=KEY,
                        now=NOW) == []
    assert parse_events(form(CallSid="CA1"), {}, dedupe_key=KEY, now=NOW) == []
    assert parse_events({}, {}, dedupe_key=KEY, now=NOW) == []


def test_no_call_id_query_leaves_call_id_unset() -> None:
    ev = one(form(CallSid="CA9", CallStatus="ringing", Direction="inbound"))
    assert ev.call_id is None
    assert ev.provider_call_id == "CA9"


# Speech and digits

def test_speech_result_beats_digits_and_status() -> None:
    ev = one(form(CallSid="CA1", CallStatus="in-progress", SpeechResult=" book a table ",
                  Confidence="0.87", Digits="5"), {"callId": "c", "turnToken": "tok-1"})
    assert ev.type == "call.speech"
    assert ev.transcript == "book a table"
    assert ev.is_final is True
    assert ev.confidence == pytest.approx(0.87)
    assert ev.turn_token == "tok-1"


@pytest.mark.parametrize(("raw", "expected"), [
    ("0.5", 0.5), ("1", 1.0), ("0", 0.0), ("", 0.9), ("abc", 0.9), ("-0.5", 0.9),
    ("0.5x", 0.9), (".5", 0.9), ("NaN", 0.9), ("1e-3", 0.9),
])
def test_confidence_parsing(raw: str, expected: float) -> None:
    ev = one(form(SpeechResult="hi", Confidence=raw))
    assert ev.confidence == pytest.approx(expected)


def test_missing_confidence_defaults() -> None:
    assert one(form(SpeechResult="hi")).confidence == pytest.approx(0.9)


def test_blank_speech_falls_through() -> None:
    ev = one(form(SpeechResult="  ", CallStatus="in-progress"))
    assert ev.type == "call.answered"


def test_digits_beat_status() -> None:
    ev = one(form(CallSid="CA1", CallStatus="in-progress", Digits="12#"), {"turnToken": "t"})
    assert ev.type == "call.dtmf"
    assert ev.digits == "12#"
    assert ev.turn_token == "t"


def test_empty_digits_ignored() -> None:
    assert one(form(Digits="", CallStatus="ringing")).type == "call.ringing"


def test_answered_by_machine_is_not_voicemail() -> None:
    ev = one(form(CallSid="CA1", CallStatus="in-progress", AnsweredBy="machine_end_beep"))
    assert ev.type == "call.answered"


def test_repeated_keys_use_first_value() -> None:
    ev = one({"CallStatus": ["ringing", "completed"], "CallSid": ["CA1"]})
    assert ev.type == "call.ringing"


def test_status_case_insensitive() -> None:
    assert one(form(CallStatus="Completed")).reason == CallState.COMPLETED


# remote_status

@pytest.mark.parametrize(("status", "expected"), [
    ("queued", "active"), ("ringing", "active"), ("in-progress", "active"),
    ("initiated", "active"),
    ("completed", "terminal"), ("busy", "terminal"), ("failed", "terminal"),
    ("no-answer", "terminal"), ("canceled", "terminal"),
    ("", "unknown"), (None, "unknown"), ("paused", "unknown"),
])
def test_remote_status(status: str | None, expected: str) -> None:
    assert remote_status(status) == expected
