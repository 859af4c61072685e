"""The Plivo audio-stream codec: frames both ways, format negotiation, audio conversion."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from voicecall.audio.g711 import mulaw_to_pcm16, pcm16_to_mulaw, rms
from voicecall.carriers.plivo import media
from voicecall.errors import ProtocolError

B64 = base64.b64encode(b"\xff" * 160).decode()

# The shapes carriers.md §3.4 documents (Plivo docs and Plivo's agent-transport).
DOCUMENTED = [
    ('{"event":"start","sequenceNumber":1,"start":{"callId":"c-1","streamId":"s-1",'
     '"accountId":"MA1","tracks":["inbound"],"mediaFormat":{"encoding":"audio/x-mulaw",'
     '"sampleRate":8000}},"extra_headers":"userId=12345;sessionId=abc-xyz"}',
     media.Start("s-1", "c-1", "MA1", ("inbound",), media.MULAW_8K,
                 {"userId": "12345", "sessionId": "abc-xyz"})),
    ('{"event":"media","sequenceNumber":2,"streamId":"s-1","media":{"track":"inbound",'
     f'"timestamp":"1700000000","chunk":3,"payload":"{B64}"}}}}',
     media.Media("s-1", b"\xff" * 160, "inbound", "1700000000", 3)),
    ('{"event":"dtmf","streamId":"s-1","dtmf":{"digit":"5"}}', media.Dtmf("s-1", "5")),
    ('{"event":"playedStream","streamId":"s-1","name":"utt-1"}',
     media.PlayedStream("s-1", "utt-1")),
    ('{"event":"played","streamId":"s-1","name":"utt-1"}', media.PlayedStream("s-1", "utt-1")),
    ('{"event":"clearedAudio","streamId":"s-1"}', media.ClearedAudio("s-1")),
    ('{"event":"stop","streamId":"s-1"}', media.Stop("s-1")),
]


@pytest.mark.parametrize(("text", "frame"), DOCUMENTED)
def test_documented_frames_parse(text: str, frame: media.Frame) -> None:
    assert media.parse_frame(text) == frame


def test_start_without_media_format_is_plivos_default_l16() -> None:
    start = media.parse_frame('{"event":"start","start":{"callId":"c","streamId":"s"}}')
    assert isinstance(start, media.Start) and start.format == media.L16_8K


@pytest.mark.parametrize(("raw", "expected"), [
    ("token=abc;callId=x", {"token": "abc", "callId": "x"}),
    ("token=abc,callId=x", {"token": "abc", "callId": "x"}),
    ('{"token": "abc"}', {"token": "abc"}),
    ({"token": "abc"}, {"token": "abc"}),
    ("", {}), (None, {}), ("garbage", {}),
])
def test_extra_headers_forms(raw: object, expected: dict[str, str]) -> None:
    assert media.parse_extra_headers(raw) == expected


def test_unknown_events_are_ignored_not_fatal() -> None:
    frame = media.parse_frame('{"event":"playFailed","streamId":"s","reason":"x"}')
    assert isinstance(frame, media.Unknown) and frame.event == "playFailed"


@pytest.mark.parametrize("text", [
    "not json", "[1]", '{"no":"event"}', b'{"event":"stop"}',
    '{"event":"media","streamId":"s","media":{"payload":"!!!"}}',
    '{"event":"media","streamId":"s"}',
    '{"event":"dtmf","streamId":"s","dtmf":{"digit":"12"}}',
    '{"event":"start","start":{"streamId":"s"}}',
    '{"event":"start","start":{"callId":"c","streamId":"s","mediaFormat":'
    '{"encoding":"audio/x-alaw","sampleRate":8000}}}',
    '{"event":"start","start":{"callId":"c","streamId":"s","mediaFormat":'
    '{"encoding":"audio/x-l16","sampleRate":44100}}}',
    '{"event":"playedStream","streamId":"s"}',
])
def test_malformed_frames_raise(text: str | bytes) -> None:
    with pytest.raises(ProtocolError):
        media.parse_frame(text)


def test_gateway_encoders_exact_json() -> None:
    assert json.loads(media.encode_play_audio(b"\x01\x02", media.L16_16K)) == {
        "event": "playAudio", "media": {"contentType": "audio/x-l16", "sampleRate": 16000,
                                        "payload": "AQI="}}
    assert json.loads(media.encode_checkpoint("s", "tts-1")) == {
        "event": "checkpoint", "streamId": "s", "name": "tts-1"}
    assert json.loads(media.encode_clear_audio("s")) == {"event": "clearAudio", "streamId": "s"}
    assert json.loads(media.encode_send_dtmf("12#")) == {"event": "sendDTMF", "dtmf": "12#"}


def test_client_frames_round_trip() -> None:
    for fmt in media.FORMATS:
        frame = media.parse_client_frame(media.encode_play_audio(b"\x00" * 4, fmt))
        assert frame == media.PlayAudio(fmt, b"\x00" * 4)
    assert media.parse_client_frame(media.encode_checkpoint("s", "n")) == \
        media.Checkpoint("s", "n")
    assert media.parse_client_frame(media.encode_clear_audio("s")) == media.ClearAudio("s")
    assert media.parse_client_frame(media.encode_send_dtmf("1")) == media.SendDtmf("1")
    with pytest.raises(ProtocolError):
        media.parse_client_frame('{"event":"media","streamId":"s"}')
    with pytest.raises(ProtocolError):
        media.parse_client_frame('{"event":"sendDTMF","dtmf":""}')


def test_fake_encoders_round_trip() -> None:
    start = media.encode_start("s", "c", "MA1", media.L16_16K, extra_headers="token=t")
    assert media.parse_frame(start) == media.Start("s", "c", "MA1", ("inbound",),
                                                   media.L16_16K, {"token": "t"})
    assert json.loads(start)["sequenceNumber"] == 1  # a number, unlike Twilio's strings
    m = media.parse_frame(media.encode_media("s", b"\x00\x01", sequence_number=2, chunk=1,
                                             timestamp_ms=20))
    assert m == media.Media("s", b"\x00\x01", "inbound", "20", 1)
    assert media.parse_frame(media.encode_dtmf("s", "#", sequence_number=3)) == \
        media.Dtmf("s", "#")
    assert media.parse_frame(media.encode_played_stream("s", "n", sequence_number=4)) == \
        media.PlayedStream("s", "n")
    assert media.parse_frame(media.encode_cleared_audio("s", sequence_number=5)) == \
        media.ClearedAudio("s")
    assert media.parse_frame(media.encode_stop("s", sequence_number=6)) == media.Stop("s")


@pytest.mark.parametrize(("value", "fmt"), [
    ("audio/x-mulaw;rate=8000", media.MULAW_8K), ("audio/x-l16;rate=8000", media.L16_8K),
    ("audio/x-l16;rate=16000", media.L16_16K), ("audio/x-l16", media.L16_8K),
    ("AUDIO/X-L16; rate=16000", media.L16_16K),
])
def test_content_types(value: str, fmt: media.StreamFormat) -> None:
    assert media.parse_content_type(value) == fmt
    assert media.parse_content_type(fmt.content_type) == fmt


@pytest.mark.parametrize("bad", ["audio/x-mulaw;rate=16000", "audio/x-alaw;rate=8000",
                                 "audio/x-l16;rate=abc", "audio/wav"])
def test_bad_content_types(bad: str) -> None:
    with pytest.raises(ProtocolError):
        media.parse_content_type(bad)


def _tone(ms: int, freq: float = 440.0) -> bytes:
    t = np.arange(8 * ms) / 8000
    return pcm16_to_mulaw((np.sin(2 * np.pi * freq * t) * 0.3 * 32767).astype(np.int16))


def test_mulaw_passes_through_untouched() -> None:
    codec = media.AudioCodec(media.MULAW_8K)
    audio = _tone(100)
    assert codec.encode(audio) == audio and codec.decode(audio) == audio
    assert codec.flush_outbound() == b""


def test_l16_8k_is_little_endian_pcm() -> None:
    codec = media.AudioCodec(media.L16_8K)
    audio = _tone(40)
    wire = codec.encode(audio)
    assert len(wire) == 2 * len(audio)
    assert np.array_equal(np.frombuffer(wire, dtype="<i2"), mulaw_to_pcm16(audio))
    # and back, split at an odd byte boundary
    assert codec.decode(wire[:101]) + codec.decode(wire[101:]) == audio


def test_l16_16k_is_resampled_both_ways_keeping_the_energy() -> None:
    audio = _tone(400)
    codec = media.AudioCodec(media.L16_16K)
    frames = [codec.encode(audio[i:i + 160]) for i in range(0, len(audio), 160)]
    wire = b"".join(frames) + codec.flush_outbound()
    assert abs(len(wire) - 4 * len(audio)) <= 8  # 2x the samples, 2 bytes each
    back = media.decode_audio(wire, media.L16_16K)
    assert abs(rms(back) - rms(audio)) < 0.02
    dec = media.AudioCodec(media.L16_16K)
    inbound = b"".join(dec.decode(wire[i:i + 640]) for i in range(0, len(wire), 640))
    assert len(inbound) > 0.7 * len(audio) and abs(rms(inbound[400:]) - rms(audio)) < 0.03


def test_encode_audio_helper_and_frame_sizes() -> None:
    assert media.encode_audio(b"\xff" * 160, media.MULAW_8K) == b"\xff" * 160
    assert len(media.encode_audio(b"\xff" * 160, media.L16_8K)) == 320
    assert [media.frame_bytes(f) for f in media.FORMATS] == [160, 320, 640]
