"""Plivo callbacks -> CallEvents: statuses, hangup causes, ids, speech and digits."""

from __future__ import annotations

import pytest

from voicecall.calls import CallState
from voicecall.carriers.plivo.webhook import (
    HANGUP_CAUSE_TO_STATE,
    STATUS_TO_STATE,
    call_ids,
    confidence,
    end_reason,
    parse_events,
    parse_form,
    remote_status,
)
from voicecall.errors import ProtocolError

UUID = "2a0bb1c6-8a1e-11ee-9a1e-0242ac120002"
REQ = "6d1b8c39-0bfe-4a7b-bf45-6d0fbcb6a9f2"


def ev(params: dict[str, str], query: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return parse_events({k: [v] for k, v in params.items()}, query or {},
                        dedupe_key="k1", now=100.0)


def test_parse_form_keeps_blank_values_and_decodes() -> None:
    form = parse_form(b"CallUUID=u&Digits=&Speech=hello+there&To=%2B1555")
    assert form == {"CallUUID": ["u"], "Digits": [""], "Speech": ["hello there"],
                    "To": ["+1555"]}
    assert parse_form(b"") == {}


def test_parse_form_invalid_utf8() -> None:
    with pytest.raises(ProtocolError):
        parse_form(b"Speech=%FF\xff")


def test_outbound_answer_callback_is_answered_with_our_call_id() -> None:
    [e] = ev({"CallUUID": UUID, "RequestUUID": REQ, "CallStatus": "in-progress",
              "Direction": "outbound", "Event": "StartApp", "From": "15550009999",
              "To": "15550002222"}, {"callId": "c1", "flow": "answer"})
    assert e.type == "call.answered" and e.call_id == "c1" and e.provider_call_id == UUID
    assert e.direction == "outbound" and e.dedupe_key == "k1" and e.timestamp == 100.0
    # Plivo drops the "+": numbers come back as E.164.
    assert e.from_number == "+15550009999" and e.to_number == "+15550002222"


def test_inbound_answer_request_rings_without_call_id() -> None:
    [e] = ev({"CallUUID": UUID, "CallStatus": "ringing", "Direction": "inbound",
              "Event": "StartApp", "From": "15550001111", "To": "15550009999"})
    assert e.type == "call.ringing" and e.call_id is None and e.direction == "inbound"


def test_start_app_without_status_is_answered() -> None:
    [e] = ev({"CallUUID": UUID, "Event": "StartApp"})
    assert e.type == "call.answered"


@pytest.mark.parametrize(("status", "cause", "reason"), [
    ("completed", "NORMAL_CLEARING", CallState.COMPLETED),
    ("completed", "ALLOTTED_TIMEOUT", CallState.COMPLETED),
    ("completed", "USER_BUSY", CallState.BUSY),
    ("completed", "NO_ANSWER", CallState.NO_ANSWER),
    ("completed", "ORIGINATOR_CANCEL", CallState.HANGUP_BOT),
    ("completed", "", CallState.COMPLETED),
    ("busy", "USER_BUSY", CallState.BUSY),
    ("failed", "UNALLOCATED_NUMBER", CallState.FAILED),
    ("timeout", "NO_ANSWER", CallState.NO_ANSWER),
    ("no-answer", "", CallState.NO_ANSWER),
    ("cancel", "ORIGINATOR_CANCEL", CallState.HANGUP_BOT),
    ("machine", "", CallState.VOICEMAIL),
    ("", "USER_BUSY", CallState.BUSY),
    ("", "Normal Clearing", CallState.COMPLETED),
])
def test_hangup_callbacks_end_the_call(status: str, cause: str, reason: CallState) -> None:
    params = {"CallUUID": UUID, "Event": "Hangup", "HangupCause": cause}
    if status:
        params["CallStatus"] = status
    [e] = ev(params, {"callId": "c1", "flow": "hangup"})
    assert e.type == "call.ended" and e.reason is reason


def test_hangup_event_without_status_or_known_cause_completes() -> None:
    [e] = ev({"CallUUID": UUID, "Event": "Hangup", "HangupCause": "SOMETHING_NEW"})
    assert e.type == "call.ended" and e.reason is CallState.COMPLETED


def test_end_reason_unknown_status_is_not_an_end() -> None:
    assert end_reason("in-progress", "NORMAL_CLEARING") is None
    assert end_reason("", "") is None
    assert set(STATUS_TO_STATE.values()) <= set(CallState)
    assert all(s.terminal for s in STATUS_TO_STATE.values())
    assert all(s.terminal for s in HANGUP_CAUSE_TO_STATE.values())


def test_ring_callback() -> None:
    [e] = ev({"CallUUID": UUID, "CallStatus": "ringing", "Event": "Ring",
              "Direction": "outbound"}, {"callId": "c1", "flow": "ring"})
    assert e.type == "call.ringing"


def test_getinput_speech_beats_digits_and_status_and_carries_turn_token() -> None:
    [e] = ev({"CallUUID": UUID, "CallStatus": "in-progress", "InputType": "speech",
              "Speech": "  book a table  ", "SpeechConfidenceScore": "0.87", "Digits": "5"},
             {"callId": "c1", "flow": "getinput", "turnToken": "t-1"})
    assert e.type == "call.speech" and e.transcript == "book a table" and e.is_final
    assert e.confidence == 0.87 and e.turn_token == "t-1"


@pytest.mark.parametrize(("raw", "value"), [("0.5", 0.5), ("1", 1.0), ("0", 0.0),
                                           ("1.0", 1.0), (None, 0.9), ("NaN", 0.9),
                                           ("-0.2", 0.9), ("1.5", 0.9), ("", 0.9)])
def test_confidence(raw: str | None, value: float) -> None:
    assert confidence(raw) == value


def test_getinput_digits() -> None:
    [e] = ev({"CallUUID": UUID, "InputType": "dtmf", "Digits": "42#",
              "CallStatus": "in-progress"}, {"callId": "c1", "flow": "getinput"})
    assert e.type == "call.dtmf" and e.digits == "42#"


def test_blank_speech_and_digits_and_document_flows_yield_nothing() -> None:
    for flow in ("getinput", "redirect", "doc"):
        assert ev({"CallUUID": UUID, "CallStatus": "in-progress", "Speech": " ",
                   "Digits": ""}, {"callId": "c1", "flow": flow}) == []


def test_document_flow_still_reports_an_end() -> None:
    [e] = ev({"CallUUID": UUID, "CallStatus": "completed"}, {"flow": "redirect"})
    assert e.type == "call.ended"


@pytest.mark.parametrize(("direction", "expected"), [("inbound", "inbound"),
                                                     ("outbound", "outbound"),
                                                     ("OUTBOUND", "outbound"),
                                                     ("sideways", None)])
def test_direction(direction: str, expected: str | None) -> None:
    [e] = ev({"CallUUID": UUID, "CallStatus": "ringing", "Direction": direction})
    assert e.direction == expected


def test_call_ids_join_request_and_call_uuid() -> None:
    ids = call_ids({"CallUUID": [UUID], "RequestUUID": [REQ]})
    assert (ids.call_uuid, ids.request_uuid) == (UUID, REQ)
    assert call_ids({"CallUUID": [UUID], "ALegRequestUUID": [REQ]}).request_uuid == REQ
    assert call_ids({}).call_uuid is None


def test_unknown_status_yields_nothing() -> None:
    assert ev({"CallUUID": UUID, "CallStatus": "weird"}) == []


def test_remote_status() -> None:
    assert remote_status({"call_status": "in-progress"}) == "active"
    assert remote_status({"call_status": "ringing"}) == "active"
    assert remote_status({"call_status": "queued"}) == "active"
    assert remote_status({"call_status": "completed"}) == "terminal"
    assert remote_status({"call_status": "??"}) == "unknown"
    assert remote_status(None) == "unknown"
    assert remote_status(None, ended=True) == "terminal"
