"""Every Call Control request body the gateway sends, as pure builders.

Each builder returns a ``Command``: the action name (``None`` for the dial itself,
which is ``POST /calls``) and the JSON body, in the exact shape the official SDK
sends (carriers.md §2.1; bodies are checked against ``telnyx`` 4.189 in the tests).

``command_id``s are deterministic (``voicecall-<kind>-<callId>[-<seq>]``): a retry
of the same logical command (our REST shell retries 429/5xx) carries the same id, and
Telnyx ignores a repeated ``command_id`` on the same call, so a retry after a lost
response never speaks twice or answers twice. Distinct commands get distinct ids.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from voicecall.errors import UsageError

SPEAK_LIMIT = 3000  # characters per speak payload (Telnyx)
DEFAULT_VOICE = "AWS.Polly.Joanna-Neural"
DEFAULT_LANGUAGE = "en-US"
DTMF_DURATION_MS = 250  # Telnyx default per digit (100-500 allowed)
DTMF_GAP_MS = 100  # assumed inter-digit gap when estimating how long digits take
TRANSCRIPTION_ENGINE = "Google"

_DTMF = re.compile(r"^[0-9A-D*#wW]+$")
_PAUSE_ALIASES = str.maketrans({"p": "w", "P": "w", ",": "w"})
_QUALIFIED_VOICE = re.compile(
    r"^(AWS\.Polly|Azure|ElevenLabs|Telnyx|Minimax|Resemble|Inworld|FishAudio|Soniox|xAI"
    r"|Humain)\.")
_BARE_POLLY = re.compile(r"^(Polly\.)?([A-Z][a-z]+)(-Neural|-Generative)?$")
_SPEAK_LANGUAGES = frozenset({
    "arb", "cmn-CN", "cy-GB", "da-DK", "de-DE", "en-AU", "en-GB", "en-GB-WLS", "en-IN",
    "en-US", "es-ES", "es-MX", "es-US", "fr-CA", "fr-FR", "hi-IN", "is-IS", "it-IT",
    "ja-JP", "ko-KR", "nb-NO", "nl-NL", "pl-PL", "pt-BR", "pt-PT", "ro-RO", "ru-RU",
    "sv-SE", "tr-TR"})

RejectCause = Literal["CALL_REJECTED", "NOT_FOUND", "TEMPORARILY_UNAVAILABLE", "USER_BUSY"]


@dataclass(frozen=True)
class Command:
    """``<method> /calls/{id}/actions/<action>`` with ``body`` (``action`` None: the dial,
    ``POST /calls``). Every command is a POST except ``client_state_update`` (PUT)."""

    action: str | None
    body: Mapping[str, Any] = field(default_factory=dict)
    method: str = "POST"

    @property
    def command_id(self) -> str | None:
        value = self.body.get("command_id")
        return value if isinstance(value, str) else None


@dataclass(frozen=True)
class StreamParams:
    """Bidirectional media streaming: mu-law 8 kHz both ways, inbound track to us."""

    url: str
    auth_token: str | None = None
    codec: str = "PCMU"
    sample_rate: int = 8000
    track: str = "inbound_track"
    target_legs: str = "self"

    def fields(self, *, command: Literal["dial", "answer", "streaming_start"]) -> dict[str, Any]:
        out: dict[str, Any] = {
            "stream_url": self.url,
            "stream_track": self.track,
            "stream_codec": self.codec,
            "stream_bidirectional_mode": "rtp",
            "stream_bidirectional_codec": self.codec,
            "stream_bidirectional_target_legs": self.target_legs,
        }
        # The SDK's answer params have neither the sampling rate nor the auth token.
        if command != "answer":
            out["stream_bidirectional_sampling_rate"] = self.sample_rate
            if self.auth_token:
                out["stream_auth_token"] = self.auth_token
        return out


def command_id(kind: str, call_id: str, seq: int | str | None = None) -> str:
    return f"voicecall-{kind}-{call_id}" + ("" if seq is None else f"-{seq}")


# --- values ----------------------------------------------------------------------------

def voice_for(voice: str | None) -> str:
    """A config voice name -> a Telnyx ``speak.voice``.

    Provider-qualified ids (``AWS.Polly.Joanna-Neural``, ``Azure.…``, ``Telnyx.…``) are
    kept; a bare Polly name (``Joanna``, ``Polly.Matthew-Neural``) gets ``AWS.Polly.``;
    the legacy ``male``/``female`` of basic service are kept; anything else (an OpenAI
    or ElevenLabs voice id meant for the streaming TTS) falls back to the default
    rather than letting Telnyx refuse the command.
    """
    name = (voice or "").strip()
    if not name:
        return DEFAULT_VOICE
    if name.lower() in ("male", "female"):
        return name.lower()
    if _QUALIFIED_VOICE.match(name):
        return name
    bare = _BARE_POLLY.match(name)
    if bare:
        return f"AWS.Polly.{bare.group(2)}{bare.group(3) or ''}"
    return DEFAULT_VOICE


def speak_language(language: str | None) -> str:
    lang = (language or "").strip()
    return lang if lang in _SPEAK_LANGUAGES else DEFAULT_LANGUAGE


def transcription_language(language: str | None) -> str:
    """Google's short code (``en-US`` -> ``en``), as the SDK's Google config accepts."""
    return ((language or DEFAULT_LANGUAGE).strip().split("-")[0] or "en").lower()


def normalize_dtmf(digits: str) -> str:
    """Digits for ``send_dtmf``: ``p``/``P``/``,`` become ``w``; other junk is refused."""
    out = digits.strip().translate(_PAUSE_ALIASES)
    if not _DTMF.match(out):
        raise UsageError(f"invalid DTMF digits {digits!r}: Telnyx sends only 0-9, A-D, *, # "
                         "and w/W pauses")
    return out


def dtmf_duration_s(digits: str, duration_ms: int = DTMF_DURATION_MS) -> float:
    """About how long Telnyx takes to play ``digits`` (to hold speech until they are out)."""
    total_ms = 0
    for d in normalize_dtmf(digits):
        total_ms += 500 if d == "w" else 1000 if d == "W" else duration_ms + DTMF_GAP_MS
    return total_ms / 1000


def split_speech(text: str, limit: int = SPEAK_LIMIT) -> list[str]:
    """``text`` in pieces of at most ``limit`` characters, cut at sentence or word ends."""
    text = " ".join(text.split())
    pieces: list[str] = []
    while len(text) > limit:
        window = text[:limit + 1]
        cut = max(window.rfind(". "), window.rfind("! "), window.rfind("? "))
        if cut > limit // 2:
            cut += 1
        else:
            cut = window.rfind(" ")
            if cut <= 0:
                cut = limit
        pieces.append(text[:cut].strip())
        text = text[cut:].strip()
    if text:
        pieces.append(text)
    return pieces


# --- builders ----------------------------------------------------------------------------

def dial(*, connection_id: str, to: str, from_: str, webhook_url: str, client_state: str,
         call_id: str, timeout_secs: int, stream: StreamParams | None = None) -> Command:
    body: dict[str, Any] = {
        "connection_id": connection_id,
        "to": to,
        "from": from_,
        "webhook_url": webhook_url,
        "webhook_url_method": "POST",
        "client_state": client_state,
        "command_id": command_id("dial", call_id),
        "timeout_secs": max(5, min(600, int(timeout_secs))),
    }
    if stream is not None:
        body.update(stream.fields(command="dial"))
    return Command(None, body)


def answer(*, call_id: str, client_state: str, webhook_url: str | None = None,
           stream: StreamParams | None = None) -> Command:
    body: dict[str, Any] = {"client_state": client_state,
                            "command_id": command_id("answer", call_id)}
    if webhook_url:
        body["webhook_url"] = webhook_url
        body["webhook_url_method"] = "POST"
    if stream is not None:
        body.update(stream.fields(command="answer"))
    return Command("answer", body)


def reject(*, call_id: str, cause: RejectCause = "CALL_REJECTED") -> Command:
    return Command("reject", {"cause": cause, "command_id": command_id("reject", call_id)})


def speak(text: str, *, call_id: str, seq: int, client_state: str, voice: str | None = None,
          language: str | None = None) -> Command:
    payload = " ".join(text.split())
    if not payload:
        raise UsageError("nothing to speak")
    if len(payload) > SPEAK_LIMIT:
        raise UsageError(f"speak payload exceeds {SPEAK_LIMIT} characters; split it first")
    body: dict[str, Any] = {
        "payload": payload,
        "voice": voice_for(voice),
        "language": speak_language(language),
        "payload_type": "text",
        "client_state": client_state,
        "command_id": command_id("speak", call_id, seq),
    }
    return Command("speak", body)


def transcription_start(*, call_id: str, turn: str, client_state: str,
                        language: str | None = None) -> Command:
    lang = transcription_language(language)
    return Command("transcription_start", {
        "transcription_engine": TRANSCRIPTION_ENGINE,
        "transcription_engine_config": {"transcription_engine": TRANSCRIPTION_ENGINE,
                                        "language": lang, "interim_results": False},
        "transcription_tracks": "inbound",
        "client_state": client_state,
        "command_id": command_id("transcription-start", call_id, turn),
    })


def transcription_stop(*, call_id: str, turn: str) -> Command:
    return Command("transcription_stop",
                   {"command_id": command_id("transcription-stop", call_id, turn)})


def client_state_update(*, client_state: str) -> Command:
    """Replace the state echoed in later webhooks (the SDK's params have no ``command_id``;
    setting the same state twice is harmless anyway)."""
    return Command("client_state_update", {"client_state": client_state}, method="PUT")


def send_dtmf(digits: str, *, call_id: str, seq: int | str,
              duration_ms: int = DTMF_DURATION_MS) -> Command:
    if not 100 <= duration_ms <= 500:
        raise UsageError("DTMF duration must be 100-500 ms per digit")
    return Command("send_dtmf", {"digits": normalize_dtmf(digits), "duration_millis": duration_ms,
                                 "command_id": command_id("dtmf", call_id, seq)})


def streaming_start(stream: StreamParams, *, call_id: str, seq: int | str,
                    client_state: str | None = None) -> Command:
    body: dict[str, Any] = stream.fields(command="streaming_start")
    if client_state:
        body["client_state"] = client_state
    body["command_id"] = command_id("stream-start", call_id, seq)
    return Command("streaming_start", body)


def streaming_stop(*, call_id: str, seq: int | str, stream_id: str | None = None) -> Command:
    body: dict[str, Any] = {"command_id": command_id("stream-stop", call_id, seq)}
    if stream_id:
        body["stream_id"] = stream_id
    return Command("streaming_stop", body)


def hangup(*, call_id: str) -> Command:
    return Command("hangup", {"command_id": command_id("hangup", call_id)})
