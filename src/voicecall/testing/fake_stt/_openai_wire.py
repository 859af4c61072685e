"""The OpenAI Realtime wire (GA, ``/v1/realtime``) shared by the two OpenAI fakes.

``voicecall.testing.fake_stt.openai`` (transcription sessions) and
``voicecall.testing.fake_openai_realtime`` (speech-to-speech sessions) speak
the same protocol; what both need is here:

- the validation helpers that raise ``_Invalid`` worded as the Realtime API
  words its errors (``unknown_parameter``, ``invalid_type``,
  ``invalid_value``, ``missing_required_parameter``), the ``session.type``,
  audio ``format`` and ``turn_detection`` checks, and ``_merge`` (a partial
  ``session.update``);
- ``OpenAIWireFake``: the upgrade (``Authorization: Bearer`` required, HTTP
  401 with an OpenAI error body without it; ``?model=`` checks), the
  ``server_error`` fault, the first answer (``beta_api_shape_disabled`` and
  close ``4000`` for an ``OpenAI-Beta`` header, ``invalid_api_key`` with the
  key echoed masked and close ``3000`` for a wrong key) and the loop reading
  client events (binary frames, bad JSON and a missing ``type`` answered
  with ``error`` events);
- ``WireSession``: one connection's session (``event``/``error``, the server
  VAD ``Segmenter`` from the session's ``turn_detection``, decoding
  ``input_audio_buffer.append``, ``session.update``, the commit size check).
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
from websockets.http11 import Request, Response

from voicecall.testing.fake_stt._server import (
    ConnRecord,
    FakeConn,
    FakeSttServer,
    Segmenter,
    decode_audio,
    json_response,
    mask_key,
)

TRANSCRIBE_MODELS = ("whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe",
                     "gpt-4o-mini-transcribe-2025-12-15", "gpt-4o-transcribe-diarize",
                     "gpt-transcribe", "gpt-live-transcribe", "gpt-realtime-whisper")
FORMATS = ("audio/pcm", "audio/pcmu", "audio/pcma")
CLIENT_EVENTS = ("session.update", "input_audio_buffer.append", "input_audio_buffer.commit",
                 "input_audio_buffer.clear", "conversation.item.create",
                 "conversation.item.retrieve", "conversation.item.truncate",
                 "conversation.item.delete", "response.create", "response.cancel",
                 "output_audio_buffer.clear")
INPUT_KEYS = ("format", "noise_reduction", "transcription", "turn_detection")
EAGERNESS_MS = {"low": 1500.0, "medium": 800.0, "auto": 800.0, "high": 400.0}


# --------------------------------------------------------------------------- validation


class _Invalid(Exception):
    def __init__(self, code: str, message: str, param: str | None) -> None:
        super().__init__(message)
        self.code, self.message, self.param = code, message, param


def _supported(values: tuple[str, ...]) -> str:
    quoted = [f"'{v}'" for v in values]
    return ", ".join(quoted[:-1]) + f", and {quoted[-1]}" if len(quoted) > 1 else quoted[0]


def _check_keys(obj: dict[str, Any], allowed: tuple[str, ...], where: str) -> None:
    for key in obj:
        if key not in allowed:
            raise _Invalid("unknown_parameter", f"Unknown parameter: '{where}.{key}'.",
                           f"{where}.{key}")


def _need_object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Invalid("invalid_type", f"Invalid type for '{where}': expected an object, but "
                       f"got {type(value).__name__} instead.", where)
    return value


def _number(obj: dict[str, Any], key: str, where: str, lo: float, hi: float) -> None:
    if key not in obj:
        return
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Invalid("invalid_type", f"Invalid type for '{where}.{key}': expected a number, "
                       f"but got {type(value).__name__} instead.", f"{where}.{key}")
    if not lo <= value <= hi:
        raise _Invalid("invalid_value", f"Invalid '{where}.{key}': expected a value between "
                       f"{lo:g} and {hi:g}, but got {value} instead.", f"{where}.{key}")


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Partial update: absent fields stay, dicts merge, anything else (null too) replaces."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "format":
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def check_session_type(session: Any, expected: str) -> dict[str, Any]:
    """``session`` as an object whose required ``type`` is ``expected``."""
    s = _need_object(session, "session")
    if "type" not in s:
        raise _Invalid("missing_required_parameter", "Missing required parameter: "
                       "'session.type'.", "session.type")
    if s["type"] != expected:
        raise _Invalid("invalid_value", f"Invalid value: '{s['type']}'. Supported values are: "
                       f"'{expected}'.", "session.type")
    return s


def check_format(value: Any, where: str) -> None:
    """An audio ``format``: PCM at 24 kHz only, G.711 without a rate."""
    fmt = _need_object(value, where)
    _check_keys(fmt, ("type", "rate"), where)
    if fmt.get("type") not in FORMATS:
        raise _Invalid("invalid_value", f"Invalid value: '{fmt.get('type')}'. Supported values "
                       f"are: {_supported(FORMATS)}.", f"{where}.type")
    if fmt["type"] == "audio/pcm" and fmt.get("rate", 24000) != 24000:
        raise _Invalid("invalid_value", f"Invalid value: {fmt.get('rate')}. Supported values "
                       "are: 24000.", f"{where}.rate")
    if fmt["type"] != "audio/pcm" and "rate" in fmt:
        raise _Invalid("unknown_parameter", f"Unknown parameter: '{where}.rate'.",
                       f"{where}.rate")


def check_noise_reduction(value: Any, where: str, *, strict: bool) -> None:
    """``noise_reduction`` (``strict``: no field but ``type``)."""
    nr = _need_object(value, where)
    if strict:
        _check_keys(nr, ("type",), where)
    if nr.get("type") not in ("near_field", "far_field"):
        raise _Invalid("invalid_value", f"Invalid value: '{nr.get('type')}'. Supported values "
                       "are: 'near_field' and 'far_field'.", f"{where}.type")


def check_transcription_model(tr: dict[str, Any], where: str) -> Any:
    """The transcription ``model`` of ``tr``, which must be a known one."""
    model = tr.get("model")
    if model not in TRANSCRIBE_MODELS:
        raise _Invalid("invalid_value", f"Invalid value: '{model}'. Supported values are: "
                       f"{_supported(TRANSCRIBE_MODELS)}.", f"{where}.model")
    return model


def check_turn_detection(td: Any, where: str, server_keys: tuple[str, ...],
                         semantic_keys: tuple[str, ...]) -> dict[str, Any]:
    """A ``server_vad`` or ``semantic_vad`` object with only the given fields."""
    vad = _need_object(td, where)
    kind = vad.get("type")
    if kind == "server_vad":
        _check_keys(vad, server_keys, where)
        _number(vad, "threshold", where, 0.0, 1.0)
        _number(vad, "prefix_padding_ms", where, 0, 10_000)
        _number(vad, "silence_duration_ms", where, 0, 10_000)
    elif kind == "semantic_vad":
        _check_keys(vad, semantic_keys, where)
        if vad.get("eagerness", "auto") not in EAGERNESS_MS:
            raise _Invalid("invalid_value", f"Invalid value: '{vad.get('eagerness')}'. Supported "
                           "values are: 'low', 'medium', 'high', and 'auto'.",
                           f"{where}.eagerness")
    else:
        raise _Invalid("invalid_value", f"Invalid value: '{kind}'. Supported values are: "
                       "'server_vad' and 'semantic_vad'.", f"{where}.type")
    return vad


def codec(fmt: Mapping[str, Any]) -> tuple[str, int]:
    """The fakes' decoder name and sample rate for an audio ``format``."""
    return {"audio/pcmu": ("mulaw", 8000), "audio/pcma": ("alaw", 8000)}.get(
        str(fmt.get("type")), ("pcm16", 24000))


# --------------------------------------------------------------------------- session


class WireSession:
    """Protocol state of one connection; ``session`` is the session in force."""

    def __init__(self, fake: FakeSttServer, conn: FakeConn, session: dict[str, Any]) -> None:
        self.fake = fake
        self.conn = conn
        self.session = session
        conn.record.config = self.session
        self.seg = self._segmenter(0.0)
        self.previous_item: str | None = None
        self.buffer_ms = 0.0

    @property
    def audio_in(self) -> dict[str, Any]:
        value: dict[str, Any] = self.session["audio"]["input"]
        return value

    def _segmenter(self, offset_ms: float) -> Segmenter:
        td = self.audio_in.get("turn_detection") or {}
        threshold = float(td.get("threshold", 0.5)) if td.get("type") == "server_vad" else 0.5
        if td.get("type") == "semantic_vad":
            silence = EAGERNESS_MS.get(td.get("eagerness", "auto"), 800.0)
        else:
            silence = float(td.get("silence_duration_ms", 500))
        _, rate = codec(self.audio_in["format"])
        return Segmenter(rate, threshold=self.fake.rms_threshold * threshold / 0.5,
                         end_silence_ms=silence, min_speech_ms=self.fake.min_speech_ms,
                         word_ms=self.fake.word_ms, offset_ms=offset_ms)

    def event(self, kind: str, delay: float = 0.0, **fields: Any) -> None:
        self.conn.send({"type": kind, "event_id": self.conn.next_id("event"), **fields}, delay)

    def error(self, code: str | None, message: str, param: str | None = None,
              client_event_id: Any = None, kind: str = "invalid_request_error") -> None:
        self.event("error", error={"type": kind, "code": code, "message": message,
                                   "param": param, "event_id": client_event_id})

    def update_session(self, msg: dict[str, Any], eid: Any, validate: Callable[[Any], None],
                       delay: float = 0.0) -> None:
        """``session.update``: ``validate`` it, merge it, answer ``session.updated``."""
        try:
            validate(msg.get("session"))
        except _Invalid as exc:
            self.error(exc.code, exc.message, exc.param, eid)
            return
        before = (copy.deepcopy(self.audio_in.get("format")),
                  copy.deepcopy(self.audio_in.get("turn_detection")))
        self.session = _merge(self.session, dict(msg["session"]))
        self.conn.record.config = self.session
        if before != (self.audio_in.get("format"), self.audio_in.get("turn_detection")):
            self.seg = self._segmenter(self.seg.t_ms)
        self.event("session.updated", delay, session=copy.deepcopy(self.session))

    def append(self, msg: dict[str, Any], eid: Any) -> npt.NDArray[np.int16] | None:
        """``input_audio_buffer.append``: the decoded samples, counted into the buffer;
        None for bad audio (answered with an error) or audio a fault swallowed."""
        audio = msg.get("audio")
        try:
            raw = base64.b64decode(audio, validate=True) if isinstance(audio, str) else None
        except (binascii.Error, ValueError):
            raw = None
        if raw is None:
            self.error("invalid_value", "Invalid 'audio'. Expected base64-encoded audio bytes.",
                       "audio", eid)
            return None
        encoding, rate = codec(self.audio_in["format"])
        samples = decode_audio(encoding, raw)
        ms = len(samples) * 1000 / rate
        if not self.conn.on_audio(len(raw), ms):
            return None
        self.buffer_ms += ms
        return samples

    def commit_too_small(self, eid: Any) -> bool:
        """``input_audio_buffer.commit`` of under 100 ms: answered with the error."""
        if self.buffer_ms >= 100:
            return False
        self.error("input_audio_buffer_commit_empty", "Error committing input audio buffer: "
                   "buffer too small. Expected at least 100ms of audio, but buffer only has "
                   f"{self.buffer_ms:.2f}ms of audio.", None, eid)
        return True

    def on_message(self, msg: dict[str, Any]) -> None:
        raise NotImplementedError


# --------------------------------------------------------------------------- server


class OpenAIWireFake(FakeSttServer):
    """Base of the OpenAI fakes: upgrade, first answer, faults, the event loop."""

    path = "/v1/realtime"

    def check_query(self, record: ConnRecord) -> Response | None:
        """After auth: the query of an accepted key holder (``model``, ``intent``)."""
        return None

    def check_handshake(self, request: Request, record: ConnRecord) -> Response | None:
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or not auth[7:].strip():
            return json_response(401, {"error": {
                "message": "You didn't provide an API key. You need to provide your API key in "
                           "an Authorization header using Bearer auth (i.e. Authorization: "
                           "Bearer YOUR_KEY).",
                "type": "invalid_request_error", "param": None, "code": None}})
        record.authorized = auth[7:].strip() == self.api_key
        return self.check_query(record)

    @staticmethod
    def missing_model() -> Response:
        return json_response(400, {"error": {
            "message": "Missing required parameter: 'model'.",
            "type": "invalid_request_error", "param": "model",
            "code": "missing_required_parameter"}})

    def inject_error(self, conn: FakeConn) -> None:
        conn.send({"type": "error", "event_id": conn.next_id("event"), "error": {
            "type": "server_error", "code": "server_error", "param": None, "event_id": None,
            "message": "The server had an error while processing your request. Sorry about "
                       "that!"}})

    def refused(self, state: WireSession, reject_beta: bool = True) -> bool:
        """A beta client or a wrong key: the error event, then the close; True if so."""
        conn = state.conn
        if "openai-beta" in conn.record.headers and reject_beta:
            state.error("beta_api_shape_disabled", "The Realtime Beta API is no longer "
                        "supported. Please use /v1/realtime for the GA API.")
            conn.close(4000, "beta_api_shape_disabled")
            return True
        if not conn.record.authorized:
            request = conn.ws.request
            auth = request.headers.get("Authorization", "") if request else ""
            state.error("invalid_api_key", f"Incorrect API key provided: {mask_key(auth[7:])}. "
                        "You can find your API key at https://platform.openai.com/account/"
                        "api-keys.")
            conn.close(3000, "invalid_request_error.invalid_api_key")
            return True
        return False

    async def read_events(self, state: WireSession) -> None:
        """Each client event to ``state.on_message``; malformed ones get an ``error``."""
        conn = state.conn
        async for message in conn.ws:
            if conn.closing:
                continue
            if isinstance(message, bytes):
                state.error("invalid_value", "Binary frames are not supported; send JSON "
                            "client events.", None)
                continue
            try:
                msg = json.loads(message)
            except ValueError:
                state.error("invalid_json", "The message could not be parsed as JSON.")
                continue
            if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
                state.error("missing_required_parameter", "Missing required parameter: "
                            "'type'.", "type")
                continue
            state.on_message(msg)
