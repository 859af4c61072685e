"""A fake OpenAI speech endpoint (``POST /v1/audio/speech``) on a real loopback socket.

It speaks the genuine wire format: Bearer auth, the request JSON validated
the way the API does (OpenAI-shaped 4xx errors, unknown arguments rejected),
and a chunked 200 body of raw 24 kHz 16-bit LE mono PCM (``response_format:
"pcm"``), a streamed WAV (``"wav"``) or SSE ``speech.audio.delta`` events
(``stream_format: "sse"``). The audio is a deterministic 440 Hz tone whose
length is ``ms_per_char`` per input character (divided by ``speed``), so a
test can predict exactly how much audio a client must produce::

    async with FakeOpenAITTS(api_key="sk-test", chunk_delay=0.02) as srv:
        tts = openai.create({"apiKey": "sk-test", "baseUrl": srv.base_url})
        ...
        assert srv.requests[0].json["response_format"] == "pcm"

Knobs: ``first_byte_delay`` (seconds before the response starts),
``chunk_ms`` (audio per body chunk), ``chunk_delay`` (seconds between
chunks). Faults: ``fail_next(status)`` (OpenAI error JSON, optional
``retry-after``) and ``cut_next(after_ms)`` (stream that much audio, then
drop the connection without ending the chunked body). Every request is
recorded with timings (``received_at``, ``first_byte_at``,
``finished_at``, all ``time.monotonic()``) and ``bytes_sent``. A wrong key's
401 echoes the presented key in full, so tests can prove the client never
repeats it.

The loopback machinery (``FakeAudioServer``, ``RecordedRequest``,
``tone_pcm16``) is shared with ``fake_elevenlabs_tts``. The server runs
uvicorn in a daemon thread, like ``fake_chat``: one object serves sync and
async tests, can be shared by a whole test module (``reset()`` between
tests), and keeps its own pacing even while the client's loop is busy.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any, Literal, Self

import numpy as np
import numpy.typing as npt
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

__all__ = ["OPENAI_TTS_MODELS", "OPENAI_TTS_VOICES", "PCM_RATE", "FakeAudioServer",
           "FakeOpenAITTS", "RecordedRequest", "tone_pcm16"]

PCM_RATE = 24000
OPENAI_TTS_MODELS = ("gpt-4o-mini-tts", "gpt-4o-mini-tts-2025-12-15",
                     "gpt-4o-mini-tts-2025-03-20", "tts-1", "tts-1-hd", "tts-1-1106",
                     "tts-1-hd-1106")
OPENAI_TTS_VOICES = ("alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova",
                     "sage", "shimmer", "verse", "marin", "cedar")
_FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")
_SERVED_FORMATS = ("pcm", "wav")
_ARGS = frozenset({"model", "input", "voice", "instructions", "response_format", "speed",
                   "stream_format"})
_MAX_INPUT = 4096

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def tone_pcm16(ms: float, rate: int, freq: float = 440.0,
               level: float = 0.3) -> npt.NDArray[np.int16]:
    """``ms`` of a sine at ``rate``: the deterministic "speech" both fakes send."""
    n = int(round(rate * ms / 1000.0))
    t = np.arange(n) / rate
    return (np.sin(2 * np.pi * freq * t) * level * 32767).astype(np.int16)


@dataclass
class RecordedRequest:
    """One request as received, plus what the fake did with it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # names lower-cased
    json: Any  # None when the body was not JSON
    received_at: float  # time.monotonic()
    status: int | None = None
    first_byte_at: float | None = None  # first body chunk handed to the socket
    finished_at: float | None = None  # response ended (completed, cut or abandoned)
    bytes_sent: int = 0  # body bytes before any SSE/base64 wrapping (a WAV header counts)
    cut: bool = False
    disconnected: bool = False  # the client went away before the end


@dataclass
class _Fault:
    kind: Literal["status", "cut"]
    status: int = 500
    message: str = ""
    retry_after: float | None = None
    after_ms: float = 0.0
    remaining: int = 1


class _StreamCut(Exception):
    """Raised by a paced response to drop the connection mid-body (fault injection)."""


class _QuietCuts(logging.Filter):
    """Drop uvicorn's traceback for the cuts we inject on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not _contains_cut(exc)


def _contains_cut(exc: BaseException | None) -> bool:
    if exc is None:
        return False
    if isinstance(exc, _StreamCut):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return any(_contains_cut(e) for e in exc.exceptions)
    return _contains_cut(exc.__cause__ or exc.__context__)


_QUIET = _QuietCuts()


class _PacedAudio:
    """An ASGI response streaming ``chunks`` with pacing, timing records and cuts."""

    def __init__(self, record: RecordedRequest, chunks: list[bytes], media_type: str, *,
                 chunk_delay: float, cut_after: int | None,
                 wrap: Callable[[bytes], bytes] | None = None,
                 trailer: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.record = record
        self.chunks = chunks
        self.chunk_delay = chunk_delay
        self.cut_after = cut_after  # audio bytes to send before cutting, or None
        self.wrap = wrap
        self.trailer = trailer
        self.headers = [(b"content-type", media_type.encode())]
        self.headers += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        record = self.record
        watcher = asyncio.create_task(self._watch(receive))
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.headers})
            record.status = 200
            for index, chunk in enumerate(self.chunks):
                if self.cut_after is not None:
                    room = self.cut_after - record.bytes_sent
                    if room <= 0:
                        break
                    chunk = chunk[:room]
                if index and self.chunk_delay:
                    await asyncio.sleep(self.chunk_delay)
                if record.disconnected:
                    return
                body = self.wrap(chunk) if self.wrap else chunk
                await send({"type": "http.response.body", "body": body, "more_body": True})
                if record.first_byte_at is None:
                    record.first_byte_at = time.monotonic()
                record.bytes_sent += len(chunk)
            if self.cut_after is not None:
                record.cut = True
                raise _StreamCut("fault injection: connection dropped mid-stream")
            await send({"type": "http.response.body", "body": self.trailer, "more_body": False})
        finally:
            watcher.cancel()
            record.finished_at = time.monotonic()

    async def _watch(self, receive: Receive) -> None:
        while True:
            message = await receive()
            if message.get("type") == "http.disconnect":
                self.record.disconnected = True
                return


class FakeAudioServer:
    """Loopback uvicorn server in a thread, with request recording, pacing and faults."""

    thread_name = "fake-audio-server"

    def __init__(self, routes: list[Route], *, api_key: str | None, ms_per_char: float,
                 chunk_ms: float, first_byte_delay: float, chunk_delay: float) -> None:
        self._lock = threading.Lock()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None
        self.app = Starlette(routes=routes)
        self._configure(api_key=api_key, ms_per_char=ms_per_char, chunk_ms=chunk_ms,
                        first_byte_delay=first_byte_delay, chunk_delay=chunk_delay)

    def _configure(self, *, api_key: str | None, ms_per_char: float, chunk_ms: float,
                   first_byte_delay: float, chunk_delay: float) -> None:
        with self._lock:
            # Plain attributes: tests may also change them between requests.
            self.api_key = api_key
            self.ms_per_char = ms_per_char
            self.chunk_ms = chunk_ms
            self.first_byte_delay = first_byte_delay
            self.chunk_delay = chunk_delay
            self._faults: deque[_Fault] = deque()
            self._requests: list[RecordedRequest] = []

    # -- scripting ---------------------------------------------------------

    def audio_ms(self, text: str, speed: float = 1.0) -> float:
        """How much audio (ms) the fake sends for ``text``."""
        return max(1.0, len(text) * self.ms_per_char / speed)

    def fail_next(self, status: int = 500, message: str | None = None, *, count: int = 1,
                  retry_after: float | None = None) -> None:
        """Answer the next ``count`` valid requests with a vendor-shaped error."""
        with self._lock:
            self._faults.append(_Fault("status", status, message or "", retry_after,
                                       remaining=count))

    def cut_next(self, after_ms: float = 200.0, *, count: int = 1) -> None:
        """Stream ``after_ms`` of audio on the next ``count`` requests, then drop them."""
        with self._lock:
            self._faults.append(_Fault("cut", after_ms=after_ms, remaining=count))

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError(f"{type(self).__name__} is not running")
        return self._port

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self._port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="warning", access_log=False,
                                lifespan="off", timeout_graceful_shutdown=1)
        logging.getLogger("uvicorn.error").addFilter(_QUIET)  # after Config set logging up
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]},
                                  name=self.thread_name, daemon=True)
        self._server, self._thread = server, thread
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{type(self).__name__} failed to start")
            time.sleep(0.005)

    def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None or thread is None:
            return
        # force_exit: do not wait for slow streams a test abandoned on purpose.
        server.should_exit = True
        server.force_exit = True
        thread.join(timeout=10)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await asyncio.to_thread(self.stop)

    # -- helpers for subclasses ---------------------------------------------

    async def _record(self, request: Request) -> RecordedRequest:
        raw = await request.body()
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = None
        record = RecordedRequest(request.method, request.url.path, dict(request.query_params),
                                 {k.lower(): v for k, v in request.headers.items()}, body,
                                 time.monotonic())
        with self._lock:
            self._requests.append(record)
        return record

    def _take_fault(self) -> _Fault | None:
        with self._lock:
            if not self._faults:
                return None
            fault = self._faults[0]
            fault.remaining -= 1
            if fault.remaining <= 0:
                self._faults.popleft()
            return fault

    def _chunked(self, audio: bytes, bytes_per_ms: float, width: int = 2) -> list[bytes]:
        size = max(width, int(self.chunk_ms * bytes_per_ms))
        size -= size % width  # keep samples whole
        return [audio[i:i + size] for i in range(0, len(audio), size)]

    def _paced(self, record: RecordedRequest, chunks: list[bytes], media_type: str, *,
               cut_after: int | None, wrap: Callable[[bytes], bytes] | None = None,
               trailer: bytes = b"", headers: dict[str, str] | None = None) -> _PacedAudio:
        return _PacedAudio(record, chunks, media_type, chunk_delay=self.chunk_delay,
                           cut_after=cut_after, wrap=wrap, trailer=trailer, headers=headers)

    @staticmethod
    def _error(record: RecordedRequest, status: int, body: Any,
               headers: dict[str, str] | None = None) -> Response:
        record.status = status
        record.finished_at = time.monotonic()
        return JSONResponse(body, status_code=status, headers=headers)


def _openai_error(message: str, type_: str, code: str | None = None,
                  param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


_FAULT_TYPES = {400: "invalid_request_error", 401: "invalid_request_error",
                404: "invalid_request_error", 429: "rate_limit_exceeded"}


class FakeOpenAITTS(FakeAudioServer):
    thread_name = "fake-openai-tts"

    def __init__(self, *, api_key: str | None = "sk-fake-openai", ms_per_char: float = 50.0,
                 chunk_ms: float = 100.0, first_byte_delay: float = 0.0,
                 chunk_delay: float = 0.0) -> None:
        super().__init__([Route("/v1/audio/speech", self._speech, methods=["POST"])],
                         api_key=api_key, ms_per_char=ms_per_char, chunk_ms=chunk_ms,
                         first_byte_delay=first_byte_delay, chunk_delay=chunk_delay)

    def reset(self, *, api_key: str | None = "sk-fake-openai", ms_per_char: float = 50.0,
              chunk_ms: float = 100.0, first_byte_delay: float = 0.0,
              chunk_delay: float = 0.0) -> FakeOpenAITTS:
        """Forget faults and recorded requests; configure afresh (server keeps running)."""
        self._configure(api_key=api_key, ms_per_char=ms_per_char, chunk_ms=chunk_ms,
                        first_byte_delay=first_byte_delay, chunk_delay=chunk_delay)
        return self

    @property
    def base_url(self) -> str:
        """What a client uses as ``baseUrl`` (OpenAI's includes ``/v1``)."""
        return f"http://127.0.0.1:{self.port}/v1"

    def expected_pcm_samples(self, text: str, speed: float = 1.0) -> int:
        return int(round(PCM_RATE * self.audio_ms(text, speed) / 1000.0))

    async def _speech(self, request: Request) -> Any:
        record = await self._record(request)
        denied = self._check_auth(record)
        if denied is not None:
            return self._error(record, 401, denied)
        invalid = _validate(record.json)
        if invalid is not None:
            status, message, param, code = invalid
            kind = "invalid_request_error"
            return self._error(record, status, _openai_error(message, kind, code, param))
        fault = self._take_fault()
        if fault is not None and fault.kind == "status":
            kind = _FAULT_TYPES.get(fault.status, "server_error")
            message = fault.message or (
                "Rate limit reached for requests" if fault.status == 429 else
                "The server had an error while processing your request. Sorry about that!")
            headers = {"retry-after": f"{fault.retry_after:g}"} if fault.retry_after else None
            return self._error(record, fault.status, _openai_error(message, kind), headers)
        body: dict[str, Any] = record.json
        if self.first_byte_delay:
            await asyncio.sleep(self.first_byte_delay)
        speed = float(body.get("speed", 1.0))
        pcm = tone_pcm16(self.audio_ms(body["input"], speed), PCM_RATE).astype("<i2").tobytes()
        fmt = body.get("response_format", "mp3")
        cut_after = int(fault.after_ms * PCM_RATE / 1000) * 2 if fault is not None else None
        chunks = self._chunked(pcm, PCM_RATE * 2 / 1000)
        if body.get("stream_format") == "sse":
            usage = {"input_tokens": len(body["input"].split()),
                     "output_tokens": len(pcm) // 960, "total_tokens": 0}
            usage["total_tokens"] = usage["input_tokens"] + usage["output_tokens"]
            done = {"type": "speech.audio.done", "usage": usage}
            return self._paced(record, chunks, "text/event-stream", cut_after=cut_after,
                               wrap=_sse_delta, trailer=_sse(done))
        if fmt == "wav":
            chunks = [_wav_header(len(pcm)), *chunks]
            if cut_after is not None:
                cut_after += 44
        media = "audio/pcm" if fmt == "pcm" else "audio/wav"
        return self._paced(record, chunks, media, cut_after=cut_after)

    def _check_auth(self, record: RecordedRequest) -> dict[str, Any] | None:
        if self.api_key is None:
            return None
        header = record.headers.get("authorization", "")
        if not header:
            return _openai_error(
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), "
                "or as the password field (with blank username) if you're accessing the API "
                "from your browser and are prompted for a username and password. You can "
                "obtain an API key from https://platform.openai.com/account/api-keys.",
                "invalid_request_error")
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and token == self.api_key:
            return None
        # The real API masks most of the key; echoing it whole tests client redaction.
        return _openai_error(f"Incorrect API key provided: {token}. You can find your API key "
                             "at https://platform.openai.com/account/api-keys.",
                             "invalid_request_error", "invalid_api_key")


def _validate(body: Any) -> tuple[int, str, str | None, str | None] | None:
    """(status, message, param, code) of the error OpenAI would give, or None."""
    if not isinstance(body, dict):
        return 400, "We could not parse the JSON body of your request.", None, None
    for key in body:
        if key not in _ARGS:
            return 400, f"Unrecognized request argument supplied: {key}", None, None
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return 400, "you must provide a model parameter", None, None
    if model not in OPENAI_TTS_MODELS:
        return (404, f"The model `{model}` does not exist or you do not have access to it.",
                None, "model_not_found")
    text = body.get("input")
    if not isinstance(text, str):
        return 400, "Missing required parameter: 'input'.", "input", "missing_required_parameter"
    if not text.strip():
        return 400, "Invalid 'input': string too short.", "input", "string_below_min_length"
    if len(text) > _MAX_INPUT:
        return (400, f"Invalid 'input': string too long. Expected a string with maximum length "
                f"{_MAX_INPUT}, but got a string with length {len(text)} instead.", "input",
                "string_above_max_length")
    voice = body.get("voice")
    if voice is None:
        return 400, "Missing required parameter: 'voice'.", "voice", "missing_required_parameter"
    custom = isinstance(voice, dict) and isinstance(voice.get("id"), str) \
        and voice["id"].startswith("voice_")
    if not custom and voice not in OPENAI_TTS_VOICES:
        return (400, f"Invalid value for 'voice': {json.dumps(voice)}. Supported values are: "
                + ", ".join(f"'{v}'" for v in OPENAI_TTS_VOICES) + ".", "voice", "invalid_value")
    fmt = body.get("response_format", "mp3")
    if fmt not in _FORMATS:
        return (400, f"Invalid value for 'response_format': {json.dumps(fmt)}.",
                "response_format", "invalid_value")
    speed = body.get("speed")
    if speed is not None and (isinstance(speed, bool) or not isinstance(speed, int | float)
                              or not 0.25 <= speed <= 4.0):
        return (400, f"Invalid 'speed': {speed}. Expected a value between 0.25 and 4.0.",
                "speed", "invalid_value")
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        return 400, "Invalid type for 'instructions': expected a string.", "instructions", None
    stream_format = body.get("stream_format", "audio")
    if stream_format not in ("audio", "sse"):
        return (400, f"Invalid value for 'stream_format': {json.dumps(stream_format)}.",
                "stream_format", "invalid_value")
    if stream_format == "sse" and model.startswith("tts-1"):
        return 400, f"stream_format 'sse' is not supported for model {model}.", "stream_format", None
    if stream_format == "sse" and fmt != "pcm":
        return 400, "The fake serves SSE only with response_format 'pcm'.", "response_format", None
    if fmt not in _SERVED_FORMATS:
        return (400, f"The fake serves only {' and '.join(_SERVED_FORMATS)} audio, not {fmt}.",
                "response_format", None)
    return None


def _sse(payload: object) -> bytes:
    return f"data: {json.dumps(payload)}\n\n".encode()


def _sse_delta(chunk: bytes) -> bytes:
    return _sse({"type": "speech.audio.delta", "audio": base64.b64encode(chunk).decode()})


def _wav_header(data_bytes: int, rate: int = PCM_RATE) -> bytes:
    return (b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVEfmt "
            + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
            + b"data" + struct.pack("<I", data_bytes))
