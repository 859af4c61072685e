"""A strict Plivo XML reader: XML text in, a list of element objects out (pure, no I/O).

Strict like Plivo: a document it cannot execute is an error (hangup cause 8011
for answer XML, 8012 for action/redirect XML), so a gateway bug shows up as a
failed call in tests instead of being skipped. Unknown attributes are refused too:
Plivo ignores nothing silently that the fake could not simulate.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from urllib.parse import urlsplit

__all__ = [
    "DTMF",
    "Element",
    "GetInput",
    "Hangup",
    "Play",
    "PlivoXmlError",
    "Redirect",
    "Speak",
    "Stream",
    "Wait",
    "parse_xml",
]

_UNSIMULATED = {"Dial", "Conference", "Record", "GetDigits", "Message", "MultiPartyCall",
                "PreAnswer", "User", "Number"}
_DIGITS = re.compile(r"^[0-9A-D*#wW]+$")
_CONTENT_TYPES = ("audio/x-mulaw;rate=8000", "audio/x-l16;rate=8000", "audio/x-l16;rate=16000")
_EXTRA_HEADERS = re.compile(r"^[A-Za-z0-9]+=[A-Za-z0-9]+(,[A-Za-z0-9]+=[A-Za-z0-9]+)*$")
_POLLY = re.compile(r"^Polly\.[A-Za-z0-9_.-]+$")


class PlivoXmlError(Exception):
    """A document Plivo would refuse."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Speak:
    text: str
    voice: str = "WOMAN"
    language: str = "en-US"
    loop: int = 1


@dataclass(frozen=True)
class Play:
    url: str
    loop: int = 1


@dataclass(frozen=True)
class Wait:
    length: int = 1


@dataclass(frozen=True)
class DTMF:
    digits: str
    async_: bool = True


@dataclass(frozen=True)
class Hangup:
    reason: str | None = None
    schedule: int | None = None


@dataclass(frozen=True)
class Redirect:
    url: str
    method: str = "POST"


@dataclass(frozen=True)
class GetInput:
    action: str
    method: str = "POST"
    input_type: frozenset[str] = frozenset({"dtmf"})
    execution_timeout: int = 15
    digit_end_timeout: str = "auto"
    speech_end_timeout: str = "auto"
    finish_on_key: str = "#"
    num_digits: int | None = None
    language: str = "en-US"
    redirect: bool = True
    children: tuple[Speak | Play, ...] = ()


@dataclass(frozen=True)
class Stream:
    url: str
    bidirectional: bool = False
    audio_track: str = "inbound"
    stream_timeout: int = 86400
    status_callback_url: str | None = None
    status_callback_method: str = "POST"
    content_type: str | None = None  # None: Plivo's default (L16 8 kHz)
    extra_headers: str = ""
    keep_call_alive: bool = False
    attributes: dict[str, str] = field(default_factory=dict)


Element = Speak | Play | Wait | DTMF | Hangup | Redirect | GetInput | Stream


def _tag(el: ET.Element) -> str:
    return el.tag.rpartition("}")[2]


def _only(el: ET.Element, allowed: set[str]) -> None:
    extra = set(el.attrib) - allowed
    if extra:
        raise PlivoXmlError(f"<{_tag(el)}> has unknown attribute(s) {sorted(extra)}")


def _no_children(el: ET.Element) -> None:
    if len(el):
        raise PlivoXmlError(f"<{_tag(el)}> cannot contain <{_tag(el[0])}>")


def _int(el: ET.Element, name: str, default: int, lo: int, hi: int) -> int:
    raw = el.get(name)
    if raw is None:
        return default
    if not raw.strip().isdigit() or not lo <= int(raw) <= hi:
        raise PlivoXmlError(f"<{_tag(el)}> {name}={raw!r} must be an integer in {lo}..{hi}")
    return int(raw)


def _bool(el: ET.Element, name: str, default: bool) -> bool:
    raw = el.get(name)
    if raw is None:
        return default
    if raw.lower() not in ("true", "false"):
        raise PlivoXmlError(f"<{_tag(el)}> {name}={raw!r} is not true/false")
    return raw.lower() == "true"


def _method(el: ET.Element, name: str = "method") -> str:
    method = (el.get(name) or "POST").upper()
    if method not in ("GET", "POST"):
        raise PlivoXmlError(f"<{_tag(el)}> {name}={el.get(name)!r} is not GET or POST")
    return method


def _url(el: ET.Element, value: str | None, what: str, schemes: tuple[str, ...]) -> str:
    if not value:
        raise PlivoXmlError(f"<{_tag(el)}> needs {what}")
    parts = urlsplit(value.strip())
    if parts.scheme not in schemes or not parts.hostname:
        raise PlivoXmlError(f"<{_tag(el)}> {what} {value!r} is not an absolute "
                            f"{'/'.join(schemes)} URL")
    return value.strip()


def _timeout(el: ET.Element, name: str) -> str:
    raw = el.get(name, "auto")
    if raw != "auto" and not (raw.isdigit() and 2 <= int(raw) <= 10):
        raise PlivoXmlError(f"<{_tag(el)}> {name}={raw!r} must be 2-10 or 'auto'")
    return raw


def _speak(el: ET.Element) -> Speak:
    _only(el, {"voice", "language", "loop"})
    text = " ".join("".join(el.itertext()).split())
    if not text:
        raise PlivoXmlError("<Speak> has no text")
    voice = el.get("voice", "WOMAN")
    if voice not in ("WOMAN", "MAN") and not _POLLY.match(voice):
        raise PlivoXmlError(f"<Speak> voice={voice!r} is not WOMAN, MAN or Polly.*")
    return Speak(text, voice, el.get("language", "en-US"), _int(el, "loop", 1, 0, 10000))


def _play(el: ET.Element) -> Play:
    _only(el, {"loop"})
    _no_children(el)
    return Play(_url(el, el.text, "a URL", ("http", "https")), _int(el, "loop", 1, 0, 10000))


def _get_input(el: ET.Element) -> GetInput:
    _only(el, {"action", "method", "inputType", "executionTimeout", "digitEndTimeout",
               "speechEndTimeout", "finishOnKey", "numDigits", "speechModel", "hints",
               "language", "interimSpeechResultsCallback",
               "interimSpeechResultsCallbackMethod", "log", "redirect", "profanityFilter"})
    raw_type = el.get("inputType")
    if raw_type is None:
        raise PlivoXmlError("<GetInput> needs inputType")
    input_type = frozenset(raw_type.split())
    if not input_type or not input_type <= {"dtmf", "speech"}:
        raise PlivoXmlError(f"<GetInput> inputType={raw_type!r} is invalid")
    children: list[Speak | Play] = []
    for child in el:
        tag = _tag(child)
        if tag == "Speak":
            children.append(_speak(child))
        elif tag == "Play":
            children.append(_play(child))
        else:
            raise PlivoXmlError(f"<GetInput> cannot contain <{tag}>")
    num = el.get("numDigits")
    return GetInput(
        action=_url(el, el.get("action"), "an action URL", ("http", "https")),
        method=_method(el),
        input_type=input_type,
        execution_timeout=_int(el, "executionTimeout", 15, 5, 60),
        digit_end_timeout=_timeout(el, "digitEndTimeout"),
        speech_end_timeout=_timeout(el, "speechEndTimeout"),
        finish_on_key=el.get("finishOnKey", "#"),
        num_digits=_int(el, "numDigits", 0, 1, 32) if num is not None else None,
        language=el.get("language", "en-US"),
        redirect=_bool(el, "redirect", True),
        children=tuple(children),
    )


def _stream(el: ET.Element) -> Stream:
    allowed = {"bidirectional", "audioTrack", "streamTimeout", "statusCallbackUrl",
               "statusCallbackMethod", "contentType", "extraHeaders", "keepCallAlive"}
    _only(el, allowed)
    _no_children(el)
    bidirectional = _bool(el, "bidirectional", False)
    track = el.get("audioTrack", "inbound")
    if track not in ("inbound", "outbound", "both"):
        raise PlivoXmlError(f"<Stream> audioTrack={track!r} is invalid")
    if bidirectional and track != "inbound":
        raise PlivoXmlError("<Stream> audioTrack must be 'inbound' when bidirectional")
    ctype = el.get("contentType")
    if ctype is not None and ctype not in _CONTENT_TYPES:
        raise PlivoXmlError(f"<Stream> contentType={ctype!r} is not one of {_CONTENT_TYPES}")
    extra = el.get("extraHeaders", "")
    if extra and (len(extra.encode()) > 512 or not _EXTRA_HEADERS.match(extra)):
        raise PlivoXmlError(f"<Stream> extraHeaders={extra!r} must be k=v pairs of "
                            "alphanumerics, at most 512 bytes")
    callback = el.get("statusCallbackUrl")
    return Stream(
        url=_url(el, el.text, "a wss:// URL", ("wss",)),
        bidirectional=bidirectional,
        audio_track=track,
        stream_timeout=_int(el, "streamTimeout", 86400, 1, 86400),
        status_callback_url=_url(el, callback, "statusCallbackUrl", ("http", "https"))
        if callback is not None else None,
        status_callback_method=_method(el, "statusCallbackMethod"),
        content_type=ctype,
        extra_headers=extra,
        keep_call_alive=_bool(el, "keepCallAlive", False),
        attributes=dict(el.attrib),
    )


def _element(el: ET.Element) -> Element:
    tag = _tag(el)
    if tag == "Speak":
        return _speak(el)
    if tag == "Play":
        return _play(el)
    if tag == "Wait":
        _only(el, {"length", "silence", "minSilence", "beep"})
        _no_children(el)
        return Wait(_int(el, "length", 1, 1, 86400))
    if tag == "DTMF":
        _only(el, {"async"})
        _no_children(el)
        digits = (el.text or "").strip()
        if not _DIGITS.match(digits):
            raise PlivoXmlError(f"<DTMF> digits {digits!r} are invalid")
        return DTMF(digits, _bool(el, "async", True))
    if tag == "Hangup":
        _only(el, {"reason", "schedule"})
        _no_children(el)
        reason = el.get("reason")
        if reason is not None and reason not in ("rejected", "busy"):
            raise PlivoXmlError(f"<Hangup> reason={reason!r} is not rejected or busy")
        schedule = _int(el, "schedule", 0, 1, 86400) if el.get("schedule") else None
        return Hangup(reason, schedule)
    if tag == "Redirect":
        _only(el, {"method"})
        _no_children(el)
        return Redirect(_url(el, el.text, "a URL", ("http", "https")), _method(el))
    if tag == "GetInput":
        return _get_input(el)
    if tag == "Stream":
        return _stream(el)
    if tag in _UNSIMULATED:
        raise PlivoXmlError(f"<{tag}> is valid Plivo XML but not simulated by the fake")
    raise PlivoXmlError(f"unknown Plivo XML element <{tag}>")


def parse_xml(text: str | bytes) -> list[Element]:
    """Parse a Plivo XML document into elements, raising :class:`PlivoXmlError`."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise PlivoXmlError(f"document parse failure: {exc}") from None
    if _tag(root) != "Response":
        raise PlivoXmlError(f"root element is <{_tag(root)}>, expected <Response>")
    if root.attrib:
        raise PlivoXmlError("<Response> takes no attributes")
    return [_element(el) for el in root]
