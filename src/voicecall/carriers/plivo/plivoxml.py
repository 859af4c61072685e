"""Plivo XML builders: every document the gateway returns to Plivo. Pure string producers.

Built with ElementTree so escaping is never hand-rolled; the tests parse each result
next to what the official SDK's ``plivoxml`` builds for the same elements and compare
the trees. Builders take the ``voice`` attribute as given; resolve config voice names
with ``speak_voice`` first.

Documents used (carriers.md §3.5):

* ``<Speak>`` then ``<Wait>``/``<Hangup>`` -- notify calls, goodbye words;
* ``<GetInput inputType="dtmf speech" action=...turnToken...>`` with the prompt nested
  (so the caller can talk over it) and a ``<Redirect>`` after it, because Plivo falls
  through to the next element when nobody says anything;
* ``<Stream bidirectional="true" keepCallAlive="true" contentType=...>`` with the
  stream token in ``extraHeaders``, then a ``<Redirect>`` so a stream that ends while
  the call is up comes back to the webhook (and can be re-established);
* ``<DTMF async="false">`` then ``<Redirect>`` -- pre-connect digits;
* ``<Wait>`` + ``<Redirect>`` -- hold the line while the gateway works;
* ``<Hangup reason="rejected"/>`` as the first element -- refuse an inbound call
  without answering it.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from voicecall.carriers.xmldoc import element as _el
from voicecall.carriers.xmldoc import render as _render
from voicecall.errors import UsageError

CONTENT_TYPE = "application/xml"
# GetInput executionTimeout is 5-60 s, counted after the nested prompt; the longest
# Plivo allows, so thinking callers are not cut off (a silent turn redirects back and
# the webhook re-opens it).
EXECUTION_TIMEOUT_S = 60
SPEECH_END_TIMEOUT = "auto"
INPUT_TYPE = "dtmf speech"
DEFAULT_POLLY_VOICE = "Polly.Joanna"
REJECT_REASONS = ("rejected", "busy")

# OpenAI voice names -> closest Polly voice (as for Twilio); Plivo's own voices kept.
_VOICE_ALIASES = {
    "alloy": "Polly.Joanna",
    "echo": "Polly.Matthew",
    "fable": "Polly.Amy",
    "onyx": "Polly.Brian",
    "nova": "Polly.Salli",
    "shimmer": "Polly.Kimberly",
    "alice": "Polly.Joanna",
    "woman": "WOMAN",
    "man": "MAN",
}
_BARE_POLLY = re.compile(r"^([A-Za-z]+)(-(?:Neural|Generative|LongForm))?$", re.IGNORECASE)
_POLLY = re.compile(r"^Polly\.[A-Za-z0-9_.-]+$")
# <DTMF>: digits, *, #, A-D and w/W pauses (0.5 s / 1 s); dialler-style p/P/, become w.
_DIGITS = re.compile(r"^[0-9A-D*#wW]+$")
_PAUSE_ALIASES = str.maketrans({"p": "w", "P": "w", ",": "w"})
_CONTENT_TYPES = ("audio/x-mulaw;rate=8000", "audio/x-l16;rate=8000", "audio/x-l16;rate=16000")


def speak_voice(voice: str | None) -> str | None:
    """A config voice name -> a Plivo ``<Speak voice>`` (``None`` = Plivo's default).

    ``WOMAN``/``MAN`` and ``Polly.*`` are kept; OpenAI aliases map to Polly voices; a
    bare Polly name gets its prefix; anything else becomes ``Polly.Joanna`` rather
    than a document Plivo would refuse.
    """
    if voice is None or not voice.strip():
        return None
    name = voice.strip()
    if name in ("WOMAN", "MAN") or _POLLY.match(name):
        return name
    alias = _VOICE_ALIASES.get(name.lower())
    if alias:
        return alias
    bare = _BARE_POLLY.match(name)
    if bare:
        return "Polly." + bare.group(1).capitalize() + (bare.group(2) or "").title()
    return DEFAULT_POLLY_VOICE


def _speak(parent: ET.Element, text: str, voice: str | None, language: str | None) -> None:
    _el(parent, "Speak", text, voice=voice, language=language)


def _redirect(parent: ET.Element, url: str) -> None:
    _el(parent, "Redirect", url, method="POST")


def _get_input(parent: ET.Element, action_url: str, language: str,
               timeout_s: int) -> ET.Element:
    if not 5 <= timeout_s <= 60:
        raise UsageError("GetInput executionTimeout must be 5-60 seconds")
    return _el(parent, "GetInput", action=action_url, method="POST", inputType=INPUT_TYPE,
               executionTimeout=timeout_s, speechEndTimeout=SPEECH_END_TIMEOUT,
               language=language, redirect="true")


def empty() -> str:
    """``<Response/>``: acknowledge (ring/hangup callbacks, ended calls)."""
    return _render(ET.Element("Response"))


def speak_then_hangup(text: str, *, voice: str | None = None, language: str | None = "en-US",
                      wait_s: int = 0) -> str:
    """Notify mode and goodbyes: speak, optionally wait so the last words are heard, hang up."""
    root = ET.Element("Response")
    _speak(root, text, voice, language)
    if wait_s > 0:
        _el(root, "Wait", length=int(wait_s))
    _el(root, "Hangup")
    return _render(root)


def speak_then_listen(text: str, action_url: str, redirect_url: str, *,
                      voice: str | None = None, language: str = "en-US",
                      timeout_s: int = EXECUTION_TIMEOUT_S) -> str:
    """A conversation turn without a stream: speak ``text`` as the GetInput prompt."""
    root = ET.Element("Response")
    _speak(_get_input(root, action_url, language, timeout_s), text, voice, language)
    _redirect(root, redirect_url)
    return _render(root)


def listen(action_url: str, redirect_url: str, *, language: str = "en-US",
           timeout_s: int = EXECUTION_TIMEOUT_S) -> str:
    """Open one caller turn; ``action_url`` carries the turn token."""
    root = ET.Element("Response")
    _get_input(root, action_url, language, timeout_s)
    _redirect(root, redirect_url)
    return _render(root)


def stream(stream_url: str, *, content_type: str = "audio/x-mulaw;rate=8000",
           extra_headers: str | None = None, then_redirect: str | None = None) -> str:
    """A bidirectional audio stream that holds the call (``keepCallAlive``).

    ``extra_headers`` (``k=v,k2=v2``, alphanumerics) comes back in the ``start``
    frame; ``then_redirect`` is fetched when the stream ends with the call still up.
    """
    if content_type not in _CONTENT_TYPES:
        raise UsageError(f"stream contentType must be one of {', '.join(_CONTENT_TYPES)}")
    if extra_headers is not None and (len(extra_headers.encode()) > 512 or not re.fullmatch(
            r"[A-Za-z0-9]+=[A-Za-z0-9]+(,[A-Za-z0-9]+=[A-Za-z0-9]+)*", extra_headers)):
        raise UsageError("stream extraHeaders must be k=v pairs of alphanumerics, <= 512 bytes")
    root = ET.Element("Response")
    _el(root, "Stream", stream_url, bidirectional="true", audioTrack="inbound",
        keepCallAlive="true", contentType=content_type, extraHeaders=extra_headers)
    if then_redirect:
        _redirect(root, then_redirect)
    return _render(root)


def normalize_digits(digits: str) -> str:
    """Digits for ``<DTMF>`` and the DTMF API: ``p``/``P``/``,`` become ``w``; junk is refused."""
    out = digits.strip().translate(_PAUSE_ALIASES)
    if not _DIGITS.match(out):
        raise UsageError(
            f"invalid DTMF digits {digits!r}: Plivo sends only 0-9, A-D, *, # and w/W pauses")
    return out


def dtmf_then_redirect(digits: str, redirect_url: str) -> str:
    """Send digits (finishing before anything else happens), then back to the webhook."""
    root = ET.Element("Response")
    _el(root, "DTMF", normalize_digits(digits), **{"async": "false"})
    _redirect(root, redirect_url)
    return _render(root)


def keepalive(redirect_url: str, *, seconds: int = 60, say: str | None = None,
              voice: str | None = None, language: str = "en-US") -> str:
    """Hold the line (optionally after speaking) while the gateway works.

    Plivo hangs up when a document runs out of elements, so the wait ends in a
    redirect back to the webhook, which answers with the next document.
    """
    if seconds < 1:
        raise UsageError("wait must be at least 1 second")
    root = ET.Element("Response")
    if say:
        _speak(root, say, voice, language)
    _el(root, "Wait", length=int(seconds))
    _redirect(root, redirect_url)
    return _render(root)


def reject(reason: str = "rejected") -> str:
    """Refuse an inbound call before answering it (first element: the caller is not billed)."""
    if reason not in REJECT_REASONS:
        raise UsageError(f"reject reason must be one of {', '.join(REJECT_REASONS)}")
    root = ET.Element("Response")
    _el(root, "Hangup", reason=reason)
    return _render(root)


def hangup() -> str:
    root = ET.Element("Response")
    _el(root, "Hangup")
    return _render(root)
