"""Media Streams codec: Twilio's documented frames, round trips, malformed input."""

from __future__ import annotations

import base64
import json

import pytest

from voicecall.carriers.twilio import media
from voicecall.carriers.twilio.media import (
    Clear,
    Connected,
    Dtmf,
    Mark,
    Media,
    OutboundMedia,
    Start,
    Stop,
    Unknown,
    parse_client_frame,
    parse_frame,
)
from voicecall.errors import ProtocolError

MZ = "MZ" + "0" * 32
CA = "CA" + "1" * 32
AC = "AC" + "2" * 32
AUDIO = bytes(range(160))

# The frames exactly as documented (carriers.md §1.4).
DOC_FRAMES = [
    ('{"event":"connected","protocol":"Call","version":"1.0.0"}',
     Connected("Call", "1.0.0")),
    ('{"event":"start","sequenceNumber":"1","streamSid":"MZ1","start":{"streamSid":"MZ1",'
     '"accountSid":"AC1","callSid":"CA1","tracks":["inbound"],'
     '"customParameters":{"session":"abc123"},'
     '"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}}}',
     Start("MZ1", "CA1", "AC1", ("inbound",), {"session": "abc123"}, "audio/x-mulaw", 8000, 1)),
    ('{"event":"media","sequenceNumber":"3","streamSid":"MZ1","media":{"track":"inbound",'
     '"chunk":"1","timestamp":"5","payload":"' + base64.b64encode(b"\xff\x7f").decode() + '"}}',
     Media("MZ1", b"\xff\x7f", "inbound", 1, 5)),
    ('{"event":"dtmf","sequenceNumber":"5","streamSid":"MZ1",'
     '"dtmf":{"track":"inbound_track","digit":"1"}}',
     Dtmf("MZ1", "1")),
    ('{"event":"mark","sequenceNumber":"9","streamSid":"MZ1","mark":{"name":"utt-1"}}',
     Mark("MZ1", "utt-1")),
    ('{"event":"stop","sequenceNumber":"10","streamSid":"MZ1",'
     '"stop":{"accountSid":"AC1","callSid":"CA1"}}',
     Stop("MZ1", "CA1")),
]


@pytest.mark.parametrize(("text", "frame"), DOC_FRAMES)
def test_documented_frames_parse(text: str, frame: object) -> None:
    assert parse_frame(text) == frame


def test_fake_encoders_round_trip() -> None:
    assert parse_frame(media.encode_connected()) == Connected("Call", "1.0.0")
    start = parse_frame(media.encode_start(MZ, CA, AC, custom_parameters={"token": "t&k"}))
    assert start == Start(MZ, CA, AC, ("inbound",), {"token": "t&k"}, "audio/x-mulaw", 8000, 1)
    assert parse_frame(media.encode_inbound_media(MZ, AUDIO, sequence_number=3, chunk=2,
                                                  timestamp_ms=40)) == \
        Media(MZ, AUDIO, "inbound", 2, 40)
    assert parse_frame(media.encode_dtmf(MZ, "#", sequence_number=4)) == Dtmf(MZ, "#")
    assert parse_frame(media.encode_mark_echo(MZ, "m1", sequence_number=5)) == Mark(MZ, "m1")
    assert parse_frame(media.encode_stop(MZ, CA, AC, sequence_number=6)) == Stop(MZ, CA)


def test_fake_encoders_use_twilio_field_shapes() -> None:
    start = json.loads(media.encode_start(MZ, CA, AC, sequence_number=1))
    assert start["sequenceNumber"] == "1"
    assert start["start"]["mediaFormat"] == {"encoding": "audio/x-mulaw", "sampleRate": 8000,
                                             "channels": 1}
    m = json.loads(media.encode_inbound_media(MZ, AUDIO, sequence_number=7, chunk=3,
                                              timestamp_ms=60))
    assert m["sequenceNumber"] == "7"
    assert m["media"]["chunk"] == "3" and m["media"]["timestamp"] == "60"
    assert m["media"]["track"] == "inbound"
    d = json.loads(media.encode_dtmf(MZ, "5", sequence_number=8))
    assert d["dtmf"] == {"track": "inbound_track", "digit": "5"}
    s = json.loads(media.encode_stop(MZ, CA, AC, sequence_number=9))
    assert s["stop"] == {"accountSid": AC, "callSid": CA}


def test_gateway_encoders_exact_json() -> None:
    assert json.loads(media.encode_media(MZ, AUDIO)) == {
        "event": "media", "streamSid": MZ,
        "media": {"payload": base64.b64encode(AUDIO).decode()}}
    assert json.loads(media.encode_mark(MZ, "tts-1")) == {
        "event": "mark", "streamSid": MZ, "mark": {"name": "tts-1"}}
    assert json.loads(media.encode_clear(MZ)) == {"event": "clear", "streamSid": MZ}


def test_client_frames_round_trip() -> None:
    assert parse_client_frame(media.encode_media(MZ, AUDIO)) == OutboundMedia(MZ, AUDIO)
    assert parse_client_frame(media.encode_mark(MZ, "x")) == Mark(MZ, "x")
    assert parse_client_frame(media.encode_clear(MZ)) == Clear(MZ)
    with pytest.raises(ProtocolError):
        parse_client_frame('{"event":"start","streamSid":"MZ1"}')


def test_bytes_text_accepted_as_str_only() -> None:
    with pytest.raises(ProtocolError, match="binary"):
        parse_frame(media.encode_connected().encode())


def test_integer_counters_accepted() -> None:
    text = ('{"event":"media","streamSid":"MZ1","media":{"track":"inbound","chunk":4,'
            '"timestamp":80,"payload":""}}')
    assert parse_frame(text) == Media("MZ1", b"", "inbound", 4, 80)


def test_unknown_event_is_unknown_frame() -> None:
    frame = parse_frame('{"event":"futureThing","streamSid":"MZ1","x":1}')
    assert isinstance(frame, Unknown)
    assert frame.event == "futureThing"


def test_start_defaults_when_optional_fields_missing() -> None:
    frame = parse_frame('{"event":"start","streamSid":"MZ1","start":{"callSid":"CA1"}}')
    assert frame == Start("MZ1", "CA1", "", ("inbound",), {}, "audio/x-mulaw", 8000, 1)


MALFORMED = [
    "",
    "not json",
    "{",
    "[]",
    '"media"',
    "null",
    "{}",
    '{"event":5}',
    '{"event":"media"}',
    '{"event":"media","streamSid":"MZ1"}',
    '{"event":"media","streamSid":"MZ1","media":{"payload":"@@@"}}',
    '{"event":"media","streamSid":"MZ1","media":{"payload":"abc"}}',
    '{"event":"media","streamSid":"MZ1","media":{"payload":5}}',
    '{"event":"media","streamSid":"MZ1","media":{"payload":"","chunk":"x"}}',
    '{"event":"media","streamSid":"MZ1","media":{"payload":"","chunk":"-1"}}',
    '{"event":"media","streamSid":"MZ1","media":{"payload":"","chunk":true}}',
    '{"event":"media","streamSid":"MZ1","media":{"payload":"","timestamp":1.5}}',
    '{"event":"media","streamSid":"MZ1","media":{"payload":"","chunk":"١"}}',
    '{"event":"start","streamSid":"MZ1"}',
    '{"event":"start","streamSid":"MZ1","start":{}}',
    '{"event":"start","start":{"callSid":"CA1"}}',
    '{"event":"start","streamSid":"MZ1","start":{"callSid":"CA1","customParameters":{"a":1}}}',
    '{"event":"start","streamSid":"MZ1","start":{"callSid":"CA1","tracks":"inbound"}}',
    '{"event":"start","streamSid":"MZ1","start":{"callSid":"CA1","mediaFormat":[]}}',
    '{"event":"dtmf","streamSid":"MZ1","dtmf":{"digit":"12"}}',
    '{"event":"dtmf","streamSid":"MZ1","dtmf":{}}',
    '{"event":"mark","streamSid":"MZ1","mark":{}}',
    '{"event":"mark","streamSid":"MZ1","mark":"x"}',
    '{"event":"stop","streamSid":"MZ1","stop":"x"}',
    '{"event":"stop"}',
    "[" * 100_000,
]


@pytest.mark.parametrize("text", MALFORMED)
def test_malformed_frames_raise_protocol_error(text: str) -> None:
    with pytest.raises(ProtocolError):
        parse_frame(text)
