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

import asyncio
import base64
import binascii
import contextlib
import http
import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

import numpy as np
import numpy.typing as npt
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from voicecall.audio.g711 import mulaw_to_pcm16

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
class ScribeConnection:
    """What one client connection sent and was sent."""

    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    authorized: bool = False
    config: dict[str, Any] = field(default_factory=dict)
    messages: list[dict[str, Any]] = field(default_factory=list)   # client JSON, in order
    audio: bytearray = field(default_factory=bytearray)             # payload bytes as sent
    pcm: list[npt.NDArray[np.int16]] = field(default_factory=list)  # decoded, format's rate
    sent: list[dict[str, Any]] = field(default_factory=list)        # server messages
    commits: int = 0
    protocol_errors: list[str] = field(default_factory=list)
    close_code: int | None = None              # when the client closed first, its code
    closed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def sample_rate(self) -> int:
        return int(self.config.get("sample_rate", 8000))

    @property
    def audio_ms(self) -> float:
        return sum(len(p) for p in self.pcm) * 1000 / self.sample_rate

    def chunks(self) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("message_type") == "input_audio_chunk"]


class _Segmenter:
    """RMS speech detector over 20 ms windows: "start", "tick" per tick_ms of speech, "end"."""

    def __init__(self, rate: int, threshold: float, silence_ms: float | None,
                 tick_ms: int) -> None:
        self.win = rate // 50
        self.threshold = threshold
        self.silence_limit = silence_ms
        self.tick_ms = tick_ms
        self._buf: npt.NDArray[np.int16] = np.zeros(0, dtype=np.int16)
        self.reset()

    def reset(self) -> None:
        self.speaking = False
        self._speech_ms = 0
        self._silence_ms = 0

    def feed(self, samples: npt.NDArray[np.int16]) -> list[str]:
        self._buf = np.concatenate([self._buf, samples])
        out: list[str] = []
        while len(self._buf) >= self.win:
            window, self._buf = self._buf[:self.win], self._buf[self.win:]
            level = float(np.sqrt(np.mean((window.astype(np.float64) / 32768.0) ** 2)))
            if level >= self.threshold:
                if not self.speaking:
                    self.speaking = True
                    self._speech_ms = 0
                    out.append("start")
                self._silence_ms = 0
                self._speech_ms += 20
                if self._speech_ms % self.tick_ms < 20:
                    out.append("tick")
            elif self.speaking:
                self._silence_ms += 20
                if self.silence_limit is not None and self._silence_ms >= self.silence_limit:
                    self.speaking = False
                    out.append("end")
        return out


class FakeElevenLabsSTT:
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
        self.transcripts = list(transcripts)
        self.api_key = api_key
        self.tokens = set(tokens)
        self.models = tuple(models)
        self.session_delay_s = session_delay_s
        self.partial_delay_s = partial_delay_s
        self.final_delay_s = final_delay_s
        self.partial_every_ms = max(20, partial_every_ms)
        self.rms_threshold = rms_threshold
        self.auth_failure = auth_failure
        self.reject_status = reject_status
        self.drop_after_ms = drop_after_ms
        self.error_after_ms = error_after_ms
        self.error_type = error_type
        self.error_message = error_message
        self.error_close_code = error_close_code
        self.connections: list[ScribeConnection] = []
        self._index = 0
        self._server: Server | None = None
        self.url = ""

    # -- lifecycle ---------------------------------------------------------------
    async def __aenter__(self) -> FakeElevenLabsSTT:
        self._server = await serve(self._handler, "127.0.0.1", 0,
                                   process_request=self._process_request)
        port = next(iter(self._server.sockets)).getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    @property
    def endpoint(self) -> str:
        return self.url + PATH

    def next_transcript(self) -> str:
        if self._index < len(self.transcripts):
            self._index += 1
            return self.transcripts[self._index - 1]
        return "hello"

    # -- handshake ---------------------------------------------------------------
    def _authorized(self, request: Request) -> bool:
        key = request.headers.get("xi-api-key")
        if key is not None:
            return key == self.api_key
        token = parse_qs(urlsplit(request.path).query).get("token", [""])[-1]
        return bool(token) and token in self.tokens

    def _process_request(self, connection: ServerConnection,
                         request: Request) -> Response | None:
        if urlsplit(request.path).path != PATH:
            return connection.respond(http.HTTPStatus.NOT_FOUND, '{"detail":"Not Found"}\n')
        if self.reject_status is not None:
            return connection.respond(http.HTTPStatus(self.reject_status),
                                      '{"detail":"Service temporarily unavailable"}\n')
        if self.auth_failure == "http" and not self._authorized(request):
            return connection.respond(
                http.HTTPStatus.UNAUTHORIZED,
                '{"detail":{"status":"invalid_api_key","message":"Invalid API key"}}\n')
        return None

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
    async def _handler(self, ws: ServerConnection) -> None:
        request = ws.request
        assert request is not None
        conn = ScribeConnection(path=request.path,
                                query=parse_qs(urlsplit(request.path).query,
                                               keep_blank_values=True),
                                headers={k.lower(): v for k, v in request.headers.raw_items()})
        self.connections.append(conn)
        outbox: asyncio.Queue[tuple[float, dict[str, Any] | None, int | None]] = asyncio.Queue()
        sender = asyncio.create_task(self._sender(ws, conn, outbox))
        try:
            if not self._authorized(request):
                await self._send(ws, conn, {"message_type": "auth_error",
                                            "error": "Invalid API key"})
                await ws.close(1008, "Invalid API key")
                return
            conn.authorized = True
            try:
                conn.config = self._effective_config(conn.query)
            except _Reject as exc:
                conn.protocol_errors.append(exc.error)
                await self._send(ws, conn, {"message_type": exc.message_type,
                                            "error": exc.error})
                await ws.close(1008, exc.message_type)
                return
            if self.session_delay_s and await _closed_within(ws, self.session_delay_s):
                return
            await self._send(ws, conn, {"message_type": "session_started",
                                        "session_id": uuid.uuid4().hex, "config": conn.config})
            await self._serve(ws, conn, outbox)
        except ConnectionClosed as exc:
            if exc.rcvd is not None and exc.rcvd_then_sent:  # the client closed first
                conn.close_code = exc.rcvd.code
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
            conn.closed.set()

    async def _serve(self, ws: ServerConnection, conn: ScribeConnection,
                     outbox: asyncio.Queue[tuple[float, dict[str, Any] | None, int | None]]
                     ) -> None:
        cfg = conn.config
        vad = cfg["commit_strategy"] == "vad"
        seg = _Segmenter(cfg["sample_rate"], self.rms_threshold,
                         cfg["vad_silence_threshold_secs"] * 1000 if vad else None,
                         self.partial_every_ms)
        words: list[str] = []
        shown = 0
        text = ""
        errored = False

        def commit() -> None:
            nonlocal words, shown, text
            conn.commits += 1
            out: dict[str, Any] = {"message_type": "committed_transcript", "text": text}
            outbox.put_nowait((self.final_delay_s, out, None))
            if cfg["include_timestamps"] or cfg["include_language_detection"]:
                outbox.put_nowait((0.0, {
                    "message_type": "committed_transcript_with_timestamps", "text": text,
                    "language_code": cfg["language_code"] or "en",
                    "words": _words(text) if cfg["include_timestamps"] else None}, None))
            words, shown, text = [], 0, ""
            seg.reset()

        while True:
            raw = await ws.recv()
            try:
                msg = self._check_chunk(raw, conn)
            except _Reject as exc:
                conn.protocol_errors.append(exc.error)
                outbox.put_nowait((0.0, {"message_type": exc.message_type, "error": exc.error},
                                   1008))
                await ws.wait_closed()
                return
            payload = base64.b64decode(msg["audio_base_64"])
            if payload:
                conn.audio.extend(payload)
                pcm = _decode(payload, cfg["audio_format"])
                conn.pcm.append(pcm)
                for edge in seg.feed(pcm):
                    if edge == "start":
                        text = self.next_transcript()
                        words, shown = text.split(), 0
                    elif edge == "tick" and shown < len(words):
                        shown += 1
                        outbox.put_nowait((self.partial_delay_s, {
                            "message_type": "partial_transcript",
                            "text": " ".join(words[:shown])}, None))
                    elif edge == "end":
                        commit()
            if msg["commit"]:
                commit()
            if self.drop_after_ms is not None and conn.audio_ms >= self.drop_after_ms:
                ws.transport.abort()
                return
            if (self.error_after_ms is not None and not errored
                    and conn.audio_ms >= self.error_after_ms):
                errored = True
                outbox.put_nowait((0.0, {"message_type": self.error_type,
                                         "error": self.error_message}, self.error_close_code))

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

    async def _sender(self, ws: ServerConnection, conn: ScribeConnection,
                      outbox: asyncio.Queue[tuple[float, dict[str, Any] | None, int | None]]
                      ) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                delay, msg, close_code = await outbox.get()
                if delay:
                    await asyncio.sleep(delay)
                if msg is not None:
                    await self._send(ws, conn, msg)
                if close_code is not None:
                    await ws.close(close_code, str(msg.get("message_type", "")) if msg else "")
                    return

    async def _send(self, ws: ServerConnection, conn: ScribeConnection,
                    msg: dict[str, Any]) -> None:
        conn.sent.append(msg)
        await ws.send(json.dumps(msg))


def _decode(payload: bytes, audio_format: str) -> npt.NDArray[np.int16]:
    if audio_format == "ulaw_8000":
        return mulaw_to_pcm16(payload)
    return np.frombuffer(payload, dtype="<i2").astype(np.int16)


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


async def _closed_within(ws: ServerConnection, seconds: float) -> bool:
    """Wait ``seconds`` (a configured delay) unless the client goes first; True if it went."""
    try:
        await asyncio.wait_for(ws.wait_closed(), seconds)
    except TimeoutError:
        return False
    return True
