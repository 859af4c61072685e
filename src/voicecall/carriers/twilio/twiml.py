"""TwiML builders: every document the gateway sends to Twilio. Pure string producers.

Built with ElementTree so escaping is never hand-rolled; the tests parse each result
next to what the official SDK's ``VoiceResponse`` builds for the same verbs and compare
the element trees. Builders take the ``voice`` attribute as given; resolve config voice
names with ``polly_voice`` first.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping

from voicecall.carriers.xmldoc import element as _el
from voicecall.carriers.xmldoc import render as _render
from voicecall.errors import UsageError

# ``Twiml=`` on create/update is capped at 4000 characters by Twilio; longer documents
# must be served from a webhook instead.
INLINE_TWIML_LIMIT = 4000
# speech-gather.ts: Twilio's 5 s default cuts people off while they think.
GATHER_TIMEOUT_S = 120
DEFAULT_POLLY_VOICE = "Polly.Joanna"
HOLD_MESSAGE = "Please hold while we connect you."


# OpenAI voice names (config often reuses them for TwiML) -> closest Polly voice, as in
# the reference's voice-mapping.ts; Twilio's legacy voices map to their Polly
# equivalents, since Twilio itself now serves them through Polly.
_VOICE_ALIASES = {
    "alloy": "Polly.Joanna",
    "echo": "Polly.Matthew",
    "fable": "Polly.Amy",
    "onyx": "Polly.Brian",
    "nova": "Polly.Salli",
    "shimmer": "Polly.Kimberly",
    "alice": "Polly.Joanna",
    "woman": "Polly.Joanna",
    "man": "Polly.Matthew",
}
# A bare Polly voice name, optionally with an engine suffix: "Joanna", "joanna-neural".
_BARE_POLLY = re.compile(r"^([A-Za-z]+)(-(?:Neural|Generative|LongForm))?$", re.IGNORECASE)
# Provider-qualified ids pass through, but only when token-shaped.
_QUALIFIED = re.compile(r"^(?:Polly|Google)\.[A-Za-z0-9_.-]+$")

# <Play digits>: Twilio accepts 0-9 * # and w/W (0.5 s / 1 s pauses) and rejects
# anything else with error 13430. Dialer-style pauses become a 0.5 s ``w``.
_PLAY_DIGITS = re.compile(r"^[0-9*#wW]+$")
_PAUSE_ALIASES = str.maketrans({"p": "w", "P": "w", ",": "w"})
REJECT_REASONS = ("rejected", "busy")


def polly_voice(voice: str | None) -> str | None:
    """A config voice name -> a Twilio ``<Say voice>`` value (``None`` = Twilio default).

    ``Polly.*`` / ``Google.*`` ids are kept; OpenAI and legacy aliases are mapped;
    a bare Polly name ("Joanna", "Matthew-Neural") gets its ``Polly.`` prefix; anything
    else falls back to ``Polly.Joanna`` rather than letting Twilio reject the call.
    """
    if voice is None or not voice.strip():
        return None
    name = voice.strip()
    if _QUALIFIED.match(name):
        return name
    alias = _VOICE_ALIASES.get(name.lower())
    if alias:
        return alias
    bare = _BARE_POLLY.match(name)
    if bare:
        suffix = bare.group(2) or ""
        return "Polly." + bare.group(1).capitalize() + suffix.title()
    return DEFAULT_POLLY_VOICE


def _say(parent: ET.Element, text: str, voice: str | None, language: str | None) -> None:
    _el(parent, "Say", text, language=language, voice=voice)


def _gather_and_redirect(root: ET.Element, action_url: str, language: str,
                         timeout_s: int) -> None:
    _el(root, "Gather", input="speech", speechTimeout="auto", action=action_url,
        method="POST", language=language, timeout=timeout_s)
    # Without input Twilio falls through to the next verb; with nothing there it would
    # hang up. Redirecting back to the action URL lets the gateway re-prompt.
    _el(root, "Redirect", action_url, method="POST")


def empty() -> str:
    """``<Response/>``: acknowledge (status callbacks, replays) without doing anything."""
    return _render(ET.Element("Response"))


def say_then_hangup(text: str, *, voice: str | None = None, language: str | None = "en-US",
                    pause_s: int = 0) -> str:
    """Notify mode: speak once, optionally pause so the last words are not clipped, hang up."""
    root = ET.Element("Response")
    _say(root, text, voice, language)
    if pause_s > 0:
        _el(root, "Pause", length=int(pause_s))
    _el(root, "Hangup")
    return _render(root)


def say_then_gather(text: str, action_url: str, *, voice: str | None = None,
                    language: str = "en-US", timeout_s: int = GATHER_TIMEOUT_S) -> str:
    """Conversation turn without a media stream: say ``text``, then listen for speech."""
    root = ET.Element("Response")
    _say(root, text, voice, language)
    _gather_and_redirect(root, action_url, language, timeout_s)
    return _render(root)


def gather(action_url: str, *, language: str = "en-US",
           timeout_s: int = GATHER_TIMEOUT_S) -> str:
    """Listen for one speech turn; ``action_url`` carries the turn token."""
    root = ET.Element("Response")
    _gather_and_redirect(root, action_url, language, timeout_s)
    return _render(root)


def connect_stream(stream_url: str, *, parameters: Mapping[str, str] | None = None,
                   then_redirect: str | None = None) -> str:
    """Bidirectional Media Stream. Auth data goes in ``<Parameter>``s because Twilio
    drops query strings from stream URLs; they arrive in ``start.customParameters``.

    ``then_redirect``: where Twilio goes when the socket closes. Pointing it back at
    the webhook lets a dropped stream be re-established inside the disconnect grace.
    """
    root = ET.Element("Response")
    stream = _el(_el(root, "Connect"), "Stream", url=stream_url)
    for name, value in (parameters or {}).items():
        _el(stream, "Parameter", name=name, value=value)
    if then_redirect:
        _el(root, "Redirect", then_redirect, method="POST")
    return _render(root)


def normalize_play_digits(digits: str) -> str:
    """Digits for ``<Play digits>``: ``p``/``P``/``,`` become ``w``; other junk is refused."""
    out = digits.strip().translate(_PAUSE_ALIASES)
    if not _PLAY_DIGITS.match(out):
        raise UsageError(
            f"invalid DTMF digits {digits!r}: Twilio plays only 0-9, *, # and w/W pauses"
        )
    return out


def play_digits_then_redirect(digits: str, redirect_url: str) -> str:
    """Send DTMF on a live call, then hand control back to the webhook."""
    root = ET.Element("Response")
    _el(root, "Play", digits=normalize_play_digits(digits))
    _el(root, "Redirect", redirect_url, method="POST")
    return _render(root)


def pause(seconds: int) -> str:
    """Keep the call open doing nothing (e.g. waiting for a stream or the next update)."""
    if seconds < 1:
        raise UsageError("pause must be at least 1 second")
    root = ET.Element("Response")
    _el(root, "Pause", length=int(seconds))
    return _render(root)


def keepalive(redirect_url: str, *, seconds: int = 60, say: str | None = None,
              voice: str | None = None, language: str = "en-US") -> str:
    """Hold the line (optionally after saying something) while the gateway works.

    Twilio hangs up when a document runs out of verbs, so the pause ends in a
    redirect back to the webhook, which answers with the next document.
    """
    root = ET.Element("Response")
    if say:
        _say(root, say, voice, language)
    _el(root, "Pause", length=int(seconds))
    _el(root, "Redirect", redirect_url, method="POST")
    return _render(root)


def reject(reason: str = "rejected") -> str:
    """Refuse an inbound call before answering it (caller is not billed)."""
    if reason not in REJECT_REASONS:
        raise UsageError(f"reject reason must be one of {', '.join(REJECT_REASONS)}")
    root = ET.Element("Response")
    _el(root, "Reject", reason=reason)
    return _render(root)


def hold_queue(wait_url: str, *, message: str = HOLD_MESSAGE, voice: str | None = None,
               queue: str = "hold-queue") -> str:
    """Park an inbound caller while another call holds the only media stream."""
    root = ET.Element("Response")
    _say(root, message, voice, None)
    _el(root, "Enqueue", queue, waitUrl=wait_url)
    return _render(root)


def fits_inline(twiml: str) -> bool:
    """Whether ``twiml`` may go in a ``Twiml=`` REST parameter (Twilio's 4000-char cap)."""
    return len(twiml) <= INLINE_TWIML_LIMIT
