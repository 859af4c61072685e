"""TwiML builders produce the same element trees as the official SDK's VoiceResponse."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from twilio.twiml.voice_response import VoiceResponse  # type: ignore[import-untyped]

from voicecall.carriers.twilio import twiml
from voicecall.errors import UsageError

NASTY = "Tom & Jerry <say> \"quoted\" 'single' >done"
ACTION = "https://voice.example.com/voice/webhook?callId=c-1&turnToken=t&x=\"'<>"


def tree(xml: str) -> tuple[object, ...]:
    def norm(el: ET.Element) -> tuple[object, ...]:
        return (el.tag, dict(el.attrib), (el.text or ""), (el.tail or ""),
                tuple(norm(child) for child in el))
    return norm(ET.fromstring(xml))


def same(ours: str, sdk: VoiceResponse) -> None:
    assert ours.startswith('<?xml version="1.0" encoding="UTF-8"?>')
    assert tree(ours) == tree(sdk.to_xml())


def test_empty() -> None:
    same(twiml.empty(), VoiceResponse())


@pytest.mark.parametrize("pause_s", [0, 2])
@pytest.mark.parametrize("voice", [None, "Polly.Joanna"])
def test_say_then_hangup(pause_s: int, voice: str | None) -> None:
    r = VoiceResponse()
    r.say(NASTY, voice=voice, language="en-GB")
    if pause_s:
        r.pause(length=pause_s)
    r.hangup()
    same(twiml.say_then_hangup(NASTY, voice=voice, language="en-GB", pause_s=pause_s), r)


def _gather_sdk(r: VoiceResponse, action: str, language: str, timeout: int) -> None:
    r.gather(input="speech", speech_timeout="auto", action=action, method="POST",
             language=language, timeout=timeout)
    r.redirect(action, method="POST")


def test_say_then_gather() -> None:
    r = VoiceResponse()
    r.say(NASTY, voice="Polly.Matthew", language="de-DE")
    _gather_sdk(r, ACTION, "de-DE", 120)
    same(twiml.say_then_gather(NASTY, ACTION, voice="Polly.Matthew", language="de-DE"), r)


def test_gather_custom_timeout() -> None:
    r = VoiceResponse()
    _gather_sdk(r, ACTION, "en-US", 30)
    same(twiml.gather(ACTION, language="en-US", timeout_s=30), r)


def test_gather_default_timeout_is_120() -> None:
    root = ET.fromstring(twiml.gather(ACTION))
    assert root[0].attrib["timeout"] == "120"
    assert root[1].tag == "Redirect" and root[1].text == ACTION


def test_connect_stream_with_parameters() -> None:
    r = VoiceResponse()
    stream = r.connect().stream(url="wss://voice.example.com/voice/stream")
    stream.parameter(name="token", value="a&b\"c<d")
    stream.parameter(name="callId", value="c-1")
    same(twiml.connect_stream("wss://voice.example.com/voice/stream",
                              parameters={"token": "a&b\"c<d", "callId": "c-1"}), r)


def test_connect_stream_without_parameters() -> None:
    r = VoiceResponse()
    r.connect().stream(url="wss://h/s")
    same(twiml.connect_stream("wss://h/s", parameters={}), r)


def test_play_digits_then_redirect() -> None:
    r = VoiceResponse()
    r.play(digits="ww123#*W")
    r.redirect(ACTION, method="POST")
    same(twiml.play_digits_then_redirect("ww123#*W", ACTION), r)


@pytest.mark.parametrize(("raw", "played"), [
    ("1234", "1234"), ("p1,2P3", "w1w2w3"), (" 12# ", "12#"), ("wW*#0", "wW*#0"),
])
def test_play_digits_normalised(raw: str, played: str) -> None:
    assert twiml.normalize_play_digits(raw) == played
    root = ET.fromstring(twiml.play_digits_then_redirect(raw, "https://h/p"))
    assert root[0].attrib == {"digits": played}


@pytest.mark.parametrize("bad", ["", "12a", "A", "1 2", "<1>", "1;2"])
def test_play_digits_rejects_junk(bad: str) -> None:
    with pytest.raises(UsageError):
        twiml.play_digits_then_redirect(bad, "https://h/p")


def test_pause() -> None:
    r = VoiceResponse()
    r.pause(length=30)
    same(twiml.pause(30), r)
    with pytest.raises(UsageError):
        twiml.pause(0)


@pytest.mark.parametrize("reason", ["rejected", "busy"])
def test_reject(reason: str) -> None:
    r = VoiceResponse()
    r.reject(reason=reason)
    same(twiml.reject(reason), r)


def test_reject_default_and_bad_reason() -> None:
    r = VoiceResponse()
    r.reject(reason="rejected")
    same(twiml.reject(), r)
    with pytest.raises(UsageError):
        twiml.reject("nope")


def test_hold_queue() -> None:
    r = VoiceResponse()
    r.say("Please hold while we connect you.", voice="alice")
    r.enqueue("hold-queue", wait_url="/voice/hold-music?a=1&b=2")
    same(twiml.hold_queue("/voice/hold-music?a=1&b=2", voice="alice"), r)


def test_escaping_round_trips_text_and_attributes() -> None:
    doc = twiml.say_then_gather(NASTY, ACTION, voice="Polly.Joanna")
    root = ET.fromstring(doc)
    assert root[0].text == NASTY
    assert root[1].attrib["action"] == ACTION
    assert "<say>" not in doc and "Tom & Jerry" not in doc


def test_invalid_xml_characters_are_dropped() -> None:
    doc = twiml.say_then_hangup("bell\x07 nul\x00 ok\ud800", voice=None)
    root = ET.fromstring(doc)  # would raise if the control characters were kept
    assert root[0].text == "bell nul ok"
    doc.encode("utf-8")  # no lone surrogates left


def test_newlines_survive_in_text() -> None:
    root = ET.fromstring(twiml.say_then_hangup("line one\nline two"))
    assert root[0].text == "line one\nline two"


@pytest.mark.parametrize(("voice", "expected"), [
    (None, None), ("", None), ("  ", None),
    ("Polly.Joanna", "Polly.Joanna"), ("Polly.Joanna-Neural", "Polly.Joanna-Neural"),
    ("Google.en-US-Standard-A", "Google.en-US-Standard-A"),
    ("alloy", "Polly.Joanna"), ("ECHO", "Polly.Matthew"), ("fable", "Polly.Amy"),
    ("onyx", "Polly.Brian"), ("nova", "Polly.Salli"), ("shimmer", "Polly.Kimberly"),
    ("alice", "Polly.Joanna"), ("man", "Polly.Matthew"), ("woman", "Polly.Joanna"),
    ("Joanna", "Polly.Joanna"), ("matthew", "Polly.Matthew"),
    ("joanna-neural", "Polly.Joanna-Neural"),
    ("Polly.<x>", "Polly.Joanna"), ("some voice!", "Polly.Joanna"),
])
def test_polly_voice(voice: str | None, expected: str | None) -> None:
    assert twiml.polly_voice(voice) == expected


def test_fits_inline() -> None:
    assert twiml.fits_inline(twiml.say_then_hangup("short"))
    assert twiml.INLINE_TWIML_LIMIT == 4000
    long_doc = twiml.say_then_hangup("x" * 4000)
    assert not twiml.fits_inline(long_doc)
    assert twiml.fits_inline("a" * 4000) and not twiml.fits_inline("a" * 4001)
