"""Telnyx media streaming wire format, sans-I/O: JSON text <-> frozen frame values.

``parse_frame`` reads what Telnyx sends us; ``encode_media``/``encode_mark``/
``encode_clear`` write what we send back (bidirectional ``rtp`` mode, PCMU 8 kHz).
The ``encode_*`` twins of Telnyx's own frames and ``parse_client_frame`` exist for the
fake Telnyx in ``voicecall.testing``, so both ends share one definition.

Telnyx shapes (carriers.md §2.4): snake_case; ``stream_id`` at the top level, the
call's ``call_control_id`` inside ``start``; ``sequence_number``, ``chunk`` and
``timestamp`` are decimal strings (ints accepted); frames we send carry no
``stream_id``. ``connected`` may carry the ``x-telnyx-streaming-auth-token`` set on
the dial. The ``error`` frame's fields are not documented in detail: ``payload`` /
``error`` objects with ``code``/``title``/``detail`` are read when present [guessed].

Unknown ``event`` values parse to ``Unknown``; malformed frames raise ``ProtocolError``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from voicecall.errors import ProtocolError

ENCODING = "PCMU"
SAMPLE_RATE = 8000
FRAME_BYTES = 160  # 20 ms of 8 kHz mu-law
AUTH_TOKEN_FIELD = "x-telnyx-streaming-auth-token"


@dataclass(frozen=True)
class Connected:
    version: str
    auth_token: str | None = None


@dataclass(frozen=True)
class Start:
    stream_id: str
    call_control_id: str
    call_session_id: str
    from_number: str
    to_number: str
    client_state: str | None
    custom_parameters: dict[str, str]
    encoding: str
    sample_rate: int
    channels: int


@dataclass(frozen=True)
class Media:
    stream_id: str
    payload: bytes
    track: str
    chunk: int
    timestamp_ms: int
    sequence_number: int


@dataclass(frozen=True)
class Dtmf:
    stream_id: str
    digit: str


@dataclass(frozen=True)
class Mark:
    stream_id: str
    name: str


@dataclass(frozen=True)
class Stop:
    stream_id: str
    call_control_id: str


@dataclass(frozen=True)
class Error:
    stream_id: str
    code: str
    title: str
    detail: str


@dataclass(frozen=True)
class Unknown:
    event: str
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OutboundMedia:
    """Audio we send to Telnyx (as the fake sees it)."""

    payload: bytes


@dataclass(frozen=True)
class Clear:
    pass


Frame = Connected | Start | Media | Dtmf | Mark | Stop | Error | Unknown
ClientFrame = OutboundMedia | Mark | Clear


# --- parsing ---------------------------------------------------------------------------

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


def _obj(data: Mapping[str, Any], key: str, *, required: bool = True) -> Mapping[str, Any]:
    value = data.get(key)
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        raise ProtocolError(f"media frame field {key!r} must be an object")
    return value


def _str(data: Mapping[str, Any], key: str, *, default: str | None = None) -> str:
    value = data.get(key, default)
    if value is None and default is not None:
        value = default
    if not isinstance(value, str):
        raise ProtocolError(f"media frame field {key!r} must be a string")
    return value


def _opt_str(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    return value if isinstance(value, str) and value else None


def _int(data: Mapping[str, Any], key: str, *, default: int | None = None) -> int:
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


def _params(raw: object) -> dict[str, str]:
    """``custom_parameters`` as an object, or as the ``[{name, value}]`` list the
    ``streaming_start`` command takes (which form Telnyx echoes is not documented)."""
    if raw is None:
        return {}
    if isinstance(raw, dict) and all(isinstance(k, str) and isinstance(v, str)
                                     for k, v in raw.items()):
        return dict(raw)
    if isinstance(raw, list):
        out: dict[str, str] = {}
        for item in raw:
            if not (isinstance(item, dict) and isinstance(item.get("name"), str)
                    and isinstance(item.get("value"), str)):
                raise ProtocolError("start.custom_parameters items must be {name, value}")
            out[item["name"]] = item["value"]
        return out
    raise ProtocolError("start.custom_parameters must map strings to strings")


def _start(data: Mapping[str, Any]) -> Start:
    start = _obj(data, "start")
    fmt = _obj(start, "media_format", required=False)
    stream_id = _str(data, "stream_id", default=start.get("stream_id") or None)
    return Start(
        stream_id=stream_id,
        call_control_id=_str(start, "call_control_id"),
        call_session_id=_str(start, "call_session_id", default=""),
        from_number=_str(start, "from", default=""),
        to_number=_str(start, "to", default=""),
        client_state=_opt_str(start, "client_state"),
        custom_parameters=_params(start.get("custom_parameters")),
        encoding=_str(fmt, "encoding", default=ENCODING),
        sample_rate=_int(fmt, "sample_rate", default=SAMPLE_RATE),
        channels=_int(fmt, "channels", default=1),
    )


def _error(data: Mapping[str, Any], stream_id: str) -> Error:
    inner = data.get("payload")
    if not isinstance(inner, dict):
        inner = data.get("error")
    src: Mapping[str, Any] = inner if isinstance(inner, dict) else data
    code = src.get("code")
    return Error(stream_id=stream_id, code="" if code is None else str(code),
                 title=str(src.get("title") or ""),
                 detail=str(src.get("detail") or src.get("message") or ""))


def parse_frame(text: str | bytes) -> Frame:
    """One frame Telnyx sent on the media stream."""
    data = _load(text)
    event = data.get("event")
    if not isinstance(event, str):
        raise ProtocolError("media frame has no 'event'")
    if event == "connected":
        return Connected(version=_str(data, "version", default=""),
                         auth_token=_opt_str(data, AUTH_TOKEN_FIELD))
    if event == "start":
        return _start(data)
    stream_id = _str(data, "stream_id", default="")
    if event == "media":
        media = _obj(data, "media")
        return Media(stream_id=stream_id, payload=_b64(_str(media, "payload")),
                     track=_str(media, "track", default="inbound"),
                     chunk=_int(media, "chunk", default=0),
                     timestamp_ms=_int(media, "timestamp", default=0),
                     sequence_number=_int(data, "sequence_number", default=0))
    if event == "dtmf":
        digit = _str(_obj(data, "dtmf"), "digit")
        if len(digit) != 1:
            raise ProtocolError("dtmf.digit must be a single character")
        return Dtmf(stream_id=stream_id, digit=digit)
    if event == "mark":
        return Mark(stream_id=stream_id, name=_str(_obj(data, "mark"), "name"))
    if event == "stop":
        stop = _obj(data, "stop", required=False)
        return Stop(stream_id=stream_id, call_control_id=_str(stop, "call_control_id",
                                                              default=""))
    if event == "error":
        return _error(data, stream_id)
    return Unknown(event=event, data=data)


def parse_client_frame(text: str | bytes) -> ClientFrame:
    """One frame the gateway sent to Telnyx (used by the fake Telnyx)."""
    data = _load(text)
    event = data.get("event")
    if event == "media":
        return OutboundMedia(payload=_b64(_str(_obj(data, "media"), "payload")))
    if event == "mark":
        return Mark(stream_id=_str(data, "stream_id", default=""),
                    name=_str(_obj(data, "mark"), "name"))
    if event == "clear":
        return Clear()
    raise ProtocolError(f"unknown client media event {event!r}")


# --- encoding: what the gateway sends ----------------------------------------------------

def _dump(obj: Mapping[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"))


def _b64s(payload: bytes) -> str:
    return base64.b64encode(payload).decode("ascii")


def encode_media(mulaw: bytes) -> str:
    """Outbound audio: raw PCMU 8 kHz (RTP payload, no header, no file header)."""
    return _dump({"event": "media", "media": {"payload": _b64s(mulaw)}})


def encode_mark(name: str) -> str:
    """Echoed once the audio before it has played (at once if nothing is queued)."""
    return _dump({"event": "mark", "mark": {"name": name}})


def encode_clear() -> str:
    """Stop playback and drop queued audio (barge-in); queued marks come back."""
    return _dump({"event": "clear"})


# --- encoding: what Telnyx sends (for the fake) --------------------------------------------

def encode_connected(version: str = "1.0.0", *, auth_token: str | None = None) -> str:
    obj: dict[str, Any] = {"event": "connected", "version": version}
    if auth_token:
        obj[AUTH_TOKEN_FIELD] = auth_token
    return _dump(obj)


def encode_start(stream_id: str, call_control_id: str, *, call_session_id: str = "",
                 from_number: str = "", to_number: str = "", client_state: str | None = None,
                 custom_parameters: Mapping[str, str] | None = None, user_id: str = "",
                 sequence_number: int = 1) -> str:
    return _dump({
        "event": "start",
        "sequence_number": str(sequence_number),
        "stream_id": stream_id,
        "start": {
            "user_id": user_id,
            "call_control_id": call_control_id,
            "call_session_id": call_session_id,
            "from": from_number,
            "to": to_number,
            "tags": [],
            "client_state": client_state,
            "custom_parameters": dict(custom_parameters or {}),
            "media_format": {"encoding": ENCODING, "sample_rate": SAMPLE_RATE, "channels": 1},
        },
    })


def encode_inbound_media(stream_id: str, mulaw: bytes, *, sequence_number: int, chunk: int,
                         timestamp_ms: int, track: str = "inbound") -> str:
    return _dump({
        "event": "media",
        "sequence_number": str(sequence_number),
        "stream_id": stream_id,
        "media": {"track": track, "chunk": str(chunk), "timestamp": str(timestamp_ms),
                  "payload": _b64s(mulaw)},
    })


def encode_dtmf(stream_id: str, digit: str, *, sequence_number: int) -> str:
    return _dump({"event": "dtmf", "sequence_number": str(sequence_number),
                  "stream_id": stream_id, "dtmf": {"digit": digit}})


def encode_mark_echo(stream_id: str, name: str, *, sequence_number: int) -> str:
    return _dump({"event": "mark", "sequence_number": str(sequence_number),
                  "stream_id": stream_id, "mark": {"name": name}})


def encode_stop(stream_id: str, call_control_id: str, *, sequence_number: int,
                user_id: str = "") -> str:
    return _dump({"event": "stop", "sequence_number": str(sequence_number),
                  "stream_id": stream_id,
                  "stop": {"user_id": user_id, "call_control_id": call_control_id}})


def encode_error(stream_id: str, code: str | int, title: str, detail: str = "", *,
                 sequence_number: int) -> str:
    return _dump({"event": "error", "sequence_number": str(sequence_number),
                  "stream_id": stream_id,
                  "payload": {"code": code, "title": title, "detail": detail}})
