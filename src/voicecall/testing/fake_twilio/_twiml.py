"""A strict TwiML reader: XML text in, a list of verb objects out (pure, no I/O).

Strict like Twilio: anything it cannot execute is an application error, so a
gateway bug shows up as a failed call in tests instead of being skipped.
``xml.etree`` is fine here: the input is our own gateway's output in tests.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = [
    "Connect",
    "Enqueue",
    "Gather",
    "Hangup",
    "Pause",
    "Play",
    "Redirect",
    "Reject",
    "Say",
    "Stream",
    "TwimlError",
    "Verb",
    "parse_twiml",
]

# Verbs Twilio knows but the fake does not simulate: a clear error beats a silent skip.
_UNSIMULATED = {"Dial", "Record", "Sms", "Message", "Leave", "Refer", "Pay", "Prompt",
                "Start", "Stop", "Echo", "Queue", "Client", "Conference", "Number", "Sip"}


class TwimlError(Exception):
    """A document Twilio would refuse; ``code`` is the Twilio error code it logs."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Say:
    text: str
    voice: str | None = None
    language: str | None = None
    loop: int = 1


@dataclass(frozen=True)
class Pause:
    length: float = 1.0


@dataclass(frozen=True)
class Hangup:
    pass


@dataclass(frozen=True)
class Reject:
    reason: str = "rejected"


@dataclass(frozen=True)
class Play:
    url: str | None = None
    digits: str | None = None
    loop: int = 1


@dataclass(frozen=True)
class Redirect:
    url: str
    method: str = "POST"


@dataclass(frozen=True)
class Gather:
    input: frozenset[str] = frozenset({"dtmf"})
    action: str | None = None
    method: str = "POST"
    language: str = "en-US"
    timeout: float = 5.0
    speech_timeout: str | None = None
    action_on_empty_result: bool = False
    num_digits: int | None = None
    finish_on_key: str = "#"
    children: tuple[Say | Play | Pause, ...] = ()


@dataclass(frozen=True)
class Enqueue:
    name: str
    wait_url: str | None = None


@dataclass(frozen=True)
class Stream:
    url: str
    name: str | None = None
    track: str | None = None
    status_callback: str | None = None
    parameters: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Connect:
    stream: Stream
    action: str | None = None
    method: str = "POST"


Verb = Say | Pause | Hangup | Reject | Play | Redirect | Gather | Enqueue | Connect


def _tag(el: ET.Element) -> str:
    # Tolerate a namespace the way Twilio tolerates one: by ignoring it.
    return el.tag.rpartition("}")[2]


def _text(el: ET.Element) -> str:
    # itertext() keeps words inside SSML children such as <prosody>.
    return " ".join("".join(el.itertext()).split())


def _number(el: ET.Element, name: str, default: float, *, minimum: float = 0) -> float:
    raw = el.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise TwimlError(12200, f"<{_tag(el)}> {name}={raw!r} is not a number") from None
    if value < minimum:
        raise TwimlError(12200, f"<{_tag(el)}> {name}={raw!r} is out of range")
    return value


def _int(el: ET.Element, name: str, default: int) -> int:
    value = _number(el, name, default)
    if value != int(value):
        raise TwimlError(12200, f"<{_tag(el)}> {name}={el.get(name)!r} is not an integer")
    return int(value)


def _method(el: ET.Element) -> str:
    method = (el.get("method") or "POST").upper()
    if method not in ("GET", "POST"):
        raise TwimlError(12200, f"<{_tag(el)}> method={el.get('method')!r} is not GET or POST")
    return method


def _bool(el: ET.Element, name: str) -> bool:
    raw = (el.get(name) or "false").lower()
    if raw not in ("true", "false"):
        raise TwimlError(12200, f"<{_tag(el)}> {name}={el.get(name)!r} is not true/false")
    return raw == "true"


def _no_children(el: ET.Element) -> None:
    if len(el):
        raise TwimlError(12200, f"<{_tag(el)}> cannot contain <{_tag(el[0])}>")


def _say(el: ET.Element) -> Say:
    return Say(_text(el), el.get("voice"), el.get("language"), _int(el, "loop", 1))


def _play(el: ET.Element) -> Play:
    _no_children(el)
    url = (el.text or "").strip() or None
    digits = el.get("digits")
    if url is None and digits is None:
        raise TwimlError(12200, "<Play> needs a URL or a digits attribute")
    return Play(url, digits, _int(el, "loop", 1))


def _pause(el: ET.Element) -> Pause:
    _no_children(el)
    return Pause(_number(el, "length", 1.0))


def _gather(el: ET.Element) -> Gather:
    inputs = frozenset((el.get("input") or "dtmf").split())
    if not inputs or not inputs <= {"dtmf", "speech"}:
        raise TwimlError(12200, f"<Gather> input={el.get('input')!r} is invalid")
    children: list[Say | Play | Pause] = []
    builders: dict[str, Callable[[ET.Element], Say | Play | Pause]] = {
        "Say": _say, "Play": _play, "Pause": _pause}
    for child in el:
        builder = builders.get(_tag(child))
        if builder is None:
            raise TwimlError(12200, f"<Gather> cannot contain <{_tag(child)}>")
        children.append(builder(child))
    num_digits = el.get("numDigits")
    return Gather(
        input=inputs,
        action=el.get("action"),
        method=_method(el),
        language=el.get("language") or "en-US",
        timeout=_number(el, "timeout", 5.0),
        speech_timeout=el.get("speechTimeout"),
        action_on_empty_result=_bool(el, "actionOnEmptyResult"),
        num_digits=_int(el, "numDigits", 0) if num_digits is not None else None,
        finish_on_key=el.get("finishOnKey", "#"),
        children=tuple(children),
    )


def _connect(el: ET.Element) -> Connect:
    nouns = list(el)
    if len(nouns) != 1:
        raise TwimlError(12200, "<Connect> must contain exactly one noun")
    noun = nouns[0]
    if _tag(noun) != "Stream":
        raise TwimlError(12200, f"<Connect><{_tag(noun)}> is not simulated by the fake")
    url = noun.get("url")
    if not url:
        raise TwimlError(12200, "<Stream> needs a url attribute")
    params: dict[str, str] = {}
    for child in noun:
        if _tag(child) != "Parameter":
            raise TwimlError(12200, f"<Stream> cannot contain <{_tag(child)}>")
        name = child.get("name")
        if not name:
            raise TwimlError(12200, "<Parameter> needs a name")
        params[name] = child.get("value", "")
    stream = Stream(url, noun.get("name"), noun.get("track"), noun.get("statusCallback"), params)
    return Connect(stream, el.get("action"), _method(el))


def _verb(el: ET.Element) -> Verb:
    tag = _tag(el)
    if tag == "Say":
        return _say(el)
    if tag == "Pause":
        return _pause(el)
    if tag == "Hangup":
        _no_children(el)
        return Hangup()
    if tag == "Reject":
        _no_children(el)
        reason = el.get("reason", "rejected")
        if reason not in ("rejected", "busy"):
            raise TwimlError(12200, f"<Reject> reason={reason!r} is invalid")
        return Reject(reason)
    if tag == "Play":
        return _play(el)
    if tag == "Redirect":
        _no_children(el)
        url = (el.text or "").strip()
        if not url:
            raise TwimlError(12200, "<Redirect> needs a URL")
        return Redirect(url, _method(el))
    if tag == "Gather":
        return _gather(el)
    if tag == "Enqueue":
        _no_children(el)
        return Enqueue((el.text or "").strip(), el.get("waitUrl"))
    if tag == "Connect":
        return _connect(el)
    if tag in _UNSIMULATED:
        raise TwimlError(12200, f"<{tag}> is valid TwiML but not simulated by the fake")
    raise TwimlError(12200, f"unknown TwiML verb <{tag}>")


def parse_twiml(text: str | bytes) -> list[Verb]:
    """Parse a TwiML document into verbs, raising :class:`TwimlError` as Twilio would."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise TwimlError(12100, f"Document parse failure: {exc}") from None
    if _tag(root) != "Response":
        raise TwimlError(12100, f"root element is <{_tag(root)}>, expected <Response>")
    return [_verb(el) for el in root]
