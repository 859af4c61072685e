"""A fake OpenAI Realtime transcription endpoint (``/v1/realtime?intent=transcription``).

Behaviour modelled on the GA interface (``ai-speech-apis.md`` §1-§2, §9):

- auth: no ``Authorization: Bearer`` header -> HTTP 401 with an OpenAI error
  body; a wrong key -> the upgrade succeeds, then an ``error`` event
  (``invalid_api_key``, key echoed masked) and close ``3000``
  ``invalid_request_error.invalid_api_key``, as the live service does;
  an ``OpenAI-Beta`` header -> ``beta_api_shape_disabled`` and close ``4000``;
- ``session.created`` on connect (after ``ready_delay``), with the server
  defaults (PCM 24 kHz, server VAD 0.5/300/500);
- ``session.update`` validated strictly: ``session.type`` required and must be
  ``transcription`` (``realtime`` when ``?model=`` made it a conversation
  session); only ``type``/``audio``/``include``; only ``audio.input``; known
  formats, transcription models, VAD fields and ranges. A bad update gets an
  ``error`` event (``missing_required_parameter``, ``unknown_parameter``,
  ``invalid_value``, ``invalid_type``) that echoes the client's ``event_id``,
  and the session is left unchanged; a good one gets ``session.updated``;
- ``input_audio_buffer.append`` audio decoded per the session format; server
  VAD from audio energy (threshold scaled by the session's ``threshold``,
  turn end after ``silence_duration_ms``), emitting ``speech_started``,
  ``speech_stopped``, ``committed``, then transcription ``delta`` events word
  by word (after the commit, as ``gpt-4o-transcribe`` does; ``whisper-1``
  sends one delta) and ``completed`` with ``usage``;
- ``input_audio_buffer.commit`` (under 100 ms -> ``input_audio_buffer_commit_empty``)
  and ``.clear``;
- fault injection: ``error_after_ms`` sends a ``server_error`` event (the
  session stays up); ``close_after_ms`` closes/aborts.

``record.config`` is the session in force; ``record.messages`` holds every
client event except audio appends.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import time
from typing import Any

from websockets.http11 import Request, Response

from voicecall.testing.fake_stt._server import (
    ConnRecord,
    FakeConn,
    FakeSttServer,
    SegEvent,
    Segmenter,
    decode_audio,
    json_response,
    mask_key,
)

__all__ = ["FakeOpenAITranscription"]

TRANSCRIBE_MODELS = ("whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe",
                     "gpt-4o-mini-transcribe-2025-12-15", "gpt-4o-transcribe-diarize",
                     "gpt-transcribe", "gpt-live-transcribe", "gpt-realtime-whisper")
NO_VAD_MODELS = ("gpt-live-transcribe", "gpt-realtime-whisper")
FORMATS = ("audio/pcm", "audio/pcmu", "audio/pcma")
CLIENT_EVENTS = ("session.update", "input_audio_buffer.append", "input_audio_buffer.commit",
                 "input_audio_buffer.clear", "conversation.item.create",
                 "conversation.item.retrieve", "conversation.item.truncate",
                 "conversation.item.delete", "response.create", "response.cancel",
                 "output_audio_buffer.clear")
SESSION_KEYS = ("type", "audio", "include")
INPUT_KEYS = ("format", "noise_reduction", "transcription", "turn_detection")
TRANSCRIPTION_KEYS = ("model", "language", "prompt", "keywords", "languages", "delay")
SERVER_VAD_KEYS = ("type", "threshold", "prefix_padding_ms", "silence_duration_ms",
                   "idle_timeout_ms")
SEMANTIC_VAD_KEYS = ("type", "eagerness")
EAGERNESS_MS = {"low": 1500.0, "medium": 800.0, "auto": 800.0, "high": 400.0}
INCLUDE_VALUES = ("item.input_audio_transcription.logprobs",)


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


def validate_session(session: Any, expected_type: str) -> None:
    """Raise ``_Invalid`` the way the Realtime API words it."""
    s = _need_object(session, "session")
    if "type" not in s:
        raise _Invalid("missing_required_parameter", "Missing required parameter: "
                       "'session.type'.", "session.type")
    if s["type"] != expected_type:
        raise _Invalid("invalid_value", f"Invalid value: '{s['type']}'. Supported values are: "
                       f"'{expected_type}'.", "session.type")
    _check_keys(s, SESSION_KEYS, "session")
    include = s.get("include")
    if include is not None:
        if not isinstance(include, list) or any(v not in INCLUDE_VALUES for v in include):
            raise _Invalid("invalid_value", "Invalid value for 'session.include'. Supported "
                           f"values are: {_supported(INCLUDE_VALUES)}.", "session.include")
    if "audio" not in s:
        return
    audio = _need_object(s["audio"], "session.audio")
    _check_keys(audio, ("input",), "session.audio")
    if "input" not in audio:
        return
    inp = _need_object(audio["input"], "session.audio.input")
    _check_keys(inp, INPUT_KEYS, "session.audio.input")
    where = "session.audio.input"
    if "format" in inp:
        fmt = _need_object(inp["format"], f"{where}.format")
        _check_keys(fmt, ("type", "rate"), f"{where}.format")
        if fmt.get("type") not in FORMATS:
            raise _Invalid("invalid_value", f"Invalid value: '{fmt.get('type')}'. Supported "
                           f"values are: {_supported(FORMATS)}.", f"{where}.format.type")
        if fmt["type"] == "audio/pcm" and fmt.get("rate", 24000) != 24000:
            raise _Invalid("invalid_value", f"Invalid value: {fmt.get('rate')}. Supported "
                           "values are: 24000.", f"{where}.format.rate")
        if fmt["type"] != "audio/pcm" and "rate" in fmt:
            raise _Invalid("unknown_parameter", f"Unknown parameter: '{where}.format.rate'.",
                           f"{where}.format.rate")
    nr = inp.get("noise_reduction")
    if nr is not None:
        nr = _need_object(nr, f"{where}.noise_reduction")
        _check_keys(nr, ("type",), f"{where}.noise_reduction")
        if nr.get("type") not in ("near_field", "far_field"):
            raise _Invalid("invalid_value", f"Invalid value: '{nr.get('type')}'. Supported "
                           "values are: 'near_field' and 'far_field'.",
                           f"{where}.noise_reduction.type")
    model: Any = None
    tr = inp.get("transcription")
    if tr is not None:
        tr = _need_object(tr, f"{where}.transcription")
        _check_keys(tr, TRANSCRIPTION_KEYS, f"{where}.transcription")
        model = tr.get("model")
        if model not in TRANSCRIBE_MODELS:
            raise _Invalid("invalid_value", f"Invalid value: '{model}'. Supported values are: "
                           f"{_supported(TRANSCRIBE_MODELS)}.", f"{where}.transcription.model")
        for key in ("language", "prompt"):
            if key in tr and not isinstance(tr[key], str):
                raise _Invalid("invalid_type", f"Invalid type for '{where}.transcription.{key}'"
                               ": expected a string.", f"{where}.transcription.{key}")
    td = inp.get("turn_detection", "absent")
    if td is None or td == "absent":
        return
    td = _need_object(td, f"{where}.turn_detection")
    kind = td.get("type")
    tw = f"{where}.turn_detection"
    if kind == "server_vad":
        _check_keys(td, SERVER_VAD_KEYS, tw)
        _number(td, "threshold", tw, 0.0, 1.0)
        _number(td, "prefix_padding_ms", tw, 0, 10_000)
        _number(td, "silence_duration_ms", tw, 0, 10_000)
    elif kind == "semantic_vad":
        _check_keys(td, SEMANTIC_VAD_KEYS, tw)
        if td.get("eagerness", "auto") not in EAGERNESS_MS:
            raise _Invalid("invalid_value", f"Invalid value: '{td.get('eagerness')}'. "
                           "Supported values are: 'low', 'medium', 'high', and 'auto'.",
                           f"{tw}.eagerness")
    else:
        raise _Invalid("invalid_value", f"Invalid value: '{kind}'. Supported values are: "
                       "'server_vad' and 'semantic_vad'.", f"{tw}.type")
    if model in NO_VAD_MODELS:
        raise _Invalid("invalid_value", f"Turn detection is not supported with '{model}'; set "
                       "'turn_detection' to null and commit the buffer yourself.", tw)


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Partial update: absent fields stay, dicts merge, anything else (null too) replaces."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "format":
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def default_session(kind: str) -> dict[str, Any]:
    return {
        "type": kind,
        "id": f"sess_{int(time.time() * 1000):x}",
        "object": "realtime.transcription_session" if kind == "transcription"
        else "realtime.session",
        "expires_at": int(time.time()) + 3600,
        "audio": {"input": {
            "format": {"type": "audio/pcm", "rate": 24000},
            "noise_reduction": None,
            "transcription": None,
            "turn_detection": {"type": "server_vad", "threshold": 0.5,
                               "prefix_padding_ms": 300, "silence_duration_ms": 500},
        }},
        "include": None,
    }


class _Session:
    """Protocol state of one connection."""

    def __init__(self, fake: FakeOpenAITranscription, conn: FakeConn, kind: str) -> None:
        self.fake = fake
        self.conn = conn
        self.kind = kind
        self.session = default_session(kind)
        conn.record.config = self.session
        self.seg = self._segmenter(0.0)
        self.item: str | None = None
        self.previous_item: str | None = None
        self.transcript = ""
        self.buffer_ms = 0.0
        self.buffer_speech = False

    # -------------------------------------------------------- helpers

    @property
    def audio_in(self) -> dict[str, Any]:
        value: dict[str, Any] = self.session["audio"]["input"]
        return value

    def _format(self) -> tuple[str, int]:
        kind = self.audio_in["format"].get("type")
        return {"audio/pcmu": ("mulaw", 8000), "audio/pcma": ("alaw", 8000)}.get(
            kind, ("pcm16", 24000))

    def _segmenter(self, offset_ms: float) -> Segmenter:
        td = self.audio_in.get("turn_detection") or {}
        threshold = float(td.get("threshold", 0.5)) if td.get("type") == "server_vad" else 0.5
        if td.get("type") == "semantic_vad":
            silence = EAGERNESS_MS.get(td.get("eagerness", "auto"), 800.0)
        else:
            silence = float(td.get("silence_duration_ms", 500))
        _, rate = self._format()
        return Segmenter(rate, threshold=self.fake.rms_threshold * threshold / 0.5,
                         end_silence_ms=silence, min_speech_ms=self.fake.min_speech_ms,
                         word_ms=self.fake.word_ms, offset_ms=offset_ms)

    def event(self, kind: str, delay: float = 0.0, **fields: Any) -> None:
        self.conn.send({"type": kind, "event_id": self.conn.next_id("event"), **fields}, delay)

    def error(self, code: str | None, message: str, param: str | None = None,
              client_event_id: Any = None, kind: str = "invalid_request_error") -> None:
        self.event("error", error={"type": kind, "code": code, "message": message,
                                   "param": param, "event_id": client_event_id})

    # -------------------------------------------------------- client events

    def on_message(self, msg: dict[str, Any]) -> None:
        kind = msg.get("type")
        eid = msg.get("event_id")
        if kind != "input_audio_buffer.append":
            self.conn.record.messages.append(msg)
        if kind == "session.update":
            self.on_session_update(msg, eid)
        elif kind == "input_audio_buffer.append":
            self.on_append(msg, eid)
        elif kind == "input_audio_buffer.commit":
            self.on_commit(eid)
        elif kind == "input_audio_buffer.clear":
            self.buffer_ms, self.buffer_speech = 0.0, False
            self.seg = self._segmenter(self.seg.t_ms)
            self.event("input_audio_buffer.cleared")
        elif kind in CLIENT_EVENTS:
            self.error("invalid_value", f"'{kind}' is not supported in a transcription session.",
                       "type", eid)
        else:
            self.error("invalid_value", f"Invalid value: '{kind}'. Supported values are: "
                       f"{_supported(CLIENT_EVENTS)}.", "type", eid)

    def on_session_update(self, msg: dict[str, Any], eid: Any) -> None:
        try:
            validate_session(msg.get("session"), self.kind)
        except _Invalid as exc:
            self.error(exc.code, exc.message, exc.param, eid)
            return
        before = (copy.deepcopy(self.audio_in.get("format")),
                  copy.deepcopy(self.audio_in.get("turn_detection")))
        update = dict(msg["session"])
        self.session = _merge(self.session, update)
        self.conn.record.config = self.session
        after = (self.audio_in.get("format"), self.audio_in.get("turn_detection"))
        if before != after:
            self.seg = self._segmenter(self.seg.t_ms)
        self.event("session.updated", session=copy.deepcopy(self.session))

    def on_append(self, msg: dict[str, Any], eid: Any) -> None:
        audio = msg.get("audio")
        try:
            raw = base64.b64decode(audio, validate=True) if isinstance(audio, str) else None
        except (binascii.Error, ValueError):
            raw = None
        if raw is None:
            self.error("invalid_value", "Invalid 'audio'. Expected base64-encoded audio bytes.",
                       "audio", eid)
            return
        encoding, rate = self._format()
        samples = decode_audio(encoding, raw)
        ms = len(samples) * 1000 / rate
        if not self.conn.on_audio(len(raw), ms):
            return
        self.buffer_ms += ms
        td = self.audio_in.get("turn_detection")
        for ev in self.seg.feed(samples):
            if ev.kind == "start":
                self.buffer_speech = True
            if td:
                self.on_vad(ev)

    def on_vad(self, ev: SegEvent) -> None:
        if ev.kind == "start":
            self.item = self.conn.next_id("item")
            self.transcript = self.fake.next_transcript()
            td = self.audio_in.get("turn_detection") or {}
            padding = float(td.get("prefix_padding_ms", 300))
            self.event("input_audio_buffer.speech_started",
                       audio_start_ms=int(max(0.0, ev.at_ms - padding)), item_id=self.item)
        elif ev.kind == "end" and self.item is not None:
            self.event("input_audio_buffer.speech_stopped", audio_end_ms=int(self.seg.t_ms),
                       item_id=self.item)
            self.commit(self.item, self.transcript)
            self.item = None

    def on_commit(self, eid: Any) -> None:
        if self.buffer_ms < 100:
            self.error("input_audio_buffer_commit_empty", "Error committing input audio buffer: "
                       f"buffer too small. Expected at least 100ms of audio, but buffer only has "
                       f"{self.buffer_ms:.2f}ms of audio.", None, eid)
            return
        self.seg.flush()
        item = self.item or self.conn.next_id("item")
        transcript = self.transcript if self.item else \
            (self.fake.next_transcript() if self.buffer_speech else "")
        self.item = None
        self.commit(item, transcript)

    def commit(self, item: str, transcript: str) -> None:
        self.event("input_audio_buffer.committed", item_id=item,
                   previous_item_id=self.previous_item)
        self.previous_item = item
        audio_ms = self.buffer_ms
        self.buffer_ms, self.buffer_speech = 0.0, False
        tr = self.audio_in.get("transcription")
        if not tr:
            return          # transcription off: nothing more for this item
        model = tr.get("model", "")
        words = transcript.split()
        deltas = [transcript] if model == "whisper-1" or not words else \
            [w if i == 0 else f" {w}" for i, w in enumerate(words)]
        for i, delta in enumerate(deltas):
            self.event("conversation.item.input_audio_transcription.delta",
                       self.fake.final_delay if i == 0 else 0.0,
                       item_id=item, content_index=0, delta=delta)
        audio_tokens = max(1, int(audio_ms / 100))
        completed: dict[str, Any] = {
            "item_id": item, "content_index": 0, "transcript": transcript,
            "usage": {"type": "tokens", "input_tokens": audio_tokens,
                      "output_tokens": len(words), "total_tokens": audio_tokens + len(words),
                      "input_token_details": {"audio_tokens": audio_tokens, "text_tokens": 0}},
        }
        if INCLUDE_VALUES[0] in (self.session.get("include") or []):
            completed["logprobs"] = [{"token": w, "logprob": -0.02, "bytes": list(w.encode())}
                                     for w in words]
        self.event("conversation.item.input_audio_transcription.completed", **completed)


class FakeOpenAITranscription(FakeSttServer):
    """``async with FakeOpenAITranscription(transcripts=[...]) as fake:`` on ``fake.url``."""

    path = "/v1/realtime"

    def check_handshake(self, request: Request, record: ConnRecord) -> Response | None:
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or not auth[7:].strip():
            return json_response(401, {"error": {
                "message": "You didn't provide an API key. You need to provide your API key in "
                           "an Authorization header using Bearer auth (i.e. Authorization: "
                           "Bearer YOUR_KEY).",
                "type": "invalid_request_error", "param": None, "code": None}})
        record.authorized = auth[7:].strip() == self.api_key
        if record.q("intent") is None and record.q("model") is None:
            return json_response(400, {"error": {
                "message": "Missing required parameter: 'model'.",
                "type": "invalid_request_error", "param": "model",
                "code": "missing_required_parameter"}})
        if record.q("intent") not in (None, "transcription"):
            return json_response(400, {"error": {
                "message": f"Invalid value: '{record.q('intent')}'. Supported values are: "
                           "'transcription'.",
                "type": "invalid_request_error", "param": "intent", "code": "invalid_value"}})
        return None

    def inject_error(self, conn: FakeConn) -> None:
        conn.send({"type": "error", "event_id": conn.next_id("event"), "error": {
            "type": "server_error", "code": "server_error", "param": None, "event_id": None,
            "message": "The server had an error while processing your request. Sorry about "
                       "that!"}})

    async def serve(self, conn: FakeConn) -> None:
        ws, record = conn.ws, conn.record
        kind = "transcription" if record.q("intent") == "transcription" \
            and record.q("model") is None else "realtime"
        state = _Session(self, conn, kind)
        if "openai-beta" in record.headers:
            state.error("beta_api_shape_disabled", "The Realtime Beta API is no longer "
                        "supported. Please use /v1/realtime for the GA API.")
            conn.close(4000, "beta_api_shape_disabled")
        elif not record.authorized:
            auth = ws.request.headers.get("Authorization", "") if ws.request else ""
            state.error("invalid_api_key", f"Incorrect API key provided: {mask_key(auth[7:])}. "
                        "You can find your API key at https://platform.openai.com/account/"
                        "api-keys.")
            conn.close(3000, "invalid_request_error.invalid_api_key")
        else:
            state.event("session.created", self.ready_delay, session=copy.deepcopy(state.session))
        async for message in ws:
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
                state.error("missing_required_parameter", "Missing required parameter: 'type'.",
                            "type")
                continue
            state.on_message(msg)
