"""Plivo audio-stream wire format, sans-I/O: JSON text <-> frozen frame values,
plus the negotiated audio format and its conversion to the gateway's mu-law 8 kHz.

``parse_frame`` reads what Plivo sends us (``start``, ``media``, ``dtmf``,
``playedStream``, ``clearedAudio``, ``stop``); ``encode_play_audio`` /
``encode_checkpoint`` / ``encode_clear_audio`` / ``encode_send_dtmf`` write what we
send. The ``encode_*`` twins of Plivo's messages and ``parse_client_frame`` exist for
the fake Plivo in ``voicecall.testing``, so both ends share one definition.

Shapes (carriers.md §3.4): ``sequenceNumber`` is a JSON number; ``start`` carries
``callId``, ``streamId``, ``mediaFormat {encoding, sampleRate}`` and a top-level
``extra_headers`` (``k=v;k2=v2``, ``k=v,k2=v2`` or JSON); ``playAudio`` carries
``media {contentType, sampleRate, payload}``. Unknown events parse to ``Unknown``
(ignored); malformed frames raise ``ProtocolError`` and end that stream.

The audio format is negotiated explicitly: we ask for one in ``<Stream
contentType>``, and honour whatever ``start.mediaFormat`` then says (Plivo's default
is L16 8 kHz, so a dropped attribute must not turn speech into noise). L16 is
little-endian signed 16-bit PCM.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from voicecall.audio.g711 import FRAME_BYTES, mulaw_to_pcm16, pcm16_to_mulaw
from voicecall.audio.resample import StreamResampler, pcm16_bytes, resample_pcm16
from voicecall.errors import ProtocolError

Encoding = Literal["audio/x-mulaw", "audio/x-l16"]
MULAW: Encoding = "audio/x-mulaw"
L16: Encoding = "audio/x-l16"


# --- negotiated format -----------------------------------------------------------

@dataclass(frozen=True)
class StreamFormat:
    encoding: Encoding = MULAW
    sample_rate: int = 8000

    @property
    def content_type(self) -> str:
        """The ``<Stream contentType>`` value for this format."""
        return f"{self.encoding};rate={self.sample_rate}"

    @property
    def bytes_per_20ms(self) -> int:
        per_sample = 1 if self.encoding == MULAW else 2
        return self.sample_rate * per_sample // 50


MULAW_8K = StreamFormat(MULAW, 8000)
L16_8K = StreamFormat(L16, 8000)
L16_16K = StreamFormat(L16, 16000)
FORMATS = (MULAW_8K, L16_8K, L16_16K)
PLIVO_DEFAULT = L16_8K  # what Plivo streams when <Stream contentType> is absent


def stream_format(encoding: str, sample_rate: int) -> StreamFormat:
    """The supported format for an ``encoding`` + rate pair (``ProtocolError`` otherwise)."""
    enc = encoding.strip().lower().split(";", 1)[0]
    for fmt in FORMATS:
        if fmt.encoding == enc and fmt.sample_rate == sample_rate:
            return fmt
    raise ProtocolError(f"unsupported stream audio format {encoding!r} at {sample_rate} Hz")


def parse_content_type(value: str) -> StreamFormat:
    """``audio/x-l16;rate=16000`` -> its format (a missing rate means 8000)."""
    enc, _, params = value.strip().lower().partition(";")
    rate = 8000
    for param in params.split(";"):
        name, sep, raw = param.strip().partition("=")
        if sep and name == "rate":
            if not raw.isdigit():
                raise ProtocolError(f"bad rate in content type {value!r}")
            rate = int(raw)
    return stream_format(enc, rate)


class AudioCodec:
    """Converts one stream's wire audio to and from mu-law 8 kHz (what STT/TTS speak).

    Resamplers keep filter state across chunks; ``flush_outbound`` drains the tail
    of the 8->16 kHz filter at the end of an utterance.
    """

    def __init__(self, fmt: StreamFormat) -> None:
        self.format = fmt
        self._up = StreamResampler(8000, fmt.sample_rate) if fmt.encoding == L16 else None
        self._down = StreamResampler(fmt.sample_rate, 8000) if fmt.encoding == L16 else None
        self._odd = b""

    def decode(self, payload: bytes) -> bytes:
        """Inbound wire audio -> mu-law 8 kHz."""
        if self.format.encoding == MULAW:
            return payload
        assert self._down is not None
        data = self._odd + payload
        self._odd = data[len(data) - len(data) % 2:]
        samples = pcm16_bytes(data)
        return pcm16_to_mulaw(self._down.feed(samples)) if samples.size else b""

    def encode(self, mulaw: bytes) -> bytes:
        """Outbound mu-law 8 kHz -> wire audio."""
        if self.format.encoding == MULAW:
            return mulaw
        assert self._up is not None
        return _le(self._up.feed(mulaw_to_pcm16(mulaw)))

    def flush_outbound(self) -> bytes:
        if self._up is None:
            return b""
        tail = self._up.feed(np.zeros(0, dtype=np.int16), last=True)
        self._up = StreamResampler(8000, self.format.sample_rate)
        return _le(tail)


def _le(samples: np.ndarray[Any, np.dtype[np.int16]]) -> bytes:
    return samples.astype("<i2").tobytes()


def encode_audio(mulaw: bytes, fmt: StreamFormat) -> bytes:
    """Whole-buffer mu-law 8 kHz -> ``fmt`` (for the fake's caller audio)."""
    codec = AudioCodec(fmt)
    return codec.encode(mulaw) + codec.flush_outbound()


def decode_audio(payload: bytes, fmt: StreamFormat) -> bytes:
    """Whole-buffer ``fmt`` -> mu-law 8 kHz (for the fake's record of our audio)."""
    if fmt.encoding == MULAW:
        return payload
    samples = pcm16_bytes(payload)
    if fmt.sample_rate != 8000:
        samples = resample_pcm16(samples, fmt.sample_rate, 8000)
    return pcm16_to_mulaw(samples)


# --- frames ----------------------------------------------------------------------

@dataclass(frozen=True)
class Start:
    stream_id: str
    call_id: str
    account_id: str
    tracks: tuple[str, ...]
    format: StreamFormat
    extra_headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Media:
    stream_id: str
    payload: bytes
    track: str = "inbound"
    timestamp: str = ""
    chunk: int = 0


@dataclass(frozen=True)
class Dtmf:
    stream_id: str
    digit: str


@dataclass(frozen=True)
class PlayedStream:
    """A checkpoint reached: everything queued before it has played."""

    stream_id: str
    name: str


@dataclass(frozen=True)
class ClearedAudio:
    stream_id: str


@dataclass(frozen=True)
class Stop:
    stream_id: str


@dataclass(frozen=True)
class Unknown:
    event: str
    data: Mapping[str, Any] = field(default_factory=dict)


Frame = Start | Media | Dtmf | PlayedStream | ClearedAudio | Stop | Unknown


@dataclass(frozen=True)
class PlayAudio:
    format: StreamFormat
    payload: bytes
    stream_id: str | None = None


@dataclass(frozen=True)
class Checkpoint:
    stream_id: str
    name: str


@dataclass(frozen=True)
class ClearAudio:
    stream_id: str


@dataclass(frozen=True)
class SendDtmf:
    digits: str


ClientFrame = PlayAudio | Checkpoint | ClearAudio | SendDtmf


def _load(text: str | bytes) -> dict[str, Any]:
    if isinstance(text, bytes | bytearray | memoryview):
        raise ProtocolError("audio stream frames must be JSON text, not binary")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"stream frame is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ProtocolError("stream frame is not a JSON object")
    return data


def _obj(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key)
    if not isinstance(value, dict):
        raise ProtocolError(f"stream frame field {key!r} must be an object")
    return value


def _str(data: Mapping[str, Any], key: str, *, default: str | None = None) -> str:
    value = data.get(key, default)
    if not isinstance(value, str):
        raise ProtocolError(f"stream frame field {key!r} must be a string")
    return value


def _int(data: Mapping[str, Any], key: str, *, default: int | None = None) -> int:
    value = data.get(key, default)
    if isinstance(value, bool):
        raise ProtocolError(f"stream frame field {key!r} must be an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    raise ProtocolError(f"stream frame field {key!r} must be an integer")


def _b64(value: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError("stream payload is not valid base64") from None


def parse_extra_headers(raw: object) -> dict[str, str]:
    """``extra_headers`` as Plivo delivers it: ``k=v;k2=v2``, ``k=v,k2=v2``, JSON, or a dict."""
    if raw is None or raw == "":
        return {}
    if isinstance(raw, dict):
        return {str(k): str(v) for k, v in raw.items()}
    if not isinstance(raw, str):
        raise ProtocolError("start extra_headers must be a string or an object")
    text = raw.strip()
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if isinstance(data, dict):
            return {str(k): str(v) for k, v in data.items()}
    out: dict[str, str] = {}
    for part in text.replace(",", ";").split(";"):
        name, sep, value = part.partition("=")
        if sep and name.strip():
            out[name.strip()] = value.strip()
    return out


def _start(data: Mapping[str, Any]) -> Start:
    start = _obj(data, "start")
    fmt_raw = start.get("mediaFormat")
    if fmt_raw is None:
        fmt = PLIVO_DEFAULT
    elif isinstance(fmt_raw, dict):
        fmt = stream_format(_str(fmt_raw, "encoding"), _int(fmt_raw, "sampleRate"))
    else:
        raise ProtocolError("stream frame field 'mediaFormat' must be an object")
    tracks = start.get("tracks", ["inbound"])
    if not isinstance(tracks, list) or not all(isinstance(t, str) for t in tracks):
        raise ProtocolError("start.tracks must be a list of strings")
    extra = data.get("extra_headers", start.get("extra_headers"))
    return Start(
        stream_id=_str(start, "streamId", default=data.get("streamId")),
        call_id=_str(start, "callId"),
        account_id=_str(start, "accountId", default=""),
        tracks=tuple(tracks),
        format=fmt,
        extra_headers=parse_extra_headers(extra),
    )


def parse_frame(text: str | bytes) -> Frame:
    """One frame Plivo sent on the audio stream."""
    data = _load(text)
    event = data.get("event")
    if not isinstance(event, str):
        raise ProtocolError("stream frame has no 'event'")
    if event == "start":
        return _start(data)
    stream_id = _str(data, "streamId", default="")
    if event == "media":
        media = _obj(data, "media")
        ts = media.get("timestamp", "")
        return Media(stream_id=stream_id, payload=_b64(_str(media, "payload")),
                     track=_str(media, "track", default="inbound"),
                     timestamp=str(ts) if isinstance(ts, str | int) else "",
                     chunk=_int(media, "chunk", default=0))
    if event == "dtmf":
        digit = _str(_obj(data, "dtmf"), "digit")
        if len(digit) != 1:
            raise ProtocolError("dtmf.digit must be a single character")
        return Dtmf(stream_id=stream_id, digit=digit)
    if event in ("playedStream", "played"):
        return PlayedStream(stream_id=stream_id, name=_str(data, "name"))
    if event == "clearedAudio":
        return ClearedAudio(stream_id=stream_id)
    if event == "stop":
        return Stop(stream_id=stream_id)
    return Unknown(event=event, data=data)


def parse_client_frame(text: str | bytes) -> ClientFrame:
    """One frame the gateway sent to Plivo (used by the fake Plivo)."""
    data = _load(text)
    event = data.get("event")
    if event == "playAudio":
        media = _obj(data, "media")
        fmt = stream_format(_str(media, "contentType"), _int(media, "sampleRate"))
        sid = data.get("streamId")
        return PlayAudio(format=fmt, payload=_b64(_str(media, "payload")),
                         stream_id=sid if isinstance(sid, str) else None)
    if event == "checkpoint":
        return Checkpoint(stream_id=_str(data, "streamId"), name=_str(data, "name"))
    if event == "clearAudio":
        return ClearAudio(stream_id=_str(data, "streamId"))
    if event == "sendDTMF":
        digits = _str(data, "dtmf")
        if not digits:
            raise ProtocolError("sendDTMF needs digits")
        return SendDtmf(digits=digits)
    raise ProtocolError(f"unknown client stream event {event!r}")


# --- encoding: what the gateway sends ----------------------------------------------

def _dump(obj: Mapping[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"))


def _b64s(payload: bytes) -> str:
    return base64.b64encode(payload).decode("ascii")


def encode_play_audio(payload: bytes, fmt: StreamFormat) -> str:
    """Outbound audio in the negotiated format (raw samples, no header)."""
    return _dump({"event": "playAudio", "media": {
        "contentType": fmt.encoding, "sampleRate": fmt.sample_rate, "payload": _b64s(payload)}})


def encode_checkpoint(stream_id: str, name: str) -> str:
    """Plivo answers ``playedStream`` with this name once everything before it has played."""
    return _dump({"event": "checkpoint", "streamId": stream_id, "name": name})


def encode_clear_audio(stream_id: str) -> str:
    """Drop Plivo's queued audio and checkpoints (barge-in); answered by ``clearedAudio``."""
    return _dump({"event": "clearAudio", "streamId": stream_id})


def encode_send_dtmf(digits: str) -> str:
    return _dump({"event": "sendDTMF", "dtmf": digits})


# --- encoding: what Plivo sends (for the fake) ----------------------------------------

def encode_start(stream_id: str, call_id: str, account_id: str, fmt: StreamFormat, *,
                 extra_headers: str = "", tracks: Sequence[str] = ("inbound",),
                 sequence_number: int = 1) -> str:
    return _dump({
        "event": "start",
        "sequenceNumber": sequence_number,
        "start": {
            "callId": call_id,
            "streamId": stream_id,
            "accountId": account_id,
            "tracks": list(tracks),
            "mediaFormat": {"encoding": fmt.encoding, "sampleRate": fmt.sample_rate},
        },
        "extra_headers": extra_headers,
    })


def encode_media(stream_id: str, payload: bytes, *, sequence_number: int, chunk: int,
                 timestamp_ms: int, track: str = "inbound") -> str:
    return _dump({
        "event": "media",
        "sequenceNumber": sequence_number,
        "streamId": stream_id,
        "media": {"track": track, "timestamp": str(timestamp_ms), "chunk": chunk,
                  "payload": _b64s(payload)},
    })


def encode_dtmf(stream_id: str, digit: str, *, sequence_number: int) -> str:
    return _dump({"event": "dtmf", "sequenceNumber": sequence_number, "streamId": stream_id,
                  "dtmf": {"digit": digit, "track": "inbound"}})


def encode_played_stream(stream_id: str, name: str, *, sequence_number: int) -> str:
    return _dump({"event": "playedStream", "sequenceNumber": sequence_number,
                  "streamId": stream_id, "name": name})


def encode_cleared_audio(stream_id: str, *, sequence_number: int) -> str:
    return _dump({"event": "clearedAudio", "sequenceNumber": sequence_number,
                  "streamId": stream_id})


def encode_stop(stream_id: str, *, sequence_number: int) -> str:
    return _dump({"event": "stop", "sequenceNumber": sequence_number, "streamId": stream_id})


def frame_bytes(fmt: StreamFormat) -> int:
    """Bytes in one 20 ms frame of ``fmt`` (mu-law 8 kHz: ``FRAME_BYTES``)."""
    return FRAME_BYTES if fmt == MULAW_8K else fmt.bytes_per_20ms
