"""ElevenLabs Scribe realtime STT (``wss://api.elevenlabs.io/v1/speech-to-text/realtime``).

Wire protocol (reference §5.1, checked against elevenlabs-python ``realtime/``):

* Everything is configured in the query string (``model_id``, ``audio_format``,
  ``commit_strategy``, ``language_code``, the VAD knobs); the key goes in the
  ``xi-api-key`` header, never in the URL.
* The server opens with ``session_started`` (its ``config`` echoes the effective
  settings); only then is the session ready.
* Audio is JSON: ``{"message_type":"input_audio_chunk","audio_base_64":…,
  "commit":false,"sample_rate":8000}``. Telephone audio goes as ``ulaw_8000``
  unchanged (no transcoding); ``pcm_16000`` etc. are available and resampled.
* With ``commit_strategy=vad`` (our default) the server endpoints each
  utterance itself; with ``manual`` this session runs a local energy detector
  and sends ``commit:true`` after the configured silence.
* Results: ``partial_transcript`` (whole hypothesis so far) -> ``partial``;
  ``committed_transcript`` -> ``final`` (``committed_transcript_with_timestamps``
  instead when timestamps are requested, as the server then sends both).
  Error ``message_type`` values -> ``error``; the fatal ones end the session.
* Closing is a WebSocket close with code 1000.

``speech-start``: the server sends no VAD event, so in ``vad`` mode the first
non-empty partial of an utterance is reported as ``speech-start`` (transcribed
speech, so noise does not trigger barge-in); in ``manual`` mode the local
detector reports it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import math
import os
from collections import deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from voicecall.audio.g711 import FRAME_BYTES, SAMPLE_RATE, mulaw_to_pcm16
from voicecall.audio.resample import StreamResampler
from voicecall.audio.vad import EnergyVad
from voicecall.config.secret import Secret
from voicecall.errors import ConfigError, ProviderError
from voicecall.speech.stt.base import SttCapabilities, SttEvent, SttEventType

log = logging.getLogger("voicecall.stt.elevenlabs")

PROVIDER_ID = "elevenlabs"
CONFIG_PATH = f"streaming.providers.{PROVIDER_ID}"
ENV_KEYS = ("ELEVENLABS_API_KEY", "XI_API_KEY")
DEFAULT_BASE_URL = "wss://api.elevenlabs.io"
REALTIME_PATH = "/v1/speech-to-text/realtime"
DEFAULT_MODEL = "scribe_v2_realtime"
DEFAULT_AUDIO_FORMAT = "ulaw_8000"
DEFAULT_COMMIT_STRATEGY = "vad"
# Same end-of-utterance silence as the other providers' defaults (openai 800 ms,
# xai endpointingMs 800); the server's own default is longer, too slow for a call.
DEFAULT_VAD_SILENCE_SECS = 0.8
DEFAULT_CONNECT_TIMEOUT_MS = 10_000
DEFAULT_MAX_QUEUED_BYTES = 2 * 1024 * 1024  # as OpenClaw's websocket session
DEFAULT_ENERGY_THRESHOLD = 0.035  # local detector, manual commit mode only
CLOSE_TIMEOUT_S = 2.0

# audio_format -> sample rate (Hz)
AUDIO_FORMATS: dict[str, int] = {
    "ulaw_8000": 8000,
    "pcm_8000": 8000,
    "pcm_16000": 16000,
    "pcm_22050": 22050,
    "pcm_24000": 24000,
    "pcm_44100": 44100,
    "pcm_48000": 48000,
}
COMMIT_STRATEGIES = ("vad", "manual")

ERROR_TYPES = frozenset({
    "error", "auth_error", "quota_exceeded", "quota_exceeded_error", "commit_throttled",
    "transcriber_error", "unaccepted_terms", "unaccepted_terms_error", "rate_limited",
    "input_error", "invalid_request", "queue_overflow", "resource_exhausted",
    "session_time_limit_exceeded", "chunk_size_exceeded", "insufficient_audio_activity",
})
# After these the session cannot go on; the others (a throttled commit, one bad
# chunk, too little audio) are reported and the stream continues.
FATAL_ERRORS = frozenset({
    "auth_error", "quota_exceeded", "quota_exceeded_error", "unaccepted_terms",
    "unaccepted_terms_error", "session_time_limit_exceeded", "resource_exhausted",
    "transcriber_error", "invalid_request",
})
RETRYABLE_ERRORS = frozenset({
    "rate_limited", "resource_exhausted", "queue_overflow", "transcriber_error",
    "commit_throttled",
})


# ---------------------------------------------------------------------------- config

@dataclass(frozen=True)
class ElevenLabsSttConfig:
    api_key: str = field(repr=False)
    model: str = DEFAULT_MODEL
    language: str | None = None
    audio_format: str = DEFAULT_AUDIO_FORMAT
    commit_strategy: str = DEFAULT_COMMIT_STRATEGY
    vad_silence_threshold_secs: float = DEFAULT_VAD_SILENCE_SECS
    vad_threshold: float | None = None
    min_speech_duration_ms: int | None = None
    min_silence_duration_ms: int | None = None
    include_timestamps: bool = False
    keyterms: tuple[str, ...] = ()
    enable_logging: bool | None = None
    base_url: str = DEFAULT_BASE_URL
    endpoint: str | None = None
    connect_timeout_ms: int = DEFAULT_CONNECT_TIMEOUT_MS
    max_queued_bytes: int = DEFAULT_MAX_QUEUED_BYTES
    energy_threshold: float = DEFAULT_ENERGY_THRESHOLD

    @property
    def sample_rate(self) -> int:
        return AUDIO_FORMATS[self.audio_format]

    def query(self) -> list[tuple[str, str]]:
        q: list[tuple[str, str]] = [
            ("model_id", self.model),
            ("audio_format", self.audio_format),
            ("commit_strategy", self.commit_strategy),
            ("include_timestamps", _bool(self.include_timestamps)),
        ]
        if self.language:
            q.append(("language_code", self.language))
        if self.commit_strategy == "vad":
            q.append(("vad_silence_threshold_secs", _num(self.vad_silence_threshold_secs)))
            if self.vad_threshold is not None:
                q.append(("vad_threshold", _num(self.vad_threshold)))
            if self.min_speech_duration_ms is not None:
                q.append(("min_speech_duration_ms", str(self.min_speech_duration_ms)))
            if self.min_silence_duration_ms is not None:
                q.append(("min_silence_duration_ms", str(self.min_silence_duration_ms)))
        q.extend(("keyterms", term) for term in self.keyterms)
        if self.enable_logging is not None:
            q.append(("enable_logging", _bool(self.enable_logging)))
        return q

    def url(self) -> str:
        if self.endpoint:
            base = self.endpoint
        else:
            root = self.base_url.rstrip("/")
            if root.endswith("/v1"):
                root = root[: -len("/v1")]
            base = root + REALTIME_PATH
        parts = urlsplit(_ws_scheme(base))
        query = "&".join(p for p in (parts.query, urlencode(self.query())) if p)
        return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _num(value: float) -> str:
    return f"{value:g}"


def _ws_scheme(url: str) -> str:
    if url.startswith("https://"):
        return "wss://" + url[len("https://"):]
    if url.startswith("http://"):
        return "ws://" + url[len("http://"):]
    return url


def _raw(cfg: Mapping[str, Any], key: str) -> Any:
    """``cfg[key]`` in camelCase or snake_case spelling; None when absent."""
    if key in cfg and cfg[key] is not None:
        return cfg[key]
    snake = "".join("_" + c.lower() if c.isupper() else c for c in key)
    return cfg.get(snake)


def _str(cfg: Mapping[str, Any], *keys: str) -> str | None:
    for key in keys:
        value = _raw(cfg, key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise ConfigError("must be a string", path=f"{CONFIG_PATH}.{key}")
        if value.strip():
            return value.strip()
    return None


def _number(cfg: Mapping[str, Any], key: str, lo: float, hi: float,
            integer: bool = False) -> float | None:
    value = _raw(cfg, key)
    if value is None:
        return None
    path = f"{CONFIG_PATH}.{key}"
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError("must be a number", path=path)
    if integer and value != int(value):
        raise ConfigError("must be a whole number", path=path)
    if not lo <= value <= hi:
        raise ConfigError(f"must be between {lo:g} and {hi:g}", path=path)
    return int(value) if integer else float(value)


def _flag(cfg: Mapping[str, Any], key: str) -> bool | None:
    value = _raw(cfg, key)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ConfigError("must be true or false", path=f"{CONFIG_PATH}.{key}")


def _api_key(cfg: Mapping[str, Any]) -> str:
    value = _raw(cfg, "apiKey")
    if isinstance(value, Secret):
        value = value.reveal()
    if value is not None and not isinstance(value, str):
        raise ConfigError("must be a string", path=f"{CONFIG_PATH}.apiKey")
    if not value or not value.strip():
        value = next((os.environ[n] for n in ENV_KEYS if os.environ.get(n, "").strip()), "")
    if not value.strip():
        raise ConfigError(f"missing (or set {' / '.join(ENV_KEYS)})",
                          path=f"{CONFIG_PATH}.apiKey")
    return value.strip()


def parse_config(cfg: Mapping[str, Any]) -> ElevenLabsSttConfig:
    """The raw ``streaming.providers.elevenlabs`` dict -> a checked config."""
    audio_format = (_str(cfg, "audioFormat", "encoding") or DEFAULT_AUDIO_FORMAT).lower()
    if audio_format not in AUDIO_FORMATS:
        raise ConfigError(f"unsupported audio format {audio_format!r}",
                          path=f"{CONFIG_PATH}.audioFormat", allowed=list(AUDIO_FORMATS))
    commit = (_str(cfg, "commitStrategy") or DEFAULT_COMMIT_STRATEGY).lower()
    if commit not in COMMIT_STRATEGIES:
        raise ConfigError(f"unknown commit strategy {commit!r}",
                          path=f"{CONFIG_PATH}.commitStrategy", allowed=list(COMMIT_STRATEGIES))
    keyterms = _raw(cfg, "keyterms")
    if keyterms is None:
        terms: tuple[str, ...] = ()
    elif isinstance(keyterms, list | tuple) and all(isinstance(t, str) for t in keyterms):
        terms = tuple(t.strip() for t in keyterms if t.strip())
    else:
        raise ConfigError("must be a list of strings", path=f"{CONFIG_PATH}.keyterms")
    silence = _number(cfg, "vadSilenceThresholdSecs", 0.3, 3.0)
    vad_threshold = _number(cfg, "vadThreshold", 0.1, 0.9)
    min_speech = _number(cfg, "minSpeechDurationMs", 50, 2000, integer=True)
    min_silence = _number(cfg, "minSilenceDurationMs", 50, 2000, integer=True)
    timeout = _number(cfg, "connectTimeoutMs", 1, 120_000, integer=True)
    max_queued = _number(cfg, "maxQueuedBytes", FRAME_BYTES, 64 * 1024 * 1024, integer=True)
    energy = _number(cfg, "energyThreshold", 0.0001, 1.0)
    return ElevenLabsSttConfig(
        api_key=_api_key(cfg),
        model=_str(cfg, "model", "modelId") or DEFAULT_MODEL,
        language=_str(cfg, "language", "languageCode"),
        audio_format=audio_format,
        commit_strategy=commit,
        vad_silence_threshold_secs=DEFAULT_VAD_SILENCE_SECS if silence is None else silence,
        vad_threshold=vad_threshold,
        min_speech_duration_ms=None if min_speech is None else int(min_speech),
        min_silence_duration_ms=None if min_silence is None else int(min_silence),
        include_timestamps=bool(_flag(cfg, "includeTimestamps")),
        keyterms=terms,
        enable_logging=_flag(cfg, "enableLogging"),
        base_url=_str(cfg, "baseUrl") or DEFAULT_BASE_URL,
        endpoint=_str(cfg, "endpoint"),
        connect_timeout_ms=DEFAULT_CONNECT_TIMEOUT_MS if timeout is None else int(timeout),
        max_queued_bytes=DEFAULT_MAX_QUEUED_BYTES if max_queued is None else int(max_queued),
        energy_threshold=DEFAULT_ENERGY_THRESHOLD if energy is None else energy,
    )


# ---------------------------------------------------------------------------- session

class ElevenLabsSttSession:
    """One call's Scribe realtime stream. Connecting starts at construction."""

    def __init__(self, cfg: ElevenLabsSttConfig, call_id: str) -> None:
        self.call_id = call_id
        self.cfg = cfg
        self.session_config: dict[str, Any] = {}   # ``session_started.config``
        self.dropped_bytes = 0                      # audio never sent (queue full, ended)
        loop = asyncio.get_running_loop()
        self._events: asyncio.Queue[SttEvent] = asyncio.Queue()
        self._ready: asyncio.Future[None] = loop.create_future()
        self._ready.add_done_callback(_consume)
        self._pending: deque[tuple[str, int]] = deque()  # (message, audio bytes)
        self._pending_bytes = 0
        self._live = False
        self._closing = False
        self._finished = False
        self._delivered_closed = False
        self._fatal = False          # an error that ends the session was reported
        self._last_type: SttEventType | None = None
        self._in_utterance = False
        self._ws: ClientConnection | None = None
        self._resampler = (StreamResampler(SAMPLE_RATE, cfg.sample_rate)
                           if cfg.audio_format != "ulaw_8000" else None)
        self._vad = (EnergyVad(threshold=cfg.energy_threshold, release_frames=max(
            1, round(cfg.vad_silence_threshold_secs * 1000 / 20)))
            if cfg.commit_strategy == "manual" else None)
        self._task = asyncio.create_task(self._run(), name=f"stt-elevenlabs:{call_id}")

    # -- Protocol ----------------------------------------------------------------
    async def wait_ready(self) -> None:
        try:
            await asyncio.shield(self._ready)
        except ProviderError as exc:  # a fresh exception per waiter, same facts
            raise ProviderError(str(exc), retryable=exc.retryable,
                                status_code=exc.status_code) from None

    async def send_audio(self, mulaw: bytes) -> None:
        if self._closing or self._finished:
            self._drop(len(mulaw), "session closed")
            return
        if not mulaw:
            return
        await self._submit(self._audio_message(mulaw), len(mulaw))
        if self._vad is not None:
            for i in range(0, len(mulaw), FRAME_BYTES):
                edge = self._vad.feed(mulaw[i:i + FRAME_BYTES])
                if edge == "start":
                    self._emit(SttEvent("speech-start"))
                elif edge == "end":
                    await self._submit(self._commit_message(), 0)

    async def events(self) -> AsyncIterator[SttEvent]:
        while not self._delivered_closed:
            ev = await self._events.get()
            if ev.type == "closed":
                self._delivered_closed = True
            yield ev

    async def aclose(self) -> None:
        if not self._closing:
            self._closing = True
            ws = self._ws
            if ws is not None and self._live:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(ws.close(1000), CLOSE_TIMEOUT_S)
            if not self._task.done():
                self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(asyncio.shield(self._task), CLOSE_TIMEOUT_S + 1)

    # -- sending -----------------------------------------------------------------
    def _audio_message(self, mulaw: bytes) -> str:
        if self._resampler is None:
            payload = mulaw
        else:
            pcm = self._resampler.feed(mulaw_to_pcm16(mulaw))
            payload = pcm.astype("<i2").tobytes()
        return json.dumps({
            "message_type": "input_audio_chunk",
            "audio_base_64": base64.b64encode(payload).decode("ascii"),
            "commit": False,
            "sample_rate": self.cfg.sample_rate,
        })

    def _commit_message(self) -> str:
        return json.dumps({"message_type": "input_audio_chunk", "audio_base_64": "",
                           "commit": True, "sample_rate": self.cfg.sample_rate})

    async def _submit(self, message: str, audio_bytes: int) -> None:
        if self._live and self._ws is not None:
            with contextlib.suppress(ConnectionClosed):
                await self._ws.send(message)  # a drop is reported by the reader
            return
        self._pending.append((message, audio_bytes))
        self._pending_bytes += audio_bytes
        while self._pending_bytes > self.cfg.max_queued_bytes:
            # Drop the oldest audio, keep commits; said once per session, counted always.
            idx = next(i for i, (_, n) in enumerate(self._pending) if n)
            _, n = self._pending[idx]
            del self._pending[idx]
            self._pending_bytes -= n
            self._drop(n, "queue full before the provider was ready")

    def _drop(self, n: int, why: str) -> None:
        if not self.dropped_bytes:
            log.warning("stt.audio_dropped", extra={"call_id": self.call_id,
                                                    "provider": PROVIDER_ID, "why": why})
        self.dropped_bytes += n

    async def _flush_pending(self, ws: ClientConnection) -> None:
        while self._pending:
            message, n = self._pending.popleft()
            self._pending_bytes -= n
            await ws.send(message)
        self._live = True  # no await between the empty check and this: order is kept

    # -- connection --------------------------------------------------------------
    async def _run(self) -> None:
        try:
            async with asyncio.timeout(self.cfg.connect_timeout_ms / 1000):
                ws = await self._connect()
                self._ws = ws
                await self._handshake(ws)
            await self._flush_pending(ws)
            self._ready.set_result(None)
            self._emit(SttEvent("ready"))
            await self._read(ws)
        except TimeoutError:
            self._fail(ProviderError(f"{PROVIDER_ID}: timed out connecting to realtime STT",
                                     retryable=True))
        except ProviderError as exc:
            self._fail(exc)
        except ConnectionClosed as exc:
            self._fail(self._closed_error(exc, before_ready=not self._ready.done()))
        except asyncio.CancelledError:
            pass
        except Exception as exc:  # a bug or an unexpected transport error: report, never hang
            log.exception("stt.session_failed", extra={"call_id": self.call_id,
                                                       "provider": PROVIDER_ID})
            self._fail(ProviderError(f"{PROVIDER_ID}: {type(exc).__name__}", retryable=True))
        finally:
            self._live = False
            if self._ws is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._ws.close(1000), CLOSE_TIMEOUT_S)
            if not self._ready.done():
                self._ready.set_exception(ProviderError(
                    f"{PROVIDER_ID}: session closed before it was ready", retryable=True))
            if self._pending_bytes:
                self._drop(self._pending_bytes, "session ended before it was ready")
            self._pending.clear()
            self._pending_bytes = 0
            self._finished = True
            self._emit(SttEvent("closed"))

    async def _connect(self) -> ClientConnection:
        try:
            return await connect(self.cfg.url(), additional_headers={"xi-api-key": self.cfg.api_key},
                                 open_timeout=None, close_timeout=CLOSE_TIMEOUT_S)
        except InvalidStatus as exc:
            status = exc.response.status_code
            body = self._redact(bytes(exc.response.body or b"")[:200].decode("utf-8", "replace"))
            what = "authentication failed" if status in (401, 403) else "handshake rejected"
            raise ProviderError(f"{PROVIDER_ID}: {what} (HTTP {status}) {body}".rstrip(),
                                retryable=status == 429 or status >= 500,
                                status_code=status) from None
        except InvalidURI as exc:
            raise ProviderError(f"{PROVIDER_ID}: bad realtime STT URL ({exc})") from None
        except (InvalidHandshake, OSError) as exc:
            raise ProviderError(f"{PROVIDER_ID}: cannot connect: {self._redact(str(exc))}",
                                retryable=True) from None

    async def _handshake(self, ws: ClientConnection) -> None:
        """Wait for ``session_started``; an error message before it fails the session."""
        while True:
            data = _parse(await ws.recv())
            if data is None:
                continue
            kind = data.get("message_type")
            if kind == "session_started":
                config = data.get("config")
                self.session_config = config if isinstance(config, dict) else {}
                log.debug("stt.session_started", extra={
                    "call_id": self.call_id, "provider": PROVIDER_ID,
                    "session_id": data.get("session_id"), "config": self.session_config})
                return
            if isinstance(kind, str) and (kind in ERROR_TYPES or kind.endswith("error")):
                raise ProviderError(
                    f"{PROVIDER_ID}: {kind}: {self._error_text(data)}",
                    retryable=kind in RETRYABLE_ERRORS,
                    status_code=401 if kind == "auth_error" else None)

    async def _read(self, ws: ClientConnection) -> None:
        try:
            while True:
                data = _parse(await ws.recv())
                if data is not None and not await self._on_message(ws, data):
                    return
        except ConnectionClosed as exc:
            # A close right after an error event is that error's consequence: one report.
            if not self._closing and not self._fatal and self._last_type != "error":
                self._error(self._closed_error(exc, before_ready=False), fatal=True)

    async def _on_message(self, ws: ClientConnection, data: dict[str, Any]) -> bool:
        """Handle one server message; False ends the session."""
        kind = data.get("message_type")
        if kind == "partial_transcript":
            text = _text(data)
            if text:
                if not self._in_utterance and self._vad is None:
                    self._emit(SttEvent("speech-start"))
                self._in_utterance = True
                self._emit(SttEvent("partial", text))
        elif kind in ("committed_transcript", "committed_transcript_with_timestamps"):
            if (kind == "committed_transcript_with_timestamps") != self.cfg.include_timestamps:
                return True  # the server sends both when timestamps are on: report once
            self._in_utterance = False
            text = _text(data)
            if text:
                self._emit(SttEvent("final", text, _confidence(data)))
        elif isinstance(kind, str) and (kind in ERROR_TYPES or kind.endswith("error")):
            fatal = kind in FATAL_ERRORS
            self._error(ProviderError(f"{PROVIDER_ID}: {kind}: {self._error_text(data)}",
                                      retryable=kind in RETRYABLE_ERRORS), fatal=fatal)
            if fatal:
                self._closing = True
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(ws.close(1000), CLOSE_TIMEOUT_S)
                return False
        elif kind != "session_started":
            log.debug("stt.unknown_message", extra={"call_id": self.call_id,
                                                    "provider": PROVIDER_ID, "type": kind})
        return True

    # -- events ------------------------------------------------------------------
    def _emit(self, ev: SttEvent) -> None:
        self._last_type = ev.type
        self._events.put_nowait(ev)

    def _error(self, exc: ProviderError, fatal: bool) -> None:
        self._fatal = self._fatal or fatal
        log.warning("stt.error", extra={"call_id": self.call_id, "provider": PROVIDER_ID,
                                        "why": str(exc)})
        self._emit(SttEvent("error", str(exc)))

    def _fail(self, exc: ProviderError) -> None:
        if not self._ready.done():
            self._ready.set_exception(exc)
        if not self._fatal:
            self._error(exc, fatal=True)

    def _closed_error(self, exc: ConnectionClosed, before_ready: bool) -> ProviderError:
        code = exc.rcvd.code if exc.rcvd is not None else 1006
        reason = self._redact(exc.rcvd.reason) if exc.rcvd is not None else "no close frame"
        when = "before session_started" if before_ready else "mid-stream"
        return ProviderError(f"{PROVIDER_ID}: connection closed {when} ({code} {reason})".rstrip(),
                             retryable=code not in (1008, 4001, 4003),
                             status_code=401 if code in (4001, 4003) else None)

    def _error_text(self, data: Mapping[str, Any]) -> str:
        for key in ("error", "message", "detail"):
            value = data.get(key)
            if isinstance(value, str) and value:
                return self._redact(value)
        return "no detail"

    def _redact(self, text: str) -> str:
        return text.replace(self.cfg.api_key, "***") if self.cfg.api_key else text


def _consume(fut: asyncio.Future[None]) -> None:
    """Mark a readiness failure as retrieved: nobody may be waiting for it."""
    if not fut.cancelled():
        fut.exception()


def _parse(raw: str | bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(raw)
    except ValueError:
        log.warning("stt.bad_message", extra={"provider": PROVIDER_ID})
        return None
    return data if isinstance(data, dict) else None


def _text(data: Mapping[str, Any]) -> str:
    text = data.get("text")
    return text.strip() if isinstance(text, str) else ""


def _confidence(data: Mapping[str, Any]) -> float | None:
    """exp(mean word logprob) from the timestamped commit, when the server gives them."""
    words = data.get("words")
    if not isinstance(words, list):
        return None
    logprobs = [w["logprob"] for w in words if isinstance(w, dict) and w.get("type") == "word"
                and isinstance(w.get("logprob"), int | float)]
    if not logprobs:
        return None
    return float(np.clip(np.exp(np.mean(logprobs)), 0.0, 1.0))


# ---------------------------------------------------------------------------- provider

class STT:
    """ElevenLabs Scribe realtime: μ-law straight through, server VAD commits by default."""

    name = PROVIDER_ID

    def __init__(self, cfg: ElevenLabsSttConfig) -> None:
        self.cfg = cfg
        self.capabilities = SttCapabilities(interim_results=True,
                                            server_vad=cfg.commit_strategy == "vad")

    async def open(self, call_id: str) -> ElevenLabsSttSession:
        return ElevenLabsSttSession(self.cfg, call_id)


def create(cfg: Mapping[str, Any]) -> STT:
    return STT(parse_config(cfg))
