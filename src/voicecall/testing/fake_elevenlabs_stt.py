"""A local ElevenLabs Scribe realtime STT server that speaks the real wire protocol.

``async with FakeElevenLabsSTT(transcripts=["Where is my order?"]) as fake:``
serves ``/v1/speech-to-text/realtime`` on ``fake.url`` (``ws://127.0.0.1:<port>``;
point ``baseUrl`` at it). Like the service it:

* authenticates with the ``xi-api-key`` header (or a ``?token=`` from ``tokens``);
  a bad key gets an ``auth_error`` message and a 1008 close, or with
  ``auth_failure="http"`` a plain HTTP 401 on the upgrade;
* checks the query (``model_id``, ``audio_format``, ``commit_strategy`` and the
  VAD ranges), answering mistakes with ``invalid_request`` and a 1008 close;
* opens with ``session_started`` whose ``config`` holds the effective values;
* validates every ``input_audio_chunk`` strictly (known fields only, base64,
  ``commit`` bool, ``sample_rate`` equal to the format's, ``previous_text`` on
  the first chunk only) and answers a bad one with ``input_error`` + 1008;
* decodes the audio per ``audio_format`` and segments it with an RMS detector:
  speech sends ``partial_transcript`` growing a word at a time, and the end of
  an utterance (``vad``: the configured silence; ``manual``: a ``commit``)
  sends ``committed_transcript`` with the next scripted text (plus
  ``committed_transcript_with_timestamps`` when timestamps are on).

Faults: ``reject_status`` (HTTP status on the upgrade), ``drop_after_ms`` (abort
the TCP connection once that much audio arrived), ``error_after_ms`` (send
``error_type`` then close with ``error_close_code``), and delays before
``session_started``, each partial and each commit. Everything received is kept
in ``fake.connections``.

What the real service does that is *not* documented and is guessed here: the
close codes (1008 after auth/validation errors), the exact error texts, the
server-side VAD defaults reported in ``session_started``, and ``sample_rate``
being required on every chunk (the official SDK always sends it).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request

from voicecall.testing.fake_stt._server import AudioRecord, JsonAudioFake, Outbox, decode_audio

PATH = "/v1/speech-to-text/realtime"
MODELS = ("scribe_v2_realtime",)
AUDIO_FORMATS: dict[str, int] = {
    "ulaw_8000": 8000, "pcm_8000": 8000, "pcm_16000": 16000, "pcm_22050": 22050,
    "pcm_24000": 24000, "pcm_44100": 44100, "pcm_48000": 48000,
}
CHUNK_FIELDS = frozenset({"message_type", "audio_base_64", "commit", "sample_rate",
                          "previous_text"})
BOOL_PARAMS = ("include_timestamps", "include_language_detection", "enable_logging",
               "filter_background_audio", "no_verbatim")
KNOWN_PARAMS = frozenset({
    "model_id", "audio_format", "commit_strategy", "language_code", "vad_silence_threshold_secs",
    "vad_threshold", "min_speech_duration_ms", "min_silence_duration_ms", "keyterms", "token",
    *BOOL_PARAMS,
})
# Server-side defaults reported in session_started when the client leaves them out.
DEFAULT_VAD = {"vad_silence_threshold_secs": 1.5, "vad_threshold": 0.4,
               "min_speech_duration_ms": 100, "min_silence_duration_ms": 100}
MAX_CHUNK_BYTES = 1024 * 1024


class _Reject(Exception):
    def __init__(self, message_type: str, error: str) -> None:
        super().__init__(error)
        self.message_type = message_type
        self.error = error


@dataclass
class ScribeConnection(AudioRecord):
    """What one client connection sent and was sent."""

    config: dict[str, Any] = field(default_factory=dict)
    commits: int = 0

    @property
    def sample_rate(self) -> int:
        return int(self.config.get("sample_rate", 8000))

    def chunks(self) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("message_type") == "input_audio_chunk"]


class FakeElevenLabsSTT(JsonAudioFake[ScribeConnection]):
    path = PATH

    def __init__(self, transcripts: Sequence[str] = (), *, api_key: str = "xi-test-key",
                 tokens: Sequence[str] = (), models: Sequence[str] = MODELS,
                 session_delay_s: float = 0.0, partial_delay_s: float = 0.0,
                 final_delay_s: float = 0.0, partial_every_ms: int = 60,
                 rms_threshold: float = 0.02,
                 auth_failure: Literal["message", "http"] = "message",
                 reject_status: int | None = None, drop_after_ms: float | None = None,
                 error_after_ms: float | None = None, error_type: str = "transcriber_error",
                 error_message: str = "Transcriber failed unexpectedly",
                 error_close_code: int | None = 1011) -> None:
        super().__init__(transcripts, api_key=api_key, session_delay_s=session_delay_s,
                         rms_threshold=rms_threshold, auth_failure=auth_failure,
                         reject_status=reject_status, drop_after_ms=drop_after_ms,
                         error_after_ms=error_after_ms, error_close_code=error_close_code)
        self.tokens = set(tokens)
        self.models = tuple(models)
        self.partial_delay_s = partial_delay_s
        self.final_delay_s = final_delay_s
        self.partial_every_ms = max(20, partial_every_ms)
        self.error_type = error_type
        self.error_message = error_message

    # -- handshake ---------------------------------------------------------------
    def authorized(self, request: Request) -> bool:
        key = request.headers.get("xi-api-key")
        if key is not None:
            return key == self.api_key
        token = parse_qs(urlsplit(request.path).query).get("token", [""])[-1]
        return bool(token) and token in self.tokens

    def refusal_body(self, status: int) -> str:
        if status == 404:
            return '{"detail":"Not Found"}\n'
        if status == 401:
            return '{"detail":{"status":"invalid_api_key","message":"Invalid API key"}}\n'
        return '{"detail":"Service temporarily unavailable"}\n'

    def new_record(self, path: str, query: dict[str, list[str]],
                   headers: dict[str, str]) -> ScribeConnection:
        return ScribeConnection(path=path, query=query, headers=headers)

    def error_event(self) -> tuple[dict[str, Any], str]:
        return {"message_type": self.error_type, "error": self.error_message}, self.error_type

    def _effective_config(self, query: dict[str, list[str]]) -> dict[str, Any]:
        for name, values in query.items():
            if name not in KNOWN_PARAMS:
                raise _Reject("invalid_request", f"Unknown query parameter: {name}")
            if name != "keyterms" and len(values) > 1:
                raise _Reject("invalid_request", f"Query parameter given twice: {name}")
        one = {k: v[-1] for k, v in query.items()}
        model = one.get("model_id")
        if not model:
            raise _Reject("invalid_request", "model_id is required")
        if model not in self.models:
            raise _Reject("invalid_request", f"Invalid model_id: {model}")
        fmt = one.get("audio_format", "pcm_16000")
        if fmt not in AUDIO_FORMATS:
            raise _Reject("invalid_request", f"Invalid audio_format: {fmt}")
        strategy = one.get("commit_strategy", "manual")
        if strategy not in ("manual", "vad"):
            raise _Reject("invalid_request", f"Invalid commit_strategy: {strategy}")
        config: dict[str, Any] = {
            "sample_rate": AUDIO_FORMATS[fmt], "audio_format": fmt, "model_id": model,
            "commit_strategy": strategy, "language_code": one.get("language_code"),
            **DEFAULT_VAD,
        }
        lang = one.get("language_code")
        if lang is not None and not re.fullmatch(r"[A-Za-z]{2,3}", lang):
            raise _Reject("invalid_request", f"Invalid language_code: {lang}")
        for name, lo, hi, kind in (("vad_silence_threshold_secs", 0.3, 3.0, float),
                                   ("vad_threshold", 0.1, 0.9, float),
                                   ("min_speech_duration_ms", 50, 2000, int),
                                   ("min_silence_duration_ms", 50, 2000, int)):
            if name in one:
                try:
                    value = kind(one[name])
                except ValueError:
                    raise _Reject("invalid_request", f"Invalid {name}: {one[name]}") from None
                if not lo <= value <= hi:
                    raise _Reject("invalid_request", f"{name} must be between {lo} and {hi}")
                config[name] = value
        for name in BOOL_PARAMS:
            raw = one.get(name, "false")
            if raw.lower() not in ("true", "false"):
                raise _Reject("invalid_request", f"Invalid boolean for {name}: {raw}")
            config[name] = raw.lower() == "true"
        config["keyterms"] = query.get("keyterms", [])
        return config

    # -- session -----------------------------------------------------------------
    async def session(self, ws: ServerConnection, conn: ScribeConnection,
                      outbox: Outbox) -> None:
        assert ws.request is not None
        if not self.authorized(ws.request):
            await self.refuse(ws, outbox, {"message_type": "auth_error",
                                           "error": "Invalid API key"}, "Invalid API key")
            return
        conn.authorized = True
        try:
            conn.config = self._effective_config(conn.query)
        except _Reject as exc:
            conn.protocol_errors.append(exc.error)
            await self.refuse(ws, outbox, {"message_type": exc.message_type,
                                           "error": exc.error}, exc.message_type)
            return
        if await self.hello(ws, outbox, {"message_type": "session_started",
                                         "session_id": uuid.uuid4().hex,
                                         "config": conn.config}):
            await self._serve(ws, conn, outbox)

    async def _serve(self, ws: ServerConnection, conn: ScribeConnection,
                     outbox: Outbox) -> None:
        cfg = conn.config
        vad = cfg["commit_strategy"] == "vad"
        seg = self.segmenter(cfg["sample_rate"],
                             cfg["vad_silence_threshold_secs"] * 1000 if vad else None,
                             self.partial_every_ms)
        words: list[str] = []
        shown = 0
        text = ""

        def commit() -> None:
            nonlocal words, shown, text
            conn.commits += 1
            outbox.send({"message_type": "committed_transcript", "text": text},
                        self.final_delay_s)
            if cfg["include_timestamps"] or cfg["include_language_detection"]:
                outbox.send({
                    "message_type": "committed_transcript_with_timestamps", "text": text,
                    "language_code": cfg["language_code"] or "en",
                    "words": _words(text) if cfg["include_timestamps"] else None})
            words, shown, text = [], 0, ""
            seg.flush()

        while True:
            raw = await ws.recv()
            try:
                msg = self._check_chunk(raw, conn)
            except _Reject as exc:
                await self.protocol_error(ws, conn, outbox, exc.error, {
                    "message_type": exc.message_type, "error": exc.error}, exc.message_type)
                return
            payload = base64.b64decode(msg["audio_base_64"])
            if payload:
                conn.audio.extend(payload)
                pcm = decode_audio("mulaw" if cfg["audio_format"] == "ulaw_8000" else "pcm16",
                                   payload)
                conn.pcm.append(pcm)
                for ev in seg.feed(pcm):
                    if ev.kind == "start":
                        text = self.next_transcript()
                        words, shown = text.split(), 0
                    elif ev.kind == "word" and shown < len(words):
                        shown += 1
                        outbox.send({"message_type": "partial_transcript",
                                     "text": " ".join(words[:shown])}, self.partial_delay_s)
                    elif ev.kind == "end":
                        commit()
            if msg["commit"]:
                commit()
            if self.check_faults(ws, conn, outbox):
                return

    def _check_chunk(self, raw: str | bytes, conn: ScribeConnection) -> dict[str, Any]:
        if isinstance(raw, bytes):
            raise _Reject("input_error", "Binary frames are not supported; send JSON")
        try:
            msg = json.loads(raw)
        except ValueError:
            raise _Reject("input_error", "Message is not valid JSON") from None
        if not isinstance(msg, dict):
            raise _Reject("input_error", "Message must be a JSON object")
        conn.messages.append(msg)
        if msg.get("message_type") != "input_audio_chunk":
            raise _Reject("input_error", f"Unknown message_type: {msg.get('message_type')!r}")
        extra = set(msg) - CHUNK_FIELDS
        if extra:
            raise _Reject("input_error", f"Unknown field(s): {', '.join(sorted(extra))}")
        audio = msg.get("audio_base_64")
        if not isinstance(audio, str):
            raise _Reject("input_error", "audio_base_64 must be a string")
        try:
            payload = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError):
            raise _Reject("input_error", "audio_base_64 is not valid base64") from None
        if len(payload) > MAX_CHUNK_BYTES:
            raise _Reject("chunk_size_exceeded", "Audio chunk is too large")
        if conn.config["audio_format"].startswith("pcm_") and len(payload) % 2:
            raise _Reject("input_error", "PCM audio must be whole 16-bit samples")
        if not isinstance(msg.get("commit"), bool):
            raise _Reject("input_error", "commit must be a boolean")
        rate = msg.get("sample_rate")
        if isinstance(rate, bool) or not isinstance(rate, int):
            raise _Reject("input_error", "sample_rate must be an integer")
        if rate != conn.sample_rate:
            raise _Reject("input_error", f"sample_rate {rate} does not match audio_format "
                                         f"{conn.config['audio_format']}")
        previous = msg.get("previous_text")
        if previous is not None:
            if not isinstance(previous, str):
                raise _Reject("input_error", "previous_text must be a string")
            if len(conn.chunks()) > 1:
                raise _Reject("input_error", "previous_text is only allowed in the first chunk")
        return msg


def _words(text: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    t = 0.0
    for i, word in enumerate(text.split()):
        if i:
            out.append({"text": " ", "start": t, "end": t, "type": "spacing"})
        out.append({"text": word, "start": t, "end": t + 0.25, "type": "word",
                    "logprob": -0.05})
        t += 0.3
    return out
