"""Telnyx webhook envelopes -> CallEvents; client_state; hangup causes; DTMF merging."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from telnyx._models import construct_type
from telnyx.types.unwrap_webhook_event import UnwrapWebhookEvent

from voicecall.calls import CallState
from voicecall.carriers.telnyx.webhook import (
    HANGUP_CAUSES,
    ClientState,
    DtmfMerger,
    decode_client_state,
    dedupe_key,
    encode_client_state,
    end_reason,
    parse_envelope,
    parse_events,
    remote_status,
    transcription,
)
from voicecall.errors import ProtocolError

CCID = "v3:T02llQxIyaRkhfRKxgAP8nY511EhFLizdvdUKJiSw8d6A9BborherQ"


def body(event_type: str, payload: dict[str, Any], *, event_id: str = "evt-1") -> bytes:
    doc = {"data": {"record_type": "event", "event_type": event_type, "id": event_id,
                    "occurred_at": "2026-09-12T07:20:00.000000Z",
                    "payload": {"call_control_id": CCID, "call_leg_id": "leg",
                                "call_session_id": "sess", "connection_id": "conn",
                                **payload}},
           "meta": {"attempt": 1, "delivered_to": "https://voice.example.com/voice/webhook"}}
    return json.dumps(doc).encode()


def events(raw: bytes) -> list[Any]:
    env = parse_envelope(raw)
    assert env is not None
    return parse_events(env, dedupe_key=dedupe_key(env, "req-key"), now=123.0)


def sdk_event(raw: bytes) -> Any:
    """``data`` of the SDK's typed webhook event (its ``UnwrapWebhookEvent`` union)."""
    event = construct_type(type_=UnwrapWebhookEvent, value=json.loads(raw))  # type: ignore[arg-type]
    assert type(event).__name__.endswith("WebhookEvent"), type(event)
    return event.data


def test_client_state_round_trip_and_shape() -> None:
    state = encode_client_state("call-1", turn_token="tok", speak_seq=3)
    base64.b64decode(state, validate=True)  # Telnyx requires valid base64
    assert json.loads(base64.b64decode(state)) == {"c": "call-1", "t": "tok", "s": 3}
    assert decode_client_state(state) == ClientState("call-1", "tok", 3)
    assert ClientState("x").encode() == encode_client_state("x")
    assert decode_client_state(encode_client_state(None)) == ClientState()


@pytest.mark.parametrize("raw", [
    None, "", 42, "%%%", "bm90IGpzb24=",  # "not json"
    base64.b64encode(b"[1,2]").decode(), base64.b64encode(b'{"c": 5, "t": ["x"]}').decode(),
    base64.b64encode(b"\xff\xfe").decode(), base64.b64encode(b'{"s": true}').decode(),
    "A" * 5000,
])
def test_malformed_client_state_is_empty_not_an_error(raw: object) -> None:
    assert decode_client_state(raw) == ClientState()


def test_call_initiated_incoming_and_outgoing() -> None:
    inbound = events(body("call.initiated", {"direction": "incoming", "state": "parked",
                                             "from": "+15550001111", "to": "+15550009999",
                                             "client_state": None}))
    assert len(inbound) == 1
    ev = inbound[0]
    assert (ev.type, ev.direction, ev.call_id, ev.provider_call_id) == (
        "call.initiated", "inbound", None, CCID)
    assert (ev.from_number, ev.to_number) == ("+15550001111", "+15550009999")
    assert ev.dedupe_key == "telnyx:evt:evt-1" and ev.timestamp == 123.0
    state = encode_client_state("our-call")
    outbound = events(body("call.initiated", {"direction": "outgoing", "client_state": state}))
    assert (outbound[0].direction, outbound[0].call_id) == ("outbound", "our-call")
    sdk = sdk_event(body("call.initiated", {"direction": "incoming", "from": "+1"}))
    assert sdk.event_type == "call.initiated" and sdk.payload.direction == "incoming"


@pytest.mark.parametrize(("event_type", "expected"), [
    ("call.answered", "call.answered"), ("call.bridged", "call.active"),
    ("call.ringing", "call.ringing")])
def test_simple_events(event_type: str, expected: str) -> None:
    [ev] = events(body(event_type, {"client_state": encode_client_state("c1")}))
    assert (ev.type, ev.call_id) == (expected, "c1")


@pytest.mark.parametrize(("cause", "state"), [
    ("normal_clearing", CallState.COMPLETED), ("user_busy", CallState.BUSY),
    ("call_rejected", CallState.BUSY), ("timeout", CallState.NO_ANSWER),
    ("no_answer", CallState.NO_ANSWER), ("originator_cancel", CallState.HANGUP_BOT),
    ("time_limit", CallState.TIMEOUT), ("not_found", CallState.FAILED),
    ("unspecified", CallState.COMPLETED), ("machine_detected", CallState.VOICEMAIL),
    ("user_hangup", CallState.HANGUP_USER), ("something_new", CallState.COMPLETED),
    (None, CallState.COMPLETED)])
def test_hangup_causes(cause: str | None, state: CallState) -> None:
    raw = body("call.hangup", {"hangup_cause": cause, "hangup_source": "callee",
                               "sip_hangup_cause": "16"})
    [ev] = events(raw)
    assert ev.type == "call.ended" and ev.reason is state
    assert end_reason(cause) is state
    if cause in ("normal_clearing", "user_busy", "timeout", "no_answer", "call_rejected",
                 "originator_cancel", "time_limit", "not_found", "unspecified"):
        # Every cause in the SDK's enum is one we map explicitly.
        assert sdk_event(raw).payload.hangup_cause == cause and cause in HANGUP_CAUSES


def test_transcription_final_interim_and_legacy_shape() -> None:
    state = encode_client_state("c1", turn_token="turn-7")
    raw = body("call.transcription", {"client_state": state, "transcription_data": {
        "transcript": "  What time do you open? ", "is_final": True, "confidence": 0.87,
        "transcription_track": "inbound"}})
    [ev] = events(raw)
    assert (ev.type, ev.transcript, ev.is_final, ev.confidence, ev.turn_token) == (
        "call.speech", "What time do you open?", True, 0.87, "turn-7")
    assert sdk_event(raw).payload.transcription_data.transcript.strip() == ev.transcript
    interim = body("call.transcription", {"transcription_data": {
        "transcript": "What", "is_final": False}})
    assert events(interim) == []
    legacy = body("call.transcription", {"transcript": "Hello", "confidence": None})
    [ev2] = events(legacy)
    assert ev2.transcript == "Hello" and ev2.confidence == 0.9
    assert events(body("call.transcription", {"transcription_data": {"transcript": " "}})) == []
    env = parse_envelope(raw)
    assert env is not None and transcription(env) == ("What time do you open?", True, 0.87)


def test_dtmf_and_gather() -> None:
    [ev] = events(body("call.dtmf.received", {"digit": "#", "from": "+1", "to": "+2"}))
    assert (ev.type, ev.digits) == ("call.dtmf", "#")
    [ev2] = events(body("call.gather.ended", {"digits": "1234", "status": "valid"}))
    assert (ev2.type, ev2.digits) == ("call.dtmf", "1234")
    assert events(body("call.gather.ended", {"digits": "", "status": "timeout"})) == []
    assert events(body("call.dtmf.received", {})) == []


@pytest.mark.parametrize("event_type", [
    "call.speak.started", "call.speak.ended", "streaming.started", "streaming.stopped",
    "streaming.failed", "call.playback.ended", "call.machine.detection.ended", "call.cost"])
def test_shell_and_unknown_events_make_no_state_events(event_type: str) -> None:
    assert events(body(event_type, {"status": "completed"})) == []


def test_envelopes_without_events_and_malformed_bodies() -> None:
    assert parse_envelope(b'{"meta": {}}') is None
    assert parse_envelope(b'{"data": {"payload": {}}}') is None
    assert parse_envelope(b'{"data": []}') is None
    for bad in (b"not json", b"[1]", b"\xff", b'{"data": {"event_type": "x", "payload": 5}}'):
        with pytest.raises(ProtocolError):
            parse_envelope(bad)
    env = parse_envelope(b'{"data": {"event_type": "call.answered"}}')
    assert env is not None and env.payload == {} and env.event_id is None
    assert dedupe_key(env, "telnyx:req:abc") == "telnyx:req:abc"
    meta = parse_envelope(body("call.answered", {}))
    assert meta is not None and meta.attempt == 1


def test_remote_status() -> None:
    assert remote_status(True) == "active"
    assert remote_status(False) == "terminal"
    assert remote_status(None) == "unknown" and remote_status("true") == "unknown"


def test_dtmf_merger_pairs_reports_from_two_sources() -> None:
    merger = DtmfMerger(window_s=3.0)
    # "11#" reported by the stream and by webhooks, interleaved: three keypresses.
    reports = [("stream", "1", 0.0), ("webhook", "1", 0.05), ("stream", "1", 0.3),
               ("stream", "#", 0.6), ("webhook", "1", 0.35), ("webhook", "#", 0.65)]
    forwarded = [d for src, d, t in reports if merger.accept(src, d, t)]  # type: ignore[arg-type]
    assert forwarded == ["1", "1", "#"]
    # One source only: every report is a keypress.
    single = DtmfMerger()
    assert [single.accept("webhook", d, i * 0.1) for i, d in enumerate("4411")] == [True] * 4
    # A late twin (outside the window) is a new keypress.
    late = DtmfMerger(window_s=1.0)
    assert late.accept("stream", "5", 0.0) and late.accept("webhook", "5", 5.0)
