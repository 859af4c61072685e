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

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from voicecall.audio.g711 import FRAME_BYTES
from voicecall.audio.vad import EnergyVad
from voicecall.errors import ConfigError, ProviderError
from voicecall.speech.stt._ws import (
    CLOSE_TIMEOUT_S,
    DEFAULT_MAX_QUEUED_BYTES,
    PcmEncoder,
    ProviderConfig,
    WsSttSession,
    b64,
    query_bool,
    ws_url,
)
from voicecall.speech.stt.base import SttCapabilities

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
DEFAULT_ENERGY_THRESHOLD = 0.035  # local detector, manual commit mode only

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
            ("include_timestamps", query_bool(self.include_timestamps)),
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
            q.append(("enable_logging", query_bool(self.enable_logging)))
        return q

    def url(self) -> str:
        """``endpoint`` as is, else ``baseUrl`` + the realtime path; the query appended."""
        if self.endpoint:
            return ws_url(self.endpoint, "", self.query())
        return ws_url(self.base_url, REALTIME_PATH, self.query())


def _num(value: float) -> str:
    return f"{value:g}"


def _optional(pc: ProviderConfig, key: str, lo: float, hi: float) -> float | None:
    """An optional tuning number: None when absent (the server's default applies)."""
    return None if pc.raw(key) is None else pc.get_number(key, lo, minimum=lo, maximum=hi)


def _optional_int(pc: ProviderConfig, key: str, lo: int, hi: int) -> int | None:
    return None if pc.raw(key) is None else pc.get_int(key, lo, minimum=lo, maximum=hi)


def _flag(pc: ProviderConfig, key: str) -> bool | None:
    value = pc.raw(key)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ConfigError("must be true or false", path=pc.path(key))


def parse_config(cfg: Mapping[str, Any]) -> ElevenLabsSttConfig:
    """The raw ``streaming.providers.elevenlabs`` dict -> a checked config."""
    pc = ProviderConfig(cfg, PROVIDER_ID)
    audio_format = (pc.get_str("audioFormat") or pc.get_str("encoding")
                    or DEFAULT_AUDIO_FORMAT).lower()
    if audio_format not in AUDIO_FORMATS:
        raise ConfigError(f"unsupported audio format {audio_format!r}",
                          path=pc.path("audioFormat"), allowed=list(AUDIO_FORMATS))
    commit = (pc.get_str("commitStrategy") or DEFAULT_COMMIT_STRATEGY).lower()
    if commit not in COMMIT_STRATEGIES:
        raise ConfigError(f"unknown commit strategy {commit!r}",
                          path=pc.path("commitStrategy"), allowed=list(COMMIT_STRATEGIES))
    keyterms = pc.raw("keyterms")
    if keyterms is None:
        terms: tuple[str, ...] = ()
    elif isinstance(keyterms, list | tuple) and all(isinstance(t, str) for t in keyterms):
        terms = tuple(t.strip() for t in keyterms if t.strip())
    else:
        raise ConfigError("must be a list of strings", path=pc.path("keyterms"))
    pc.url(DEFAULT_BASE_URL, REALTIME_PATH, ())         # a bad baseUrl / endpoint fails here
    return ElevenLabsSttConfig(
        api_key=pc.api_key(ENV_KEYS, from_env=True),
        model=pc.get_str("model") or pc.get_str("modelId") or DEFAULT_MODEL,
        language=pc.get_str("language") or pc.get_str("languageCode"),
        audio_format=audio_format,
        commit_strategy=commit,
        vad_silence_threshold_secs=pc.get_number(
            "vadSilenceThresholdSecs", DEFAULT_VAD_SILENCE_SECS, minimum=0.3, maximum=3.0),
        vad_threshold=_optional(pc, "vadThreshold", 0.1, 0.9),
        min_speech_duration_ms=_optional_int(pc, "minSpeechDurationMs", 50, 2000),
        min_silence_duration_ms=_optional_int(pc, "minSilenceDurationMs", 50, 2000),
        include_timestamps=bool(_flag(pc, "includeTimestamps")),
        keyterms=terms,
        enable_logging=_flag(pc, "enableLogging"),
        base_url=pc.get_str("baseUrl") or DEFAULT_BASE_URL,
        endpoint=pc.get_str("endpoint"),
        connect_timeout_ms=pc.get_int("connectTimeoutMs", DEFAULT_CONNECT_TIMEOUT_MS,
                                      minimum=1, maximum=120_000),
        max_queued_bytes=pc.get_int("maxQueuedBytes", DEFAULT_MAX_QUEUED_BYTES,
                                    minimum=FRAME_BYTES, maximum=64 * 1024 * 1024),
        energy_threshold=pc.get_number("energyThreshold", DEFAULT_ENERGY_THRESHOLD,
                                       minimum=0.0001, maximum=1.0),
    )


# ---------------------------------------------------------------------------- session

class ElevenLabsSttSession(WsSttSession):
    """One call's Scribe realtime stream. Connecting starts at construction."""

    provider = PROVIDER_ID

    def __init__(self, cfg: ElevenLabsSttConfig, call_id: str) -> None:
        timeout = cfg.connect_timeout_ms / 1000
        super().__init__(
            call_id=call_id, url=cfg.url(), headers={"xi-api-key": cfg.api_key},
            secret=cfg.api_key, connect_timeout=timeout, ready_timeout=timeout,
            close_timeout=CLOSE_TIMEOUT_S, max_queued_bytes=cfg.max_queued_bytes,
            pcm=PcmEncoder(cfg.sample_rate) if cfg.audio_format != "ulaw_8000" else None,
            local_vad=EnergyVad(threshold=cfg.energy_threshold, release_frames=max(
                1, round(cfg.vad_silence_threshold_secs * 1000 / 20)))
            if cfg.commit_strategy == "manual" else None)
        self.cfg = cfg
        self.session_config: dict[str, Any] = {}   # ``session_started.config``
        self._in_utterance = False
        self.start()

    # -- sending -----------------------------------------------------------------
    def encode_audio(self, mulaw: bytes) -> str:
        return self._chunk(self.audio_payload(mulaw), commit=False)

    def commit_message(self) -> str:
        """``manual`` commit strategy: the local detector heard the utterance end."""
        return self._chunk(b"", commit=True)

    def _chunk(self, audio: bytes, commit: bool) -> str:
        return json.dumps({"message_type": "input_audio_chunk", "audio_base_64": b64(audio),
                           "commit": commit, "sample_rate": self.cfg.sample_rate})

    # -- receiving ---------------------------------------------------------------
    async def on_text(self, data: dict[str, Any]) -> None:
        kind = data.get("message_type")
        if kind == "session_started" and not self.ready:
            config = data.get("config")
            self.session_config = config if isinstance(config, dict) else {}
            log.debug("stt.session_started", extra={
                "call_id": self.call_id, "provider": PROVIDER_ID,
                "session_id": data.get("session_id"), "config": self.session_config})
            await self.mark_ready()
        elif kind == "partial_transcript":
            text = _text(data)
            if text:
                if not self._in_utterance and self.cfg.commit_strategy == "vad":
                    self.emit("speech-start")
                self._in_utterance = True
                self.emit("partial", text)
        elif kind in ("committed_transcript", "committed_transcript_with_timestamps"):
            if (kind == "committed_transcript_with_timestamps") != self.cfg.include_timestamps:
                return  # the server sends both when timestamps are on: report once
            self._in_utterance = False
            text = _text(data)
            if text:
                self.emit("final", text, _confidence(data))
        elif isinstance(kind, str) and (kind in ERROR_TYPES or kind.endswith("error")):
            error = ProviderError(self.error_text(f"{PROVIDER_ID}: {kind}: {_error_text(data)}"),
                                  retryable=kind in RETRYABLE_ERRORS,
                                  status_code=401 if kind == "auth_error" else None)
            # Before ``session_started`` any error means the session was refused.
            if not self.ready or kind in FATAL_ERRORS:
                raise error
            log.warning("stt.error", extra={"call_id": self.call_id, "provider": PROVIDER_ID,
                                            "why": str(error)})
            self.emit("error", str(error))
        elif kind != "session_started":
            log.debug("stt.unknown_message", extra={"call_id": self.call_id,
                                                    "provider": PROVIDER_ID, "type": kind})


def _error_text(data: Mapping[str, Any]) -> str:
    for key in ("error", "message", "detail"):
        value = data.get(key)
        if isinstance(value, str) and value:
            return value
    return "no detail"


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
