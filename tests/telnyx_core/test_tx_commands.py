"""Call Control request bodies: exactly what the official SDK (telnyx 4.189) sends."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from telnyx import Telnyx

from voicecall.carriers.telnyx import commands
from voicecall.carriers.telnyx.commands import Command, StreamParams
from voicecall.carriers.telnyx.rest import TelnyxRest
from voicecall.carriers.telnyx.webhook import encode_client_state
from voicecall.errors import UsageError
from voicecall.testing.fake_telnyx import ALLOWED, REQUIRED

CCID = "v3:T02llQxIyaRkhfRKxgAP8nY511EhFLizdvdUKJiSw8d6A9BborherQ"
CALL_ID = "5d2a6a4e-8a53-4d8a-9d0f-4a8d3f0b9c11"
STATE = encode_client_state(CALL_ID, turn_token="turn-1")
STREAM = StreamParams("wss://voice.example.com/voice/stream?callId=x&token=t", auth_token="t")

Seen = list[tuple[str, str, Any]]


@pytest.fixture
def sdk() -> Iterator[tuple[Telnyx, Seen]]:
    seen: Seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, request.url.raw_path.decode(),
                     json.loads(request.content) if request.content else None))
        return httpx.Response(200, json={"data": {
            "result": "ok", "call_control_id": CCID, "call_leg_id": "leg",
            "call_session_id": "sess", "is_alive": False, "record_type": "call"}})

    client = Telnyx(api_key="KEY", base_url="https://api.telnyx.com/v2", max_retries=0,
                    http_client=httpx.Client(transport=httpx.MockTransport(handler)))
    yield client, seen
    client.close()


async def ours(command: Command, ccid: str = CCID) -> tuple[str, str, Any]:
    seen: Seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, request.url.raw_path.decode(),
                     json.loads(request.content) if request.content else None))
        assert request.headers["authorization"] == "Bearer KEY"
        return httpx.Response(200, json={"data": {"result": "ok", "call_control_id": CCID}})

    rest = TelnyxRest("KEY", transport=httpx.MockTransport(handler))
    try:
        if command.action is None:
            await rest.dial(command)
        else:
            await rest.action(ccid, command)
    finally:
        await rest.aclose()
    return seen[0]


def sdk_kwargs(body: dict[str, Any]) -> dict[str, Any]:
    return {("from_" if k == "from" else k): v for k, v in body.items()}


SDK_METHODS = {"answer": "answer", "reject": "reject", "speak": "speak",
               "transcription_start": "start_transcription",
               "transcription_stop": "stop_transcription", "send_dtmf": "send_dtmf",
               "streaming_start": "start_streaming", "streaming_stop": "stop_streaming",
               "hangup": "hangup", "client_state_update": "update_client_state"}


def all_commands() -> list[Command]:
    return [
        commands.dial(connection_id="1234567890", to="+14155551234", from_="+15005550006",
                      webhook_url="https://voice.example.com/voice/webhook",
                      client_state=STATE, call_id=CALL_ID, timeout_secs=45),
        commands.dial(connection_id="1234567890", to="+14155551234", from_="+15005550006",
                      webhook_url="https://voice.example.com/voice/webhook",
                      client_state=STATE, call_id=CALL_ID, timeout_secs=2, stream=STREAM),
        commands.answer(call_id=CALL_ID, client_state=STATE),
        commands.answer(call_id=CALL_ID, client_state=STATE, stream=STREAM,
                        webhook_url="https://voice.example.com/voice/webhook"),
        commands.reject(call_id=CALL_ID),
        commands.speak("Hello  there.\nHow are you?", call_id=CALL_ID, seq=3,
                       client_state=STATE, voice="Joanna", language="en-GB"),
        commands.transcription_start(call_id=CALL_ID, turn="turn-1", client_state=STATE,
                                     language="de-DE"),
        commands.transcription_stop(call_id=CALL_ID, turn="turn-1"),
        commands.send_dtmf("1,2p#", call_id=CALL_ID, seq=9),
        commands.streaming_start(STREAM, call_id=CALL_ID, seq=1, client_state=STATE),
        commands.streaming_stop(call_id=CALL_ID, seq=2, stream_id="1edb94f9"),
        commands.hangup(call_id=CALL_ID),
        commands.client_state_update(client_state=STATE),
    ]


@pytest.mark.parametrize("command", all_commands(), ids=lambda c: c.action or "dial")
async def test_bodies_match_what_the_sdk_sends(command: Command,
                                               sdk: tuple[Telnyx, Seen]) -> None:
    client, seen = sdk
    body = dict(command.body)
    if command.action is None:
        client.calls.dial(**sdk_kwargs(body))
    else:
        getattr(client.calls.actions, SDK_METHODS[command.action])(CCID, **sdk_kwargs(body))
    expected = seen[-1]
    assert await ours(command) == expected
    # ... and every key is one the SDK knows and the fake accepts.
    name = command.action or "dial"
    assert set(body) <= ALLOWED[name]
    assert all(k in body for k in REQUIRED.get(name, ()))


def test_dial_and_stream_fields() -> None:
    dial = commands.dial(connection_id="c", to="+1", from_="+2", webhook_url="https://x/y",
                         client_state=STATE, call_id=CALL_ID, timeout_secs=2, stream=STREAM)
    body = dial.body
    assert body["timeout_secs"] == 5  # clamped to Telnyx's 5..600
    assert body["stream_bidirectional_mode"] == "rtp"
    assert body["stream_bidirectional_codec"] == body["stream_codec"] == "PCMU"
    assert body["stream_bidirectional_sampling_rate"] == 8000
    assert body["stream_auth_token"] == "t" and body["stream_track"] == "inbound_track"
    answer = commands.answer(call_id=CALL_ID, client_state=STATE, stream=STREAM).body
    # The answer command has neither the sampling rate nor the auth token.
    assert "stream_auth_token" not in answer
    assert "stream_bidirectional_sampling_rate" not in answer
    assert answer["stream_url"] == STREAM.url


def test_command_ids_are_deterministic_and_distinct() -> None:
    assert commands.answer(call_id=CALL_ID, client_state=STATE).command_id == \
        f"voicecall-answer-{CALL_ID}"
    a = commands.speak("x", call_id=CALL_ID, seq=1, client_state=STATE)
    b = commands.speak("x", call_id=CALL_ID, seq=1, client_state=STATE)
    c = commands.speak("x", call_id=CALL_ID, seq=2, client_state=STATE)
    assert a.command_id == b.command_id != c.command_id
    ids = {cmd.command_id for cmd in all_commands() if cmd.command_id}
    assert len(ids) == len([cmd for cmd in all_commands() if cmd.command_id]) - 2  # 2 dials, 2 answers
    assert commands.client_state_update(client_state=STATE).method == "PUT"


@pytest.mark.parametrize(("voice", "expected"), [
    (None, "AWS.Polly.Joanna-Neural"), ("", "AWS.Polly.Joanna-Neural"),
    ("Joanna", "AWS.Polly.Joanna"), ("Matthew-Neural", "AWS.Polly.Matthew-Neural"),
    ("Polly.Amy", "AWS.Polly.Amy"), ("AWS.Polly.Brian-Neural", "AWS.Polly.Brian-Neural"),
    ("Azure.en-CA-ClaraNeural", "Azure.en-CA-ClaraNeural"), ("Telnyx.KokoroTTS.af",
                                                              "Telnyx.KokoroTTS.af"),
    ("female", "female"), ("MALE", "male"), ("alloy", "AWS.Polly.Joanna-Neural"),
    ("21m00Tcm4TlvDq8ikWAM", "AWS.Polly.Joanna-Neural")])
def test_voice_mapping(voice: str | None, expected: str) -> None:
    assert commands.voice_for(voice) == expected


def test_speak_language_and_transcription_language() -> None:
    assert commands.speak("hi", call_id="c", seq=1, client_state=STATE,
                          language="xx-YY").body["language"] == "en-US"
    assert commands.transcription_language("pt-BR") == "pt"
    assert commands.transcription_language(None) == "en"


def test_dtmf_digits() -> None:
    assert commands.normalize_dtmf("ww1,2p#*") == "ww1w2w#*"
    assert commands.normalize_dtmf("ABCD") == "ABCD"
    for bad in ("12x", "", "1 2", "e"):
        with pytest.raises(UsageError):
            commands.normalize_dtmf(bad)
    assert commands.dtmf_duration_s("12#") == pytest.approx(1.05)
    assert commands.dtmf_duration_s("wW1") == pytest.approx(1.85)
    with pytest.raises(UsageError):
        commands.send_dtmf("1", call_id="c", seq=1, duration_ms=50)


def test_long_speech_is_split_at_sentence_and_word_ends() -> None:
    sentence = "This is a sentence of moderate length. "
    text = sentence * 200  # ~7800 characters
    pieces = commands.split_speech(text)
    assert all(len(p) <= commands.SPEAK_LIMIT for p in pieces) and len(pieces) == 3
    assert " ".join(pieces) == " ".join(text.split())
    assert all(p.endswith(".") for p in pieces)
    words = commands.split_speech("word " * 1000)
    assert all(len(p) <= commands.SPEAK_LIMIT for p in words)
    assert commands.split_speech("x" * 3500) == ["x" * 3000, "x" * 500]
    assert commands.split_speech("  ") == []
    with pytest.raises(UsageError):
        commands.speak("x" * 3001, call_id="c", seq=1, client_state=STATE)
    with pytest.raises(UsageError):
        commands.speak("   ", call_id="c", seq=1, client_state=STATE)
