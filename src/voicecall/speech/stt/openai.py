"""OpenAI streaming STT: a Realtime *transcription* session (GA interface).

Wire protocol (see ``ai-speech-apis.md`` §2):

- ``wss://api.openai.com/v1/realtime?intent=transcription`` (no ``model`` in
  the URL: that would make a conversation session), ``Authorization: Bearer``,
  and no ``OpenAI-Beta`` header (the beta shape is switched off);
- first message ``session.update`` with ``session.type: "transcription"``,
  input format ``audio/pcmu`` (the caller's G.711 mu-law goes through as is),
  the transcription model and server VAD (``threshold``,
  ``prefix_padding_ms``, ``silence_duration_ms``); the session is ready on
  ``session.updated``, and audio queued until then is flushed;
- audio as ``input_audio_buffer.append`` (base64); with server VAD the server
  commits turns itself;
- ``input_audio_buffer.speech_started`` -> ``speech-start``;
  ``conversation.item.input_audio_transcription.delta`` -> ``partial`` (the
  text so far for that item; ``gpt-4o-transcribe`` sends its deltas after the
  turn is committed, not while the caller speaks); ``...completed`` ->
  ``final``; ``...failed`` and ``error`` -> ``error``.

Config (``streaming.providers.openai``): ``apiKey`` (or ``OPENAI_API_KEY``),
``model`` (``gpt-4o-transcribe``), ``language``, ``prompt``,
``silenceDurationMs`` (800), ``vadThreshold`` (0.5), ``prefixPaddingMs``
(300), ``noiseReduction`` (``near_field``/``far_field``; off when unset),
``baseUrl`` (``https://api.openai.com/v1``; ``/realtime`` is appended) or a
full ``endpoint``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from voicecall.errors import ProviderError
from voicecall.speech.stt._ws import (
    CONNECT_TIMEOUT_S,
    DEFAULT_MAX_QUEUED_BYTES,
    READY_TIMEOUT_S,
    ProviderConfig,
    WsSttProvider,
    WsSttSession,
    b64,
    ws_url,
)
from voicecall.speech.stt.base import SttCapabilities

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_SILENCE_DURATION_MS",
    "DEFAULT_URL",
    "DEFAULT_VAD_THRESHOLD",
    "STT",
    "OpenAISttSession",
    "create",
]

PROVIDER_ID = "openai"
ENV_KEYS = ("OPENAI_API_KEY",)
DEFAULT_BASE_URL = "https://api.openai.com/v1"
REALTIME_PATH = "/realtime"
TRANSCRIPTION_QUERY = (("intent", "transcription"),)
DEFAULT_URL = ws_url(DEFAULT_BASE_URL, REALTIME_PATH, TRANSCRIPTION_QUERY)
DEFAULT_MODEL = "gpt-4o-transcribe"
DEFAULT_SILENCE_DURATION_MS = 800
DEFAULT_VAD_THRESHOLD = 0.5
DEFAULT_PREFIX_PADDING_MS = 300
NOISE_REDUCTION = ("near_field", "far_field")
INPUT_FORMAT = "audio/pcmu"
# The server closes the session after these; anything else is reported and survived.
FATAL_CODES = frozenset({"invalid_api_key", "session_expired", "beta_api_shape_disabled",
                         "insufficient_quota"})


class OpenAISttSession(WsSttSession):
    provider = PROVIDER_ID

    def __init__(self, owner: STT, call_id: str) -> None:
        super().__init__(call_id=call_id, **owner.connection("Bearer"))
        self._owner = owner
        self._text: dict[str, str] = {}

    def session_update(self) -> dict[str, Any]:
        o = self._owner
        transcription: dict[str, Any] = {"model": o.model}
        if o.language:
            transcription["language"] = o.language
        if o.prompt:
            transcription["prompt"] = o.prompt
        audio_in: dict[str, Any] = {
            "format": {"type": INPUT_FORMAT},
            "transcription": transcription,
            "turn_detection": {
                "type": "server_vad",
                "threshold": o.vad_threshold,
                "prefix_padding_ms": o.prefix_padding_ms,
                "silence_duration_ms": o.silence_duration_ms,
            },
        }
        if o.noise_reduction:
            audio_in["noise_reduction"] = {"type": o.noise_reduction}
        return {"type": "session.update",
                "session": {"type": "transcription", "audio": {"input": audio_in}}}

    async def on_open(self) -> None:
        await self.send_json(self.session_update())

    def encode_audio(self, mulaw: bytes) -> str:
        return json.dumps({"type": "input_audio_buffer.append", "audio": b64(mulaw)})

    async def on_text(self, data: dict[str, Any]) -> None:
        kind = data.get("type")
        if kind == "session.updated":
            await self.mark_ready()
        elif kind == "input_audio_buffer.speech_started":
            self.emit("speech-start")
        elif kind == "conversation.item.input_audio_transcription.delta":
            item = str(data.get("item_id", ""))
            delta = data.get("delta")
            if isinstance(delta, str) and delta:
                text = self._text.get(item, "") + delta
                self._text[item] = text
                if text.strip():
                    self.emit("partial", text.strip())
        elif kind == "conversation.item.input_audio_transcription.completed":
            item = str(data.get("item_id", ""))
            self._text.pop(item, None)
            transcript = data.get("transcript")
            if isinstance(transcript, str) and transcript.strip():
                self.emit("final", transcript.strip(), _confidence(data.get("logprobs")))
        elif kind == "conversation.item.input_audio_transcription.failed":
            self._text.pop(str(data.get("item_id", "")), None)
            self.emit("error", self.describe_error(data.get("error"), "transcription failed"))
        elif kind == "error":
            self._on_error(data.get("error"))

    def _on_error(self, err: object) -> None:
        text = self.describe_error(err, "error")
        code = err.get("code") if isinstance(err, dict) else None
        kind = err.get("type") if isinstance(err, dict) else None
        if not self.ready or code in FATAL_CODES:
            # Before ``session.updated`` an error means our session was refused.
            status = 401 if code == "invalid_api_key" else 429 if code == "insufficient_quota" \
                else None
            raise ProviderError(text, retryable=kind == "server_error" or code == "session_expired",
                                status_code=status)
        self.emit("error", text)


def _confidence(logprobs: object) -> float | None:
    """exp(mean token logprob) when the server sent logprobs, else None."""
    if not isinstance(logprobs, list) or not logprobs:
        return None
    values = [p.get("logprob") for p in logprobs if isinstance(p, dict)]
    numbers = [float(v) for v in values if isinstance(v, int | float)]
    if not numbers:
        return None
    return round(math.exp(sum(numbers) / len(numbers)), 4)


class STT(WsSttProvider):
    """OpenAI Realtime transcription (server VAD, incremental transcripts)."""

    name = PROVIDER_ID

    def __init__(self, api_key: str, *, model: str = DEFAULT_MODEL, language: str | None = None,
                 prompt: str | None = None,
                 silence_duration_ms: int = DEFAULT_SILENCE_DURATION_MS,
                 vad_threshold: float = DEFAULT_VAD_THRESHOLD,
                 prefix_padding_ms: int = DEFAULT_PREFIX_PADDING_MS,
                 noise_reduction: str | None = None, url: str = DEFAULT_URL,
                 connect_timeout: float = CONNECT_TIMEOUT_S,
                 ready_timeout: float = READY_TIMEOUT_S,
                 max_queued_bytes: int = DEFAULT_MAX_QUEUED_BYTES) -> None:
        super().__init__(api_key, url, connect_timeout=connect_timeout,
                         ready_timeout=ready_timeout, max_queued_bytes=max_queued_bytes)
        self.model = model
        self.language = language
        self.prompt = prompt
        self.silence_duration_ms = silence_duration_ms
        self.vad_threshold = vad_threshold
        self.prefix_padding_ms = prefix_padding_ms
        self.noise_reduction = noise_reduction
        self.capabilities = SttCapabilities(interim_results=True, server_vad=True)

    def __repr__(self) -> str:
        return f"<openai STT model={self.model!r} url={self.url!r}>"

    async def open(self, call_id: str) -> OpenAISttSession:
        return OpenAISttSession(self, call_id).start()


def create(cfg: Mapping[str, Any]) -> STT:
    """The provider from its raw ``streaming.providers.openai`` config."""
    pc = ProviderConfig(cfg, PROVIDER_ID)
    api_key = pc.api_key(ENV_KEYS)
    noise = pc.get_str("noiseReduction")
    if noise is not None:
        noise = pc.get_choice("noiseReduction", noise, NOISE_REDUCTION)
    return STT(
        api_key,
        model=pc.get_str("model", DEFAULT_MODEL) or DEFAULT_MODEL,
        language=pc.get_str("language"),
        prompt=pc.get_str("prompt"),
        silence_duration_ms=pc.get_int("silenceDurationMs", DEFAULT_SILENCE_DURATION_MS,
                                       minimum=0, maximum=10_000),
        vad_threshold=pc.get_number("vadThreshold", DEFAULT_VAD_THRESHOLD,
                                    minimum=0.0, maximum=1.0),
        prefix_padding_ms=pc.get_int("prefixPaddingMs", DEFAULT_PREFIX_PADDING_MS,
                                     minimum=0, maximum=10_000),
        noise_reduction=noise,
        url=pc.url(DEFAULT_BASE_URL, REALTIME_PATH, TRANSCRIPTION_QUERY),
    )


if TYPE_CHECKING:      # ``create`` is a registry factory; ``STT`` satisfies the Protocol
    from voicecall.speech.registry import SttFactory

    _factory: SttFactory = create
