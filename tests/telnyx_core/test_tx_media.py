"""The Telnyx media-streaming frame codec (carriers.md §2.4 shapes)."""

from __future__ import annotations

import base64
import json

import pytest

from voicecall.carriers.telnyx import media
from voicecall.errors import ProtocolError

DOC_START = {
    "event": "start", "sequence_number": "1", "stream_id": "32DE0DEA-53CB-4B21-89A4-9E1819C043BC",
    "start": {"user_id": "3E6F995F-85F7-4705-9741-53B116D28237",
              "call_control_id": "v2:T02llQxIyaRkhfRKxgAP8nY511EhFLizdvdUKJiSw8d6A9BborherQ",
              "call_session_id": "ff55a038-6f5d-11ef-9692-02420aeffb1f",
              "from": "+13122010094", "to": "+13122123456", "tags": ["TAG1", "TAG2"],
              "client_state": "aGF2ZSBhIG5pY2UgZGF5ID1d",
              "custom_parameters": {"customer_id": "customer_123"},
              "media_format": {"encoding": "PCMU", "sample_rate": 8000, "channels": 1}}}


def test_documented_frames_parse() -> None:
    connected = media.parse_frame('{"event":"connected","version":"1.0.0"}')
    assert connected == media.Connected("1.0.0", None)
    start = media.parse_frame(json.dumps(DOC_START))
    assert isinstance(start, media.Start)
    assert start.stream_id == DOC_START["stream_id"]
    assert start.call_control_id.startswith("v2:")
    assert start.custom_parameters == {"customer_id": "customer_123"}
    assert (start.encoding, start.sample_rate, start.channels) == ("PCMU", 8000, 1)
    assert start.client_state == "aGF2ZSBhIG5pY2UgZGF5ID1d"
    payload = base64.b64encode(b"\xff" * 160).decode()
    med = media.parse_frame(json.dumps({
        "event": "media", "sequence_number": "4", "stream_id": "s",
        "media": {"track": "inbound", "chunk": "2", "timestamp": "5", "payload": payload}}))
    assert med == media.Media("s", b"\xff" * 160, "inbound", 2, 5, 4)
    assert media.parse_frame('{"event":"dtmf","stream_id":"s","sequence_number":"5",'
                             '"dtmf":{"digit":"1"}}') == media.Dtmf("s", "1")
    assert media.parse_frame('{"event":"mark","stream_id":"s","mark":{"name":"utt-1"}}') == \
        media.Mark("s", "utt-1")
    assert media.parse_frame('{"event":"stop","sequence_number":"9","stream_id":"s",'
                             '"stop":{"user_id":"u","call_control_id":"v3:x"}}') == \
        media.Stop("s", "v3:x")


def test_round_trips_of_both_sides() -> None:
    frames = [
        media.encode_connected(auth_token="tok"),
        media.encode_start("s1", "v3:c", call_session_id="sess", from_number="+1",
                           to_number="+2", client_state="eA==",
                           custom_parameters={"token": "t"}),
        media.encode_inbound_media("s1", b"\x01\x02", sequence_number=3, chunk=2,
                                   timestamp_ms=20),
        media.encode_dtmf("s1", "#", sequence_number=4),
        media.encode_mark_echo("s1", "m1", sequence_number=5),
        media.encode_stop("s1", "v3:c", sequence_number=6),
        media.encode_error("s1", 100003, "Malformed frame", "bad", sequence_number=7),
    ]
    parsed = [media.parse_frame(f) for f in frames]
    assert parsed[0] == media.Connected("1.0.0", "tok")
    assert isinstance(parsed[1], media.Start) and parsed[1].custom_parameters == {"token": "t"}
    assert parsed[2] == media.Media("s1", b"\x01\x02", "inbound", 2, 20, 3)
    assert parsed[3] == media.Dtmf("s1", "#")
    assert parsed[4] == media.Mark("s1", "m1")
    assert parsed[5] == media.Stop("s1", "v3:c")
    assert parsed[6] == media.Error("s1", "100003", "Malformed frame", "bad")
    # What we send: media/mark/clear without stream_id.
    out = [media.encode_media(b"\xff" * 160), media.encode_mark("tts-1"), media.encode_clear()]
    assert [json.loads(f) for f in out] == [
        {"event": "media", "media": {"payload": base64.b64encode(b"\xff" * 160).decode()}},
        {"event": "mark", "mark": {"name": "tts-1"}}, {"event": "clear"}]
    assert [media.parse_client_frame(f) for f in out] == [
        media.OutboundMedia(b"\xff" * 160), media.Mark("", "tts-1"), media.Clear()]


def test_lenient_where_telnyx_is_undocumented() -> None:
    listed = dict(DOC_START, start=dict(DOC_START["start"], custom_parameters=[
        {"name": "token", "value": "abc"}]))
    start = media.parse_frame(json.dumps(listed))
    assert isinstance(start, media.Start) and start.custom_parameters == {"token": "abc"}
    bare = media.parse_frame('{"event":"error","stream_id":"s","code":1,"title":"x"}')
    assert bare == media.Error("s", "1", "x", "")
    assert isinstance(media.parse_frame('{"event":"something_new","x":1}'), media.Unknown)
    assert media.parse_frame('{"event":"stop"}') == media.Stop("", "")
    ints = media.parse_frame('{"event":"media","media":{"payload":"","chunk":3,"timestamp":60}}')
    assert isinstance(ints, media.Media) and (ints.chunk, ints.timestamp_ms) == (3, 60)


@pytest.mark.parametrize("bad", [
    b'{"event":"media"}', "not json", "[1]", '{"no":"event"}',
    '{"event":"media","media":{"payload":"%%%"}}',
    '{"event":"media","media":{"payload":"","chunk":"-1"}}',
    '{"event":"media","media":{"payload":"","chunk":true}}',
    '{"event":"dtmf","dtmf":{"digit":"12"}}', '{"event":"start","start":{}}',
    '{"event":"start","stream_id":"s","start":{"call_control_id":"c",'
    '"custom_parameters":{"a":1}}}',
    '{"event":"mark","mark":"x"}',
])
def test_malformed_frames_raise(bad: str | bytes) -> None:
    with pytest.raises(ProtocolError):
        media.parse_frame(bad)


def test_client_frames_we_never_send_are_refused() -> None:
    with pytest.raises(ProtocolError):
        media.parse_client_frame('{"event":"start"}')
