"""Twilio Media Streams wire format, sans-I/O: JSON text <-> frozen frame values.

``parse_frame`` reads what Twilio sends us; ``encode_media``/``encode_mark``/
``encode_clear`` write what we send back. The ``encode_*`` twins of Twilio's own
messages and ``parse_client_frame`` exist for the fake Twilio in ``voicecall.testing``,
so both ends of the socket share one definition of the shapes.

Twilio quirks kept here: ``sequenceNumber``, ``chunk`` and ``timestamp`` are JSON
*strings* (we accept ints too when parsing); ``dtmf.track`` is ``"inbound_track"`` while
media tracks are ``"inbound"``/``"outbound"``; only text frames exist (a binary frame
is Twilio error 31950).

Unknown ``event`` values parse to ``Unknown`` instead of raising: Twilio may add events,
and an unrecognised but well-formed frame should be ignored, not end the call. Malformed
frames (bad JSON, missing fields, bad base64) raise ``ProtocolError`` and the shell
closes that stream.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from voicecall.errors import ProtocolError

MULAW_ENCODING = "audio/x-mulaw"
SAMPLE_RATE = 8000
FRAME_BYTES = 160  # 20 ms of 8 kHz mu-law


@dataclass(frozen=True)
class Connected:
    protocol: str
    version: str


@dataclass(frozen=True)
class Start:
    stream_sid: str
    call_sid: str
    account_sid: str
    tracks: tuple[str, ...]
    custom_parameters: dict[str, str]
    encoding: str
    sample_rate: int
    channels: int


@dataclass(frozen=True)
class Media:
    stream_sid: str
    payload: bytes
    track: str
    chunk: int
    timestamp_ms: int


@dataclass(frozen=True)
class Dtmf:
    stream_sid: str
    digit: str


@dataclass(frozen=True)
class Mark:
    stream_sid: str
    name: str


@dataclass(frozen=True)
class Stop:
    stream_sid: str
    call_sid: str


@dataclass(frozen=True)
class Unknown:
    """A well-formed frame with an ``event`` we do not handle (forward compatibility)."""

    event: str
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OutboundMedia:
    """Audio we send to Twilio (as the fake sees it)."""

    stream_sid: str
    payload: bytes


@dataclass(frozen=True)
class Clear:
    stream_sid: str


Frame = Connected | Start | Media | Dtmf | Mark | Stop | Unknown
ClientFrame = OutboundMedia | Mark | Clear


# --- parsing -----------------------------------------------------------------

def _load(text: str | bytes) -> dict[str, Any]:
    if isinstance(text, bytes | bytearray | memoryview):
        raise ProtocolError("media stream frames must be JSON text, not binary")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"media frame is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ProtocolError("media frame is not a JSON object")
    return data


def _obj(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key)
    if not isinstance(value, dict):
        raise ProtocolError(f"media frame field {key!r} must be an object")
    return value


def _str(data: Mapping[str, Any], key: str, *, default: str | None = None) -> str:
    value = data.get(key, default)
    if not isinstance(value, str):
        raise ProtocolError(f"media frame field {key!r} must be a string")
    return value


def _int(data: Mapping[str, Any], key: str, *, default: int | None = None) -> int:
    # Twilio sends counters as decimal strings; accept real ints too, never bools/floats.
    value = data.get(key, default)
    if isinstance(value, bool):
        raise ProtocolError(f"media frame field {key!r} must be an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    raise ProtocolError(f"media frame field {key!r} must be an integer")


def _b64(value: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError("media payload is not valid base64") from None


def _start(data: Mapping[str, Any]) -> Start:
    start = _obj(data, "start")
    fmt = start.get("mediaFormat", {})
    if not isinstance(fmt, dict):
        raise ProtocolError("media frame field 'mediaFormat' must be an object")
    params = start.get("customParameters") or {}
    if not isinstance(params, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in params.items()
    ):
        raise ProtocolError("start.customParameters must map strings to strings")
    tracks = start.get("tracks", ["inbound"])
    if not isinstance(tracks, list) or not all(isinstance(t, str) for t in tracks):
        raise ProtocolError("start.tracks must be a list of strings")
    stream_sid = _str(start, "streamSid", default=data.get("streamSid"))
    return Start(
        stream_sid=stream_sid,
        call_sid=_str(start, "callSid"),
        account_sid=_str(start, "accountSid", default=""),
        tracks=tuple(tracks),
        custom_parameters=dict(params),
        encoding=_str(fmt, "encoding", default=MULAW_ENCODING),
        sample_rate=_int(fmt, "sampleRate", default=SAMPLE_RATE),
        channels=_int(fmt, "channels", default=1),
    )


def parse_frame(text: str | bytes) -> Frame:
    """One frame Twilio sent on the media stream."""
    data = _load(text)
    event = data.get("event")
    if not isinstance(event, str):
        raise ProtocolError("media frame has no 'event'")
    if event == "connected":
        return Connected(protocol=_str(data, "protocol", default=""),
                         version=_str(data, "version", default=""))
    if event == "start":
        return _start(data)
    stream_sid = _str(data, "streamSid")
    if event == "media":
        media = _obj(data, "media")
        return Media(stream_sid=stream_sid, payload=_b64(_str(media, "payload")),
                     track=_str(media, "track", default="inbound"),
                     chunk=_int(media, "chunk", default=0),
                     timestamp_ms=_int(media, "timestamp", default=0))
    if event == "dtmf":
        digit = _str(_obj(data, "dtmf"), "digit")
        if len(digit) != 1:
            raise ProtocolError("dtmf.digit must be a single character")
        return Dtmf(stream_sid=stream_sid, digit=digit)
    if event == "mark":
        return Mark(stream_sid=stream_sid, name=_str(_obj(data, "mark"), "name"))
    if event == "stop":
        stop = data.get("stop") or {}
        if not isinstance(stop, dict):
            raise ProtocolError("media frame field 'stop' must be an object")
        return Stop(stream_sid=stream_sid, call_sid=_str(stop, "callSid", default=""))
    return Unknown(event=event, data=data)


def parse_client_frame(text: str | bytes) -> ClientFrame:
    """One frame the gateway sent to Twilio (used by the fake Twilio)."""
    data = _load(text)
    event = data.get("event")
    stream_sid = _str(data, "streamSid")
    if event == "media":
        return OutboundMedia(stream_sid=stream_sid,
                             payload=_b64(_str(_obj(data, "media"), "payload")))
    if event == "mark":
        return Mark(stream_sid=stream_sid, name=_str(_obj(data, "mark"), "name"))
    if event == "clear":
        return Clear(stream_sid=stream_sid)
    raise ProtocolError(f"unknown client media event {event!r}")


# --- encoding: what the gateway sends -----------------------------------------

def _dump(obj: Mapping[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"))


def _b64s(payload: bytes) -> str:
    return base64.b64encode(payload).decode("ascii")


def encode_media(stream_sid: str, mulaw: bytes) -> str:
    """Outbound audio: raw 8 kHz mu-law, no file header."""
    return _dump({"event": "media", "streamSid": stream_sid, "media": {"payload": _b64s(mulaw)}})


def encode_mark(stream_sid: str, name: str) -> str:
    """Twilio echoes the mark once everything queued before it has played (or was cleared)."""
    return _dump({"event": "mark", "streamSid": stream_sid, "mark": {"name": name}})


def encode_clear(stream_sid: str) -> str:
    """Drop Twilio's buffered outbound audio (barge-in)."""
    return _dump({"event": "clear", "streamSid": stream_sid})


# --- encoding: what Twilio sends (for the fake) --------------------------------

def encode_connected(protocol: str = "Call", version: str = "1.0.0") -> str:
    return _dump({"event": "connected", "protocol": protocol, "version": version})


def encode_start(stream_sid: str, call_sid: str, account_sid: str, *,
                 custom_parameters: Mapping[str, str] | None = None,
                 tracks: Sequence[str] = ("inbound",), sequence_number: int = 1) -> str:
    return _dump({
        "event": "start",
        "sequenceNumber": str(sequence_number),
        "streamSid": stream_sid,
        "start": {
            "streamSid": stream_sid,
            "accountSid": account_sid,
            "callSid": call_sid,
            "tracks": list(tracks),
            "customParameters": dict(custom_parameters or {}),
            "mediaFormat": {"encoding": MULAW_ENCODING, "sampleRate": SAMPLE_RATE,
                            "channels": 1},
        },
    })


def encode_inbound_media(stream_sid: str, mulaw: bytes, *, sequence_number: int, chunk: int,
                         timestamp_ms: int, track: str = "inbound") -> str:
    return _dump({
        "event": "media",
        "sequenceNumber": str(sequence_number),
        "streamSid": stream_sid,
        "media": {"track": track, "chunk": str(chunk), "timestamp": str(timestamp_ms),
                  "payload": _b64s(mulaw)},
    })


def encode_dtmf(stream_sid: str, digit: str, *, sequence_number: int) -> str:
    return _dump({
        "event": "dtmf",
        "sequenceNumber": str(sequence_number),
        "streamSid": stream_sid,
        "dtmf": {"track": "inbound_track", "digit": digit},
    })


def encode_mark_echo(stream_sid: str, name: str, *, sequence_number: int) -> str:
    return _dump({
        "event": "mark",
        "sequenceNumber": str(sequence_number),
        "streamSid": stream_sid,
        "mark": {"name": name},
    })


def encode_stop(stream_sid: str, call_sid: str, account_sid: str, *,
                sequence_number: int) -> str:
    return _dump({
        "event": "stop",
        "sequenceNumber": str(sequence_number),
        "streamSid": stream_sid,
        "stop": {"accountSid": account_sid, "callSid": call_sid},
    })
