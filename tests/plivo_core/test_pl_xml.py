"""Plivo XML builders: same trees as the official SDK's plivoxml, escaping, and the fake's parser."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from plivo import plivoxml as px  # type: ignore[import-untyped]

from voicecall.carriers.plivo import plivoxml
from voicecall.errors import UsageError
from voicecall.testing.fake_plivo import PlivoXmlError, parse_xml
from voicecall.testing.fake_plivo._xml import DTMF, GetInput, Hangup, Redirect, Speak, Stream, Wait

ACTION = "https://voice.example.com/voice/webhook?callId=c1&flow=getinput&turnToken=t1&n=a"
BACK = "https://voice.example.com/voice/webhook?callId=c1&flow=redirect&n=b"


def tree(doc: str) -> tuple[object, ...]:
    def walk(el: ET.Element) -> tuple[object, ...]:
        return (el.tag, dict(el.attrib), (el.text or "").strip(),
                tuple(walk(child) for child in el))
    return walk(ET.fromstring(doc.encode()))


def sdk(*elements: object) -> str:
    root = px.ResponseElement()
    for el in elements:
        root.add(el)
    return str(root.to_string(False))


def test_empty() -> None:
    assert tree(plivoxml.empty()) == tree(sdk())
    assert parse_xml(plivoxml.empty()) == []


@pytest.mark.parametrize("wait_s", [0, 2])
def test_speak_then_hangup(wait_s: int) -> None:
    doc = plivoxml.speak_then_hangup("Your table is ready.", voice="Polly.Joanna",
                                     wait_s=wait_s)
    expected = [px.SpeakElement("Your table is ready.", voice="Polly.Joanna", language="en-US")]
    if wait_s:
        expected.append(px.WaitElement(length=wait_s))
    expected.append(px.HangupElement())
    assert tree(doc) == tree(sdk(*expected))
    parsed = parse_xml(doc)
    assert isinstance(parsed[0], Speak) and isinstance(parsed[-1], Hangup)


def _sdk_get_input(prompt: str | None) -> px.GetInputElement:
    g = px.GetInputElement(action=ACTION, method="POST", input_type="dtmf speech",
                           execution_timeout=60, language="en-US", redirect=True)
    # The SDK casts speechEndTimeout to int (raises on "auto", which Plivo documents).
    g._GetInputElement__speech_end_timeout = "auto"
    if prompt is not None:
        g.add_speak(prompt, voice="MAN", language="en-US")
    return g


def test_speak_then_listen_nests_the_prompt_and_redirects_back() -> None:
    doc = plivoxml.speak_then_listen("How can I help?", ACTION, BACK, voice="MAN")
    assert tree(doc) == tree(sdk(_sdk_get_input("How can I help?"),
                                 px.RedirectElement(BACK, method="POST")))
    get_input, redirect = parse_xml(doc)
    assert isinstance(get_input, GetInput) and get_input.action == ACTION
    assert get_input.input_type == {"dtmf", "speech"} and get_input.redirect
    assert get_input.children == (Speak("How can I help?", "MAN", "en-US"),)
    assert redirect == Redirect(BACK, "POST")


def test_listen() -> None:
    doc = plivoxml.listen(ACTION, BACK)
    assert tree(doc) == tree(sdk(_sdk_get_input(None), px.RedirectElement(BACK, method="POST")))
    with pytest.raises(UsageError):
        plivoxml.listen(ACTION, BACK, timeout_s=61)


@pytest.mark.parametrize("ctype", ["audio/x-mulaw;rate=8000", "audio/x-l16;rate=8000",
                                   "audio/x-l16;rate=16000"])
def test_stream(ctype: str) -> None:
    doc = plivoxml.stream("wss://voice.example.com/voice/stream", content_type=ctype,
                          extra_headers="token=abc123", then_redirect=BACK)
    assert tree(doc) == tree(sdk(
        px.StreamElement("wss://voice.example.com/voice/stream", bidirectional=True,
                         audioTrack="inbound", keepCallAlive=True, contentType=ctype,
                         extraHeaders="token=abc123"),
        px.RedirectElement(BACK, method="POST")))
    stream, _ = parse_xml(doc)
    assert isinstance(stream, Stream) and stream.bidirectional and stream.keep_call_alive
    assert stream.content_type == ctype and stream.extra_headers == "token=abc123"


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"content_type": "audio/x-alaw;rate=8000"}, "contentType"),
    ({"extra_headers": "token=a-b"}, "extraHeaders"),
    ({"extra_headers": "t=" + "a" * 600}, "extraHeaders"),
])
def test_stream_refuses_what_plivo_would(kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        plivoxml.stream("wss://h/s", **kwargs)  # type: ignore[arg-type]


def test_dtmf_then_redirect_waits_for_the_digits() -> None:
    doc = plivoxml.dtmf_then_redirect("ww1234#", BACK)
    assert tree(doc) == tree(sdk(px.DTMFElement("ww1234#", async_=False),
                                 px.RedirectElement(BACK, method="POST")))
    assert parse_xml(doc)[0] == DTMF("ww1234#", False)


@pytest.mark.parametrize(("raw", "out"), [("1,2", "1w2"), ("p9P#", "w9w#"), (" 12 ", "12"),
                                          ("W*A", "W*A")])
def test_normalize_digits(raw: str, out: str) -> None:
    assert plivoxml.normalize_digits(raw) == out


@pytest.mark.parametrize("bad", ["", "12x", "1 2", "e"])
def test_normalize_digits_refuses_junk(bad: str) -> None:
    with pytest.raises(UsageError):
        plivoxml.normalize_digits(bad)


def test_keepalive() -> None:
    doc = plivoxml.keepalive(BACK, seconds=60, say="One moment.")
    assert tree(doc) == tree(sdk(px.SpeakElement("One moment.", language="en-US"),
                                 px.WaitElement(length=60),
                                 px.RedirectElement(BACK, method="POST")))
    assert isinstance(parse_xml(doc)[1], Wait)
    with pytest.raises(UsageError):
        plivoxml.keepalive(BACK, seconds=0)


@pytest.mark.parametrize("reason", ["rejected", "busy"])
def test_reject(reason: str) -> None:
    assert tree(plivoxml.reject(reason)) == tree(sdk(px.HangupElement(reason=reason)))
    assert parse_xml(plivoxml.reject(reason)) == [Hangup(reason)]
    with pytest.raises(UsageError):
        plivoxml.reject("nope")


def test_escaping_round_trips() -> None:
    text = 'Tom & Jerry <said> "hi" \'there\' ]]> é 😀'
    url = "https://h/p?a=1&b=<2>"
    doc = plivoxml.speak_then_listen(text, url, url)
    assert tree(doc) == tree(sdk(_sdk_get_input_with(text, url),
                                 px.RedirectElement(url, method="POST")))
    get_input, redirect = parse_xml(doc)
    assert isinstance(get_input, GetInput) and get_input.action == url
    assert get_input.children[0] == Speak(" ".join(text.split()), "WOMAN", "en-US")
    assert isinstance(redirect, Redirect) and redirect.url == url


def _sdk_get_input_with(text: str, url: str) -> px.GetInputElement:
    g = px.GetInputElement(action=url, method="POST", input_type="dtmf speech",
                           execution_timeout=60, language="en-US", redirect=True)
    g._GetInputElement__speech_end_timeout = "auto"
    g.add_speak(text, language="en-US")
    return g


def test_invalid_xml_characters_are_dropped() -> None:
    doc = plivoxml.speak_then_hangup("a\x00b\x07c\ud800d")
    assert isinstance(parse_xml(doc)[0], Speak)
    assert "abcd" in doc


@pytest.mark.parametrize(("voice", "expected"), [
    (None, None), ("", None), ("WOMAN", "WOMAN"), ("man", "MAN"), ("Polly.Amy", "Polly.Amy"),
    ("alloy", "Polly.Joanna"), ("onyx", "Polly.Brian"), ("matthew", "Polly.Matthew"),
    ("joanna-neural", "Polly.Joanna-Neural"), ("Google.en-US-x", "Polly.Joanna"),
    ("weird voice!", "Polly.Joanna"),
])
def test_speak_voice(voice: str | None, expected: str | None) -> None:
    assert plivoxml.speak_voice(voice) == expected


@pytest.mark.parametrize("doc", [
    "<Response><Dial><Number>1</Number></Dial></Response>",
    "<Response><Speak/></Response>",
    "<Response><Speak voice='Bob'>hi</Speak></Response>",
    "<Response><Speak colour='red'>hi</Speak></Response>",
    "<Response><GetInput action='https://h/a'/></Response>",
    "<Response><GetInput action='https://h/a' inputType='voice'/></Response>",
    "<Response><GetInput action='/relative' inputType='speech'/></Response>",
    "<Response><GetInput action='https://h/a' inputType='speech' executionTimeout='61'/></Response>",
    "<Response><GetInput action='https://h/a' inputType='speech'><Wait/></GetInput></Response>",
    "<Response><Stream>https://h/not-wss</Stream></Response>",
    "<Response><Stream bidirectional='true' audioTrack='both'>wss://h/s</Stream></Response>",
    "<Response><Stream contentType='audio/x-mulaw'>wss://h/s</Stream></Response>",
    "<Response><DTMF>12x</DTMF></Response>",
    "<Response><Hangup reason='annoyed'/></Response>",
    "<Response><Wait length='0'/></Response>",
    "<Response><Redirect/></Response>",
    "<Reply/>",
    "not xml",
])
def test_fake_parser_is_strict(doc: str) -> None:
    with pytest.raises(PlivoXmlError):
        parse_xml(doc)
