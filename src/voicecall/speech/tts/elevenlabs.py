"""ElevenLabs streaming TTS in telephony format (``output_format=ulaw_8000``).

``POST {baseUrl}/v1/text-to-speech/{voice_id}/stream?output_format=ulaw_8000``
with ``xi-api-key``: the chunked body is raw G.711 mu-law at 8 kHz, so chunks
are passed through as they arrive (no resampling, no re-encoding).

The HTTP stream (not the stream-input WebSocket) is used on purpose: the
turn loop already hands over whole sentences, the pooled HTTP/1.1
connection avoids a per-sentence handshake, and there is no 20 s inactivity
close or keepalive to manage between turns.

Config (``tts.providers.elevenlabs``): ``apiKey`` (required), ``voiceId`` /
``voice`` (default a premade voice), ``modelId`` / ``model``
(``eleven_flash_v2_5``, the low-latency model; ``eleven_multilingual_v2`` for
quality), ``voiceSettings`` (``stability``, ``similarityBoost``, ``style``,
``useSpeakerBoost``, ``speed``; snake_case accepted), ``speed`` (shortcut for
``voiceSettings.speed``), ``languageCode``, ``seed``,
``applyTextNormalization`` (auto/on/off), ``optimizeStreamingLatency`` (0-4),
``enableLogging``, ``baseUrl`` (``https://api.elevenlabs.io``; a trailing
``/v1`` is tolerated), ``timeoutMs`` (idle read timeout).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import quote

import httpx

from voicecall.errors import ConfigError
from voicecall.speech.tts import _common as c
from voicecall.speech.tts.base import TtsCapabilities

__all__ = ["DEFAULT_MODEL", "DEFAULT_VOICE_ID", "OUTPUT_FORMAT", "TTS", "create"]

PROVIDER_ID = "elevenlabs"
DEFAULT_BASE_URL = "https://api.elevenlabs.io"
DEFAULT_MODEL = "eleven_flash_v2_5"
DEFAULT_VOICE_ID = "JBFqnCBsd6RMkjVDRZzb"  # "George", a premade voice every account has
OUTPUT_FORMAT = "ulaw_8000"
_LABEL = "elevenlabs TTS"
_SETTINGS = (("stability", "stability"), ("similarityBoost", "similarity_boost"),
             ("style", "style"), ("useSpeakerBoost", "use_speaker_boost"), ("speed", "speed"))


class TTS:
    """ElevenLabs HTTP stream -> mu-law 8 kHz chunks as they arrive."""

    name = PROVIDER_ID
    capabilities = TtsCapabilities(streaming=True, telephony_native=True)

    def __init__(self, api_key: str, *, voice_id: str = DEFAULT_VOICE_ID,
                 model_id: str = DEFAULT_MODEL, voice_settings: Mapping[str, Any] | None = None,
                 extra_body: Mapping[str, Any] | None = None,
                 query: Mapping[str, str] | None = None,
                 base_url: str = DEFAULT_BASE_URL,
                 read_timeout_s: float = c.DEFAULT_READ_TIMEOUT_S) -> None:
        self.voice_id = voice_id
        self.model_id = model_id
        self.voice_settings = dict(voice_settings) if voice_settings else None
        self.extra_body = dict(extra_body or {})
        base = base_url.rstrip("/")
        self.base_url = base[:-3] if base.endswith("/v1") else base
        self._url = f"{self.base_url}/v1/text-to-speech/{quote(voice_id, safe='')}/stream"
        self._params = {"output_format": OUTPUT_FORMAT, **(query or {})}
        self._api_key = api_key
        self._client = c.http_client(read_timeout_s)

    def __repr__(self) -> str:
        return (f"elevenlabs.TTS(voice_id={self.voice_id!r}, model_id={self.model_id!r}, "
                f"base_url={self.base_url!r})")

    def request_body(self, text: str) -> dict[str, Any]:
        body: dict[str, Any] = {"text": text, "model_id": self.model_id}
        if self.voice_settings:
            body["voice_settings"] = dict(self.voice_settings)
        body.update(self.extra_body)
        return body

    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        text = text.strip()
        if not text:
            return
        headers = {"xi-api-key": self._api_key}
        started = False
        try:
            async with self._client.stream("POST", self._url, params=self._params,
                                           json=self.request_body(text),
                                           headers=headers) as response:
                if response.status_code != 200:
                    body = await response.aread()
                    raise c.status_error(_LABEL, response.status_code, body, self._api_key)
                async for data in response.aiter_bytes():
                    if data:
                        started = True
                        yield data
        except httpx.HTTPError as exc:
            raise c.network_error(_LABEL, exc, self._api_key, started=started) from None

    async def aclose(self) -> None:
        await self._client.aclose()


def _voice_settings(cfg: Mapping[str, Any]) -> dict[str, Any]:
    raw = cfg.get("voiceSettings", cfg.get("voice_settings"))
    if raw is not None and not isinstance(raw, Mapping):
        raise ConfigError("must be an object", path=c.path_of(PROVIDER_ID, "voiceSettings"))
    raw = raw or {}
    out: dict[str, Any] = {}
    for camel, snake in _SETTINGS:
        value = raw.get(camel, raw.get(snake))
        if value is None:
            continue
        where = c.path_of(PROVIDER_ID, f"voiceSettings.{camel}")
        if snake == "use_speaker_boost":
            if not isinstance(value, bool):
                raise ConfigError("must be true or false", path=where)
        elif isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError("must be a number", path=where)
        out[snake] = value
    speed = c.opt_number(cfg, PROVIDER_ID, "speed", low=0.7, high=1.2)
    if speed is not None:
        out["speed"] = speed
    return out


def create(cfg: Mapping[str, Any]) -> TTS:
    key = c.api_key(cfg, PROVIDER_ID)
    extra: dict[str, Any] = {}
    language = c.opt_str(cfg, PROVIDER_ID, "languageCode", "language_code")
    if language:
        extra["language_code"] = language
    seed = cfg.get("seed")
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= 4294967295:
            raise ConfigError("must be an integer 0..4294967295",
                              path=c.path_of(PROVIDER_ID, "seed"))
        extra["seed"] = seed
    normalization = c.opt_str(cfg, PROVIDER_ID, "applyTextNormalization")
    if normalization:
        if normalization not in ("auto", "on", "off"):
            raise ConfigError("must be auto, on or off",
                              path=c.path_of(PROVIDER_ID, "applyTextNormalization"))
        extra["apply_text_normalization"] = normalization
    query: dict[str, str] = {}
    latency = c.opt_number(cfg, PROVIDER_ID, "optimizeStreamingLatency", low=0, high=4)
    if latency is not None:
        query["optimize_streaming_latency"] = str(int(latency))
    logging_flag = cfg.get("enableLogging")
    if logging_flag is not None:
        if not isinstance(logging_flag, bool):
            raise ConfigError("must be true or false",
                              path=c.path_of(PROVIDER_ID, "enableLogging"))
        query["enable_logging"] = "true" if logging_flag else "false"
    return TTS(key,
               voice_id=c.opt_str(cfg, PROVIDER_ID, "voiceId", "voice") or DEFAULT_VOICE_ID,
               model_id=c.opt_str(cfg, PROVIDER_ID, "modelId", "model") or DEFAULT_MODEL,
               voice_settings=_voice_settings(cfg), extra_body=extra, query=query,
               base_url=c.base_url(cfg, PROVIDER_ID, DEFAULT_BASE_URL),
               read_timeout_s=c.read_timeout_s(cfg, PROVIDER_ID))
