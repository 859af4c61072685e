"""The fake's TwiML reader (pure), its audio helpers and its public surface."""

from __future__ import annotations

import pathlib
import re

import pytest

import voicecall.testing.fake_twilio as ftw
from voicecall.carriers.twilio import twiml as gateway_twiml
from voicecall.testing.fake_twilio import TwimlError, parse_twiml, rms, silence, tone_burst
from voicecall.testing.fake_twilio._twiml import (
    Connect,
    Enqueue,
    Gather,
    Hangup,
    Pause,
    Play,
    Redirect,
    Reject,
    Say,
)


def test_every_gateway_document_is_understood() -> None:
    """What the gateway's TwiML builders emit, the fake can execute."""
    assert parse_twiml(gateway_twiml.empty()) == []
    assert parse_twiml(gateway_twiml.say_then_hangup("Hi", voice="Polly.Joanna", pause_s=1)) == [
        Say("Hi", "Polly.Joanna", "en-US"), Pause(1.0), Hangup()]
    gather, redirect = parse_twiml(gateway_twiml.gather("https://h/g?turn=1"))
    assert isinstance(gather, Gather) and isinstance(redirect, Redirect)
    assert gather.input == frozenset({"speech"}) and gather.timeout == 120
    assert gather.action == "https://h/g?turn=1" and gather.speech_timeout == "auto"
    say, gather, _ = parse_twiml(gateway_twiml.say_then_gather("Next?", "https://h/g"))
    assert say == Say("Next?", None, "en-US") and isinstance(gather, Gather)
    [connect] = parse_twiml(gateway_twiml.connect_stream("wss://h/s", parameters={"t": "1"}))
    assert isinstance(connect, Connect) and connect.stream.parameters == {"t": "1"}
    play, redirect = parse_twiml(gateway_twiml.play_digits_then_redirect("1w2#", "https://h/v"))
    assert play == Play(None, "1w2#") and redirect == Redirect("https://h/v", "POST")
    assert parse_twiml(gateway_twiml.pause(30)) == [Pause(30.0)]
    assert parse_twiml(gateway_twiml.reject("busy")) == [Reject("busy")]
    say, enqueue = parse_twiml(gateway_twiml.hold_queue("https://h/hold"))
    assert enqueue == Enqueue("hold-queue", "https://h/hold")


@pytest.mark.parametrize(("doc", "code"), [
    ("<Response><Say>unclosed</Response>", 12100),
    ("<Other/>", 12100),
    ("<Response><Dance/></Response>", 12200),
    ("<Response><Dial>+15550001111</Dial></Response>", 12200),  # real verb, not simulated
    ("<Response><Gather><Hangup/></Gather></Response>", 12200),
    ('<Response><Gather input="smoke"/></Response>', 12200),
    ('<Response><Pause length="soon"/></Response>', 12200),
    ('<Response><Reject reason="maybe"/></Response>', 12200),
    ("<Response><Redirect/></Response>", 12200),
    ("<Response><Connect/></Response>", 12200),
    ('<Response><Connect><Stream url="wss://h/s"><Say/></Stream></Connect></Response>', 12200),
    ('<Response><Play/></Response>', 12200),
])
def test_strict_like_twilio(doc: str, code: int) -> None:
    with pytest.raises(TwimlError) as info:
        parse_twiml(doc)
    assert info.value.code == code


def test_say_keeps_ssml_words_and_gather_defaults() -> None:
    [say] = parse_twiml('<Response><Say loop="2">Hello <prosody rate="slow">there</prosody>'
                        "</Say></Response>")
    assert say == Say("Hello there", loop=2)
    [gather] = parse_twiml("<Response><Gather/></Response>")
    assert gather == Gather()  # input=dtmf, timeout=5, method=POST, no action


def test_tone_burst_is_speech_then_silence() -> None:
    audio = tone_burst("one two three")
    assert len(audio) % 160 == 0 and audio == tone_burst("one two three")
    assert audio != tone_burst("something else entirely")
    frames = [audio[i:i + 160] for i in range(0, len(audio), 160)]
    loud = [rms(f) > 0.05 for f in frames]
    first_quiet = loud.index(False)
    assert first_quiet >= 10 and not any(loud[first_quiet:])  # >= 200 ms speech, then quiet
    assert set(silence(100)) == {0xFF} and rms(silence(100)) == 0.0


def test_public_surface() -> None:
    for name in ftw.__all__:
        assert hasattr(ftw, name), name
    # The official SDK is a test oracle only: the fake must never import it.
    package = pathlib.Path(ftw.__file__).parent
    for source in package.glob("*.py"):
        assert not re.search(r"^\s*(from|import)\s+twilio\b", source.read_text(), re.M), source
