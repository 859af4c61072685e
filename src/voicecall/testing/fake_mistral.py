"""A local Mistral Voxtral realtime transcription server that speaks the real wire protocol.

``async with FakeMistral(transcripts=["Where is my order?"]) as fake:`` serves
``/v1/audio/transcriptions/realtime`` on ``fake.url`` (``ws://127.0.0.1:<port>``;
point ``baseUrl`` at it). Like the service it:

* requires ``Authorization: Bearer <key>``; a bad key gets HTTP 401 on the
  upgrade (or, with ``auth_failure="message"``, an ``error`` then a 1008 close);
* requires ``?model=`` naming a realtime model;
* opens with ``session.created`` (default format pcm_s16le / 16 kHz) and answers
  each ``session.update`` with ``session.updated``; once audio has started the
  session fields are frozen ("Session fields cannot be changed after audio has
  started", the stream goes on);
* validates ``input_audio.append`` (base64, at most 262144 decoded bytes, whole
  samples), decodes it per the negotiated encoding and runs an RMS detector:
  speech produces ``transcription.language`` once and
  ``transcription.text.delta`` a word at a time;
* does no endpointing, like the realtime models: ``input_audio.flush`` finishes
  the utterance (remaining deltas, a ``transcription.segment`` and
  ``transcription.done`` with the next scripted text) and the session goes on;
  ``input_audio.end`` does the same and closes with 1000;
* answers anything else with ``error {error:{message, code}}`` and a 1008 close.

Faults: ``reject_status``, ``drop_after_ms`` (abort the TCP connection once that
much audio arrived), ``error_after_ms`` (an ``error`` then a close with
``error_close_code``), and delays before ``session.created``, each delta and each
``transcription.done``. Everything received is kept in ``fake.connections``.

Guessed (not in the SDK or docs): the numeric error codes, the HTTP 401 body,
the close codes, and that unknown query parameters are refused.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request

from voicecall.testing.fake_stt._server import (
    AudioRecord,
    JsonAudioFake,
    Outbox,
    Segmenter,
    alaw_to_pcm16,
    decode_audio,
)

PATH = "/v1/audio/transcriptions/realtime"
MODELS = ("voxtral-mini-transcribe-realtime-2602", "voxtral-mini-transcribe-realtime-3")
# encoding -> bytes per sample
ENCODINGS: dict[str, int] = {"pcm_s16le": 2, "pcm_s32le": 4, "pcm_f16le": 2, "pcm_f32le": 4,
                             "pcm_mulaw": 1, "pcm_alaw": 1}
SAMPLE_RATES = (8000, 16000, 22050, 44100, 48000)
MAX_APPEND_BYTES = 262_144
DEFAULT_FORMAT = {"encoding": "pcm_s16le", "sample_rate": 16000}

_SIMPLE = {"pcm_mulaw": "mulaw", "pcm_alaw": "alaw", "pcm_s16le": "pcm16"}  # -> decode_audio
_alaw_to_pcm16 = alaw_to_pcm16      # where this fake's tests have always found it

ERR_BAD_REQUEST = 400
ERR_UNAUTHORIZED = 401
ERR_INTERNAL = 500


class _Reject(Exception):
    def __init__(self, message: str, code: int = ERR_BAD_REQUEST) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass
class VoxtralConnection(AudioRecord):
    """What one client connection sent and was sent."""

    session: dict[str, Any] = field(default_factory=dict)
    flushes: int = 0
    ended: bool = False

    @property
    def audio_format(self) -> dict[str, Any]:
        fmt = self.session.get("audio_format")
        return fmt if isinstance(fmt, dict) else dict(DEFAULT_FORMAT)

    @property
    def sample_rate(self) -> int:
        return int(self.audio_format["sample_rate"])

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("type") == kind]


class FakeMistral(JsonAudioFake[VoxtralConnection]):
    path = PATH

    def __init__(self, transcripts: Sequence[str] = (), *, api_key: str = "mistral-test-key",
                 models: Sequence[str] = MODELS, session_delay_s: float = 0.0,
                 delta_delay_s: float = 0.0, done_delay_s: float = 0.0,
                 word_every_ms: int = 60, rms_threshold: float = 0.02, language: str = "en",
                 auth_failure: Literal["http", "message"] = "http",
                 reject_status: int | None = None, drop_after_ms: float | None = None,
                 error_after_ms: float | None = None,
                 error_message: str = "Internal server error", error_code: int = ERR_INTERNAL,
                 error_close_code: int | None = 1011) -> None:
        super().__init__(transcripts, api_key=api_key, session_delay_s=session_delay_s,
                         rms_threshold=rms_threshold, auth_failure=auth_failure,
                         reject_status=reject_status, drop_after_ms=drop_after_ms,
                         error_after_ms=error_after_ms, error_close_code=error_close_code)
        self.models = tuple(models)
        self.delta_delay_s = delta_delay_s
        self.done_delay_s = done_delay_s
        self.word_every_ms = max(20, word_every_ms)
        self.language = language
        self.error_message = error_message
        self.error_code = error_code

    # -- handshake ---------------------------------------------------------------
    def authorized(self, request: Request) -> bool:
        return request.headers.get("authorization") == f"Bearer {self.api_key}"

    def refusal_body(self, status: int) -> str:
        if status == 404:
            return '{"detail":"Not Found"}\n'
        if status == 401:
            return json.dumps({"message": "Unauthorized", "request_id": uuid.uuid4().hex}) + "\n"
        return '{"message":"Service unavailable"}\n'

    def new_record(self, path: str, query: dict[str, list[str]],
                   headers: dict[str, str]) -> VoxtralConnection:
        return VoxtralConnection(path=path, query=query, headers=headers)

    def error_event(self) -> tuple[dict[str, Any], str]:
        return _error(self.error_message, self.error_code), ""

    def _check_query(self, query: dict[str, list[str]]) -> str:
        unknown = set(query) - {"model"}
        if unknown:
            raise _Reject(f"Unknown query parameter(s): {', '.join(sorted(unknown))}")
        models = query.get("model", [])
        if len(models) != 1 or not models[0]:
            raise _Reject("Query parameter 'model' is required")
        if models[0] not in self.models:
            raise _Reject(f"Invalid model: {models[0]}")
        return models[0]

    # -- session -----------------------------------------------------------------
    async def session(self, ws: ServerConnection, conn: VoxtralConnection,
                      outbox: Outbox) -> None:
        assert ws.request is not None
        if not self.authorized(ws.request):
            await self.refuse(ws, outbox, _error("Unauthorized", ERR_UNAUTHORIZED),
                              "Unauthorized")
            return
        conn.authorized = True
        try:
            model = self._check_query(conn.query)
        except _Reject as exc:
            conn.protocol_errors.append(exc.message)
            await self.refuse(ws, outbox, _error(exc.message, exc.code), "invalid request")
            return
        conn.session = {"request_id": uuid.uuid4().hex, "model": model,
                        "audio_format": dict(DEFAULT_FORMAT), "target_streaming_delay_ms": None}
        if await self.hello(ws, outbox, {"type": "session.created",
                                         "session": dict(conn.session)}):
            await self._serve(ws, conn, outbox)

    async def _serve(self, ws: ServerConnection, conn: VoxtralConnection,
                     outbox: Outbox) -> None:
        seg: Segmenter | None = None
        words: list[str] = []
        shown = 0
        text = ""
        said_language = False
        utterance_ms = 0.0

        def delta(upto: int) -> None:
            nonlocal shown
            while shown < upto:
                piece = words[shown] if shown == 0 else " " + words[shown]
                shown += 1
                outbox.send({"type": "transcription.text.delta", "text": piece},
                            self.delta_delay_s)

        def finish(close: bool) -> None:
            nonlocal words, shown, text, utterance_ms
            delta(len(words))
            secs = round(utterance_ms / 1000, 3)
            if text:
                outbox.send({"type": "transcription.segment", "text": text, "start": 0.0,
                             "end": secs})
            outbox.send({
                "type": "transcription.done", "text": text, "model": conn.session["model"],
                "language": self.language if text else None,
                "usage": {"prompt_audio_seconds": int(secs), "prompt_tokens": len(words) * 4,
                          "completion_tokens": len(words), "total_tokens": len(words) * 5},
            }, self.done_delay_s)
            if close:
                outbox.close(1000)
            words, shown, text, utterance_ms = [], 0, "", 0.0
            if seg is not None:
                seg.flush()

        while True:
            raw = await ws.recv()
            try:
                msg = self._parse(raw, conn)
                kind = msg["type"]
                if kind == "session.update":
                    if conn.audio:
                        # Not fatal: the reply is an error and the stream goes on.
                        conn.protocol_errors.append("session.update after audio")
                        outbox.send(_error(
                            "Session fields cannot be changed after audio has started",
                            ERR_BAD_REQUEST))
                        continue
                    self._apply_update(msg, conn)
                    outbox.send({"type": "session.updated", "session": dict(conn.session)})
                    continue
                if kind == "input_audio.append":
                    payload = self._check_append(msg, conn)
                elif kind == "input_audio.flush":
                    _only(msg, "type")
                    conn.flushes += 1
                    finish(close=False)
                    continue
                elif kind == "input_audio.end":
                    _only(msg, "type")
                    conn.ended = True
                    finish(close=True)
                    await ws.wait_closed()
                    return
                else:
                    raise _Reject(f"Unknown message type: {kind!r}")
            except _Reject as exc:
                await self.protocol_error(ws, conn, outbox, exc.message,
                                          _error(exc.message, exc.code))
                return

            fmt = conn.audio_format
            if seg is None:
                seg = self.segmenter(int(fmt["sample_rate"]), None, self.word_every_ms)
            conn.audio.extend(payload)
            pcm = _decode(payload, str(fmt["encoding"]))
            conn.pcm.append(pcm)
            if seg.in_speech:
                utterance_ms += len(pcm) * 1000 / int(fmt["sample_rate"])
            for ev in seg.feed(pcm):
                if ev.kind == "start":
                    text = self.next_transcript()
                    words, shown = text.split(), 0
                    if not said_language:
                        said_language = True
                        outbox.send({"type": "transcription.language",
                                     "audio_language": self.language})
                elif ev.kind == "word" and shown < len(words):
                    delta(shown + 1)
            if self.check_faults(ws, conn, outbox):
                return

    def _parse(self, raw: str | bytes, conn: VoxtralConnection) -> dict[str, Any]:
        if isinstance(raw, bytes):
            raise _Reject("Binary frames are not supported; send JSON messages")
        try:
            msg = json.loads(raw)
        except ValueError:
            raise _Reject("Invalid JSON") from None
        if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
            raise _Reject("Message must be a JSON object with a 'type'")
        conn.messages.append(msg)
        return msg

    def _apply_update(self, msg: dict[str, Any], conn: VoxtralConnection) -> None:
        _only(msg, "type", "session")
        session = msg.get("session")
        if not isinstance(session, dict) or not session:
            raise _Reject("session.update needs a non-empty 'session' object")
        unknown = set(session) - {"audio_format", "target_streaming_delay_ms"}
        if unknown:
            raise _Reject(f"Unknown session field(s): {', '.join(sorted(unknown))}")
        if "audio_format" in session:
            fmt = session["audio_format"]
            if not isinstance(fmt, dict) or set(fmt) != {"encoding", "sample_rate"}:
                raise _Reject("audio_format must be {encoding, sample_rate}")
            if fmt["encoding"] not in ENCODINGS:
                raise _Reject(f"Unsupported encoding: {fmt['encoding']!r}")
            if fmt["sample_rate"] not in SAMPLE_RATES or isinstance(fmt["sample_rate"], bool):
                raise _Reject(f"Unsupported sample_rate: {fmt['sample_rate']!r}")
            conn.session["audio_format"] = dict(fmt)
        if "target_streaming_delay_ms" in session:
            delay = session["target_streaming_delay_ms"]
            if delay is not None and (isinstance(delay, bool) or not isinstance(delay, int)
                                      or not 80 <= delay <= 2400):
                raise _Reject("target_streaming_delay_ms must be an integer from 80 to 2400")
            conn.session["target_streaming_delay_ms"] = delay

    def _check_append(self, msg: dict[str, Any], conn: VoxtralConnection) -> bytes:
        _only(msg, "type", "audio")
        audio = msg.get("audio")
        if not isinstance(audio, str):
            raise _Reject("input_audio.append needs 'audio' (base64)")
        try:
            payload = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError):
            raise _Reject("audio is not valid base64") from None
        if len(payload) > MAX_APPEND_BYTES:
            raise _Reject(f"audio chunk exceeds {MAX_APPEND_BYTES} bytes")
        width = ENCODINGS[str(conn.audio_format["encoding"])]
        if len(payload) % width:
            raise _Reject("audio length is not a whole number of samples")
        return payload


def _error(message: str, code: int) -> dict[str, Any]:
    return {"type": "error", "error": {"message": message, "code": code}}


def _only(msg: dict[str, Any], *allowed: str) -> None:
    extra = set(msg) - set(allowed)
    if extra:
        raise _Reject(f"Unknown field(s) in {msg.get('type')}: {', '.join(sorted(extra))}")


def _decode(payload: bytes, encoding: str) -> npt.NDArray[np.int16]:
    if encoding in _SIMPLE:
        return decode_audio(_SIMPLE[encoding], payload)
    if encoding == "pcm_s32le":
        return (np.frombuffer(payload, dtype="<i4") >> 16).astype(np.int16)
    floats = np.frombuffer(payload, dtype="<f4" if encoding == "pcm_f32le" else "<f2")
    return (np.clip(floats.astype(np.float64), -1.0, 1.0) * 32767).astype(np.int16)
