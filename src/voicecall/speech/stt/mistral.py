"""Mistral Voxtral realtime transcription (``wss://api.mistral.ai/v1/audio/transcriptions/realtime``).

Wire protocol (reference §6a, checked against mistralai/client-python
``extra/realtime``):

* ``?model=`` in the URL, ``Authorization: Bearer <key>`` header.
* The server opens with ``session.created`` (default format pcm_s16le/16 kHz);
  the client then sends ``session.update`` with ``audio_format`` and
  ``target_streaming_delay_ms`` *before any audio* (the fields freeze once audio
  has started). Like the official SDK we do not wait for ``session.updated``:
  the update and the audio travel in order on one socket.
* Audio: ``{"type":"input_audio.append","audio":<b64>}``. Telephone audio goes as
  ``pcm_mulaw`` at 8000 Hz unchanged; ``pcm_s16le``/``pcm_f32le`` at another
  rate are available and resampled.
* The realtime models do no endpointing. This session runs a local energy
  detector on the caller audio: it reports ``speech-start`` and, after
  ``silenceDurationMs`` of quiet, sends ``input_audio.flush``; the server then
  answers ``transcription.done`` for that utterance and the session goes on
  (what pipecat and LiveKit do).
* ``transcription.text.delta`` texts are appended -> ``partial`` (the text so
  far); ``transcription.done`` -> ``final``; ``error {error:{message,code}}`` ->
  ``error``. ``aclose`` sends ``input_audio.end`` and closes with 1000.
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

log = logging.getLogger("voicecall.stt.mistral")

PROVIDER_ID = "mistral"
CONFIG_PATH = f"streaming.providers.{PROVIDER_ID}"
ENV_KEYS = ("MISTRAL_API_KEY",)
DEFAULT_BASE_URL = "wss://api.mistral.ai"
REALTIME_PATH = "/v1/audio/transcriptions/realtime"
DEFAULT_MODEL = "voxtral-mini-transcribe-realtime-2602"
DEFAULT_ENCODING = "pcm_mulaw"
DEFAULT_STREAMING_DELAY_MS = 480
DEFAULT_SILENCE_MS = 800          # end of utterance, as openai/xai defaults
DEFAULT_ENERGY_THRESHOLD = 0.035  # the gateway's barge-in detector level
DEFAULT_CONNECT_TIMEOUT_MS = 10_000
DEFAULT_MAX_QUEUED_BYTES = 2 * 1024 * 1024
CLOSE_TIMEOUT_S = 2.0

# Encodings we can produce from telephone audio (the API also takes pcm_s32le,
# pcm_f16le and pcm_alaw, which would only add a lossy step here).
ENCODINGS = ("pcm_mulaw", "pcm_s16le", "pcm_f32le")
SAMPLE_RATES = (8000, 16000, 22050, 44100, 48000)


# ---------------------------------------------------------------------------- config

@dataclass(frozen=True)
class MistralSttConfig:
    api_key: str = field(repr=False)
    model: str = DEFAULT_MODEL
    encoding: str = DEFAULT_ENCODING
    sample_rate: int = SAMPLE_RATE
    target_streaming_delay_ms: int | None = DEFAULT_STREAMING_DELAY_MS
    silence_duration_ms: int = DEFAULT_SILENCE_MS
    energy_threshold: float = DEFAULT_ENERGY_THRESHOLD
    base_url: str = DEFAULT_BASE_URL
    endpoint: str | None = None
    connect_timeout_ms: int = DEFAULT_CONNECT_TIMEOUT_MS
    max_queued_bytes: int = DEFAULT_MAX_QUEUED_BYTES

    def url(self) -> str:
        if self.endpoint:
            base = self.endpoint
        else:
            root = self.base_url.rstrip("/")
            if root.endswith("/v1"):
                root = root[: -len("/v1")]
            base = root + REALTIME_PATH
        parts = urlsplit(_ws_scheme(base))
        query = "&".join(p for p in (parts.query, urlencode({"model": self.model})) if p)
        return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))

    def session_update(self) -> dict[str, Any]:
        session: dict[str, Any] = {
            "audio_format": {"encoding": self.encoding, "sample_rate": self.sample_rate}}
        if self.target_streaming_delay_ms is not None:
            session["target_streaming_delay_ms"] = self.target_streaming_delay_ms
        return {"type": "session.update", "session": session}


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


_ENCODING_ALIASES = {"mulaw": "pcm_mulaw", "ulaw": "pcm_mulaw", "g711_ulaw": "pcm_mulaw",
                     "pcm": "pcm_s16le", "linear16": "pcm_s16le"}


def parse_config(cfg: Mapping[str, Any]) -> MistralSttConfig:
    """The raw ``streaming.providers.mistral`` dict -> a checked config."""
    encoding = (_str(cfg, "encoding") or DEFAULT_ENCODING).lower()
    encoding = _ENCODING_ALIASES.get(encoding, encoding)
    if encoding not in ENCODINGS:
        raise ConfigError(f"unsupported encoding {encoding!r}", path=f"{CONFIG_PATH}.encoding",
                          allowed=list(ENCODINGS))
    rate = _number(cfg, "sampleRate", 8000, 48000, integer=True)
    sample_rate = SAMPLE_RATE if rate is None else int(rate)
    if sample_rate not in SAMPLE_RATES:
        raise ConfigError(f"unsupported sample rate {sample_rate}",
                          path=f"{CONFIG_PATH}.sampleRate", allowed=[str(r) for r in SAMPLE_RATES])
    if encoding == "pcm_mulaw" and sample_rate != SAMPLE_RATE:
        raise ConfigError("pcm_mulaw is telephone audio: 8000 Hz only",
                          path=f"{CONFIG_PATH}.sampleRate")
    delay = _number(cfg, "targetStreamingDelayMs", 0, 10_000, integer=True)
    silence = _number(cfg, "silenceDurationMs", 100, 5000, integer=True)
    energy = _number(cfg, "energyThreshold", 0.0001, 1.0)
    timeout = _number(cfg, "connectTimeoutMs", 1, 120_000, integer=True)
    max_queued = _number(cfg, "maxQueuedBytes", FRAME_BYTES, 64 * 1024 * 1024, integer=True)
    return MistralSttConfig(
        api_key=_api_key(cfg),
        model=_str(cfg, "model") or DEFAULT_MODEL,
        encoding=encoding,
        sample_rate=sample_rate,
        target_streaming_delay_ms=DEFAULT_STREAMING_DELAY_MS if delay is None else int(delay),
        silence_duration_ms=DEFAULT_SILENCE_MS if silence is None else int(silence),
        energy_threshold=DEFAULT_ENERGY_THRESHOLD if energy is None else energy,
        base_url=_str(cfg, "baseUrl") or DEFAULT_BASE_URL,
        endpoint=_str(cfg, "endpoint"),
        connect_timeout_ms=DEFAULT_CONNECT_TIMEOUT_MS if timeout is None else int(timeout),
        max_queued_bytes=DEFAULT_MAX_QUEUED_BYTES if max_queued is None else int(max_queued),
    )


# ---------------------------------------------------------------------------- session

class MistralSttSession:
    """One call's Voxtral realtime stream. Connecting starts at construction."""

    def __init__(self, cfg: MistralSttConfig, call_id: str) -> None:
        self.call_id = call_id
        self.cfg = cfg
        self.session: dict[str, Any] = {}     # the server's session (created / updated)
        self.language: str | None = None      # from ``transcription.language``
        self.dropped_bytes = 0                # audio never sent (queue full, ended)
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
        self._fatal = False
        self._last_type: SttEventType | None = None
        self._partial = ""
        self._ws: ClientConnection | None = None
        self._resampler = (StreamResampler(SAMPLE_RATE, cfg.sample_rate)
                           if cfg.encoding != "pcm_mulaw" else None)
        self._vad = EnergyVad(threshold=cfg.energy_threshold,
                              release_frames=max(1, round(cfg.silence_duration_ms / 20)))
        self._task = asyncio.create_task(self._run(), name=f"stt-mistral:{call_id}")

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
        await self._submit(self._append_message(mulaw), len(mulaw))
        for i in range(0, len(mulaw), FRAME_BYTES):
            edge = self._vad.feed(mulaw[i:i + FRAME_BYTES])
            if edge == "start":
                self._emit(SttEvent("speech-start"))
            elif edge == "end":
                await self._submit(json.dumps({"type": "input_audio.flush"}), 0)

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
                    # End of audio: the server answers a last transcription.done and
                    # closes; give it a moment, then close ourselves.
                    await ws.send(json.dumps({"type": "input_audio.end"}))
                    await asyncio.wait({self._task}, timeout=CLOSE_TIMEOUT_S)
                    await asyncio.wait_for(ws.close(1000), CLOSE_TIMEOUT_S)
            if not self._task.done():
                self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(asyncio.shield(self._task), CLOSE_TIMEOUT_S + 1)

    # -- sending -----------------------------------------------------------------
    def _append_message(self, mulaw: bytes) -> str:
        if self._resampler is None:
            payload = mulaw
        else:
            pcm = self._resampler.feed(mulaw_to_pcm16(mulaw))
            if self.cfg.encoding == "pcm_f32le":
                payload = (pcm.astype(np.float32) / 32768.0).astype("<f4").tobytes()
            else:
                payload = pcm.astype("<i2").tobytes()
        return json.dumps({"type": "input_audio.append",
                           "audio": base64.b64encode(payload).decode("ascii")})

    async def _submit(self, message: str, audio_bytes: int) -> None:
        if self._live and self._ws is not None:
            with contextlib.suppress(ConnectionClosed):
                await self._ws.send(message)  # a drop is reported by the reader
            return
        self._pending.append((message, audio_bytes))
        self._pending_bytes += audio_bytes
        while self._pending_bytes > self.cfg.max_queued_bytes:
            # Drop the oldest audio, keep flushes; said once per session, counted always.
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
            await ws.send(json.dumps(self.cfg.session_update()))
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
        headers = {"Authorization": f"Bearer {self.cfg.api_key}"}
        try:
            return await connect(self.cfg.url(), additional_headers=headers,
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
        """Wait for ``session.created``; an ``error`` before it fails the session."""
        while True:
            data = _parse(await ws.recv())
            if data is None:
                continue
            kind = data.get("type")
            if kind == "session.created":
                session = data.get("session")
                self.session = session if isinstance(session, dict) else {}
                log.debug("stt.session_created", extra={
                    "call_id": self.call_id, "provider": PROVIDER_ID, "session": self.session})
                return
            if kind == "error":
                code = _error_code(data)
                raise ProviderError(f"{PROVIDER_ID}: error: {self._error_text(data)}",
                                    retryable=code is not None and (code == 429 or code >= 500),
                                    status_code=code if code in (401, 403) else None)

    async def _read(self, ws: ClientConnection) -> None:
        try:
            while True:
                data = _parse(await ws.recv())
                if data is not None:
                    self._on_message(data)
        except ConnectionClosed as exc:
            # A close right after an error event is that error's consequence: one report.
            if not self._closing and not self._fatal and self._last_type != "error":
                self._error(self._closed_error(exc, before_ready=False), fatal=True)

    def _on_message(self, data: dict[str, Any]) -> None:
        kind = data.get("type")
        if kind == "transcription.text.delta":
            delta = data.get("text")
            if isinstance(delta, str) and delta:
                self._partial += delta
                if self._partial.strip():
                    self._emit(SttEvent("partial", self._partial.strip()))
        elif kind == "transcription.done":
            text = data.get("text")
            final = (text if isinstance(text, str) and text.strip() else self._partial).strip()
            self._partial = ""
            if final:
                self._emit(SttEvent("final", final))
        elif kind == "error":
            self._error(ProviderError(f"{PROVIDER_ID}: error: {self._error_text(data)}",
                                      retryable=True), fatal=False)
        elif kind == "transcription.language":
            lang = data.get("audio_language")
            self.language = lang if isinstance(lang, str) else self.language
        elif kind in ("session.updated", "session.created"):
            session = data.get("session")
            self.session = session if isinstance(session, dict) else self.session
        elif kind != "transcription.segment":  # segments repeat text the deltas carried
            log.debug("stt.unknown_message", extra={"call_id": self.call_id,
                                                    "provider": PROVIDER_ID, "type": kind})

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
        when = "before session.created" if before_ready else "mid-stream"
        return ProviderError(f"{PROVIDER_ID}: connection closed {when} ({code} {reason})".rstrip(),
                             retryable=code != 1008)

    def _error_text(self, data: Mapping[str, Any]) -> str:
        err = data.get("error")
        message: Any = err.get("message") if isinstance(err, dict) else err
        if isinstance(message, dict):  # {"detail": ...} in some server replies
            detail = message.get("detail")
            message = detail if isinstance(detail, str) else json.dumps(message)
        code = _error_code(data)
        text = message if isinstance(message, str) and message else "no detail"
        return self._redact(f"{text} (code {code})" if code is not None else text)

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


def _error_code(data: Mapping[str, Any]) -> int | None:
    err = data.get("error")
    code = err.get("code") if isinstance(err, dict) else None
    return code if isinstance(code, int) and not isinstance(code, bool) else None


# ---------------------------------------------------------------------------- provider

class STT:
    """Mistral Voxtral realtime: μ-law straight through, local VAD flushes each utterance."""

    name = PROVIDER_ID

    def __init__(self, cfg: MistralSttConfig) -> None:
        self.cfg = cfg
        # Partials yes; endpointing is ours (local energy VAD), not the server's.
        self.capabilities = SttCapabilities(interim_results=True, server_vad=False)

    async def open(self, call_id: str) -> MistralSttSession:
        return MistralSttSession(self.cfg, call_id)


def create(cfg: Mapping[str, Any]) -> STT:
    return STT(parse_config(cfg))
