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

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from voicecall.audio.g711 import FRAME_BYTES, SAMPLE_RATE
from voicecall.audio.vad import EnergyVad
from voicecall.errors import ConfigError, ProviderError
from voicecall.speech.stt._ws import (
    CLOSE_TIMEOUT_S,
    DEFAULT_MAX_QUEUED_BYTES,
    PcmEncoder,
    ProviderConfig,
    WsSttSession,
    b64,
    ws_url,
)
from voicecall.speech.stt.base import SttCapabilities

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
        """``endpoint`` as is, else ``baseUrl`` + the realtime path; ``?model=`` appended."""
        query = [("model", self.model)]
        if self.endpoint:
            return ws_url(self.endpoint, "", query)
        return ws_url(self.base_url, REALTIME_PATH, query)

    def session_update(self) -> dict[str, Any]:
        session: dict[str, Any] = {
            "audio_format": {"encoding": self.encoding, "sample_rate": self.sample_rate}}
        if self.target_streaming_delay_ms is not None:
            session["target_streaming_delay_ms"] = self.target_streaming_delay_ms
        return {"type": "session.update", "session": session}


_ENCODING_ALIASES = {"mulaw": "pcm_mulaw", "ulaw": "pcm_mulaw", "g711_ulaw": "pcm_mulaw",
                     "pcm": "pcm_s16le", "linear16": "pcm_s16le"}


def parse_config(cfg: Mapping[str, Any]) -> MistralSttConfig:
    """The raw ``streaming.providers.mistral`` dict -> a checked config."""
    pc = ProviderConfig(cfg, PROVIDER_ID)
    encoding = (pc.get_str("encoding") or DEFAULT_ENCODING).lower()
    encoding = _ENCODING_ALIASES.get(encoding, encoding)
    if encoding not in ENCODINGS:
        raise ConfigError(f"unsupported encoding {encoding!r}", path=pc.path("encoding"),
                          allowed=list(ENCODINGS))
    sample_rate = pc.get_sample_rate(encoding, SAMPLE_RATES, mulaw="pcm_mulaw", pcm="pcm_s16le")
    pc.url(DEFAULT_BASE_URL, REALTIME_PATH, ())         # a bad baseUrl / endpoint fails here
    return MistralSttConfig(
        api_key=pc.api_key(ENV_KEYS, from_env=True),
        model=pc.get_str("model") or DEFAULT_MODEL,
        encoding=encoding,
        sample_rate=sample_rate,
        target_streaming_delay_ms=pc.get_int("targetStreamingDelayMs",
                                             DEFAULT_STREAMING_DELAY_MS, minimum=0,
                                             maximum=10_000),
        silence_duration_ms=pc.get_int("silenceDurationMs", DEFAULT_SILENCE_MS, minimum=100,
                                       maximum=5000),
        energy_threshold=pc.get_number("energyThreshold", DEFAULT_ENERGY_THRESHOLD,
                                       minimum=0.0001, maximum=1.0),
        base_url=pc.get_str("baseUrl") or DEFAULT_BASE_URL,
        endpoint=pc.get_str("endpoint"),
        connect_timeout_ms=pc.get_int("connectTimeoutMs", DEFAULT_CONNECT_TIMEOUT_MS,
                                      minimum=1, maximum=120_000),
        max_queued_bytes=pc.get_int("maxQueuedBytes", DEFAULT_MAX_QUEUED_BYTES,
                                    minimum=FRAME_BYTES, maximum=64 * 1024 * 1024),
    )


# ---------------------------------------------------------------------------- session

class MistralSttSession(WsSttSession):
    """One call's Voxtral realtime stream. Connecting starts at construction."""

    provider = PROVIDER_ID

    def __init__(self, cfg: MistralSttConfig, call_id: str) -> None:
        timeout = cfg.connect_timeout_ms / 1000
        super().__init__(
            call_id=call_id, url=cfg.url(), headers={"Authorization": f"Bearer {cfg.api_key}"},
            secret=cfg.api_key, connect_timeout=timeout, ready_timeout=timeout,
            close_timeout=CLOSE_TIMEOUT_S, max_queued_bytes=cfg.max_queued_bytes,
            pcm=PcmEncoder(cfg.sample_rate, float32=cfg.encoding == "pcm_f32le")
            if cfg.encoding != "pcm_mulaw" else None,
            local_vad=EnergyVad(threshold=cfg.energy_threshold,
                                release_frames=max(1, round(cfg.silence_duration_ms / 20))))
        self.cfg = cfg
        self.session: dict[str, Any] = {}     # the server's session (created / updated)
        self.language: str | None = None      # from ``transcription.language``
        self._partial = ""
        self.start()

    # -- sending -----------------------------------------------------------------
    def encode_audio(self, mulaw: bytes) -> str:
        return json.dumps({"type": "input_audio.append", "audio": b64(self.audio_payload(mulaw))})

    def commit_message(self) -> str:
        """The local detector heard the utterance end: the server transcribes what it has."""
        return json.dumps({"type": "input_audio.flush"})

    def finish_message(self) -> str:
        # End of audio: the server answers a last transcription.done and closes; the
        # session gives it a moment, then closes itself.
        return json.dumps({"type": "input_audio.end"})

    # -- receiving ---------------------------------------------------------------
    async def on_text(self, data: dict[str, Any]) -> None:
        kind = data.get("type")
        if kind == "session.created" and not self.ready:
            session = data.get("session")
            self.session = session if isinstance(session, dict) else {}
            log.debug("stt.session_created", extra={
                "call_id": self.call_id, "provider": PROVIDER_ID, "session": self.session})
            # The format freezes once audio has started: the update goes before any of it.
            await self.send_text(json.dumps(self.cfg.session_update()))
            await self.mark_ready()
        elif kind == "transcription.text.delta":
            delta = data.get("text")
            if isinstance(delta, str) and delta:
                self._partial += delta
                if self._partial.strip():
                    self.emit("partial", self._partial.strip())
        elif kind == "transcription.done":
            text = data.get("text")
            final = (text if isinstance(text, str) and text.strip() else self._partial).strip()
            self._partial = ""
            if final:
                self.emit("final", final)
        elif kind == "error":
            code = _error_code(data)
            text = self.error_text(f"{PROVIDER_ID}: error: {_error_text(data)}")
            if not self.ready:      # before ``session.created``: the session was refused
                raise ProviderError(text,
                                    retryable=code is not None and (code == 429 or code >= 500),
                                    status_code=code if code in (401, 403) else None)
            log.warning("stt.error", extra={"call_id": self.call_id, "provider": PROVIDER_ID,
                                            "why": text})
            self.emit("error", text)
        elif kind == "transcription.language":
            lang = data.get("audio_language")
            self.language = lang if isinstance(lang, str) else self.language
        elif kind in ("session.updated", "session.created"):
            session = data.get("session")
            self.session = session if isinstance(session, dict) else self.session
        elif kind != "transcription.segment":  # segments repeat text the deltas carried
            log.debug("stt.unknown_message", extra={"call_id": self.call_id,
                                                    "provider": PROVIDER_ID, "type": kind})


def _error_text(data: Mapping[str, Any]) -> str:
    err = data.get("error")
    message: Any = err.get("message") if isinstance(err, dict) else err
    if isinstance(message, dict):  # {"detail": ...} in some server replies
        detail = message.get("detail")
        message = detail if isinstance(detail, str) else json.dumps(message)
    code = _error_code(data)
    text = message if isinstance(message, str) and message else "no detail"
    return f"{text} (code {code})" if code is not None else text


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
