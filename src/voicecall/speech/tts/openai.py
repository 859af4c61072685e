"""OpenAI TTS (``POST {baseUrl}/audio/speech``) streamed as telephony mu-law 8 kHz.

We ask for ``response_format: "pcm"`` (raw 24 kHz 16-bit LE mono, no header):
it is the lowest-latency format, decodable byte by byte as it downloads, so
each body chunk is resampled to 8 kHz with a streaming soxr resampler (filter
state kept across chunks) and mu-law encoded before the rest has arrived.

Config (``tts.providers.openai``): ``apiKey`` (required), ``model``
(``gpt-4o-mini-tts``), ``voice`` / ``voiceId`` (``coral``; a custom voice id
``voice_...`` is sent as ``{"id": ...}``), ``instructions`` (not sent to
``tts-1``/``tts-1-hd``, which ignore it), ``speed`` (0.25-4.0), ``baseUrl``
(``https://api.openai.com/v1``), ``timeoutMs`` (idle read timeout).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx

from voicecall.audio.g711 import pcm16_to_mulaw
from voicecall.audio.resample import StreamResampler, pcm16_bytes
from voicecall.speech.tts import _common as c
from voicecall.speech.tts.base import TtsCapabilities

__all__ = ["DEFAULT_MODEL", "DEFAULT_VOICE", "PCM_RATE", "TTS", "create"]

log = logging.getLogger("voicecall.speech.tts")

PROVIDER_ID = "openai"
DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_MODEL = "gpt-4o-mini-tts"
DEFAULT_VOICE = "coral"
PCM_RATE = 24000
MAX_INPUT_CHARS = 4096
_NO_INSTRUCTIONS = ("tts-1", "tts-1-hd")
_LABEL = "openai TTS"


class TTS:
    """OpenAI speech endpoint -> mu-law 8 kHz chunks, streamed."""

    name = PROVIDER_ID
    capabilities = TtsCapabilities(streaming=True, telephony_native=False)

    def __init__(self, api_key: str, *, model: str = DEFAULT_MODEL, voice: str = DEFAULT_VOICE,
                 instructions: str | None = None, speed: float | None = None,
                 base_url: str = DEFAULT_BASE_URL,
                 read_timeout_s: float = c.DEFAULT_READ_TIMEOUT_S) -> None:
        self.model = model
        self.voice = voice
        self.instructions = instructions
        self.speed = speed
        self.base_url = base_url.rstrip("/")
        self._url = f"{self.base_url}/audio/speech"
        self._api_key = api_key
        self._client = c.http_client(read_timeout_s)

    def __repr__(self) -> str:
        return f"openai.TTS(model={self.model!r}, voice={self.voice!r}, base_url={self.base_url!r})"

    def request_body(self, text: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "input": text,
            "voice": {"id": self.voice} if self.voice.startswith("voice_") else self.voice,
            "response_format": "pcm",
        }
        if self.instructions and not self.model.startswith(_NO_INSTRUCTIONS):
            body["instructions"] = self.instructions
        if self.speed is not None:
            body["speed"] = self.speed
        return body

    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        for piece in c.split_for_limit(text, MAX_INPUT_CHARS):
            async for chunk in self._stream(piece):
                yield chunk

    async def _stream(self, text: str) -> AsyncIterator[bytes]:
        headers = {"Authorization": f"Bearer {self._api_key}"}
        resampler = StreamResampler(PCM_RATE, 8000)
        started = False
        carry = b""
        try:
            async with self._client.stream("POST", self._url, json=self.request_body(text),
                                           headers=headers) as response:
                if response.status_code != 200:
                    body = await response.aread()
                    raise c.status_error(_LABEL, response.status_code, body, self._api_key)
                async for data in response.aiter_bytes():
                    data = carry + data
                    cut = len(data) - len(data) % 2
                    carry = data[cut:]
                    out = resampler.feed(pcm16_bytes(data[:cut]))
                    if out.size:
                        started = True
                        yield pcm16_to_mulaw(out)
        except httpx.HTTPError as exc:
            raise c.network_error(_LABEL, exc, self._api_key, started=started) from None
        tail = resampler.feed(pcm16_bytes(b""), last=True)
        if tail.size:
            yield pcm16_to_mulaw(tail)

    async def aclose(self) -> None:
        await self._client.aclose()


def create(cfg: Mapping[str, Any]) -> TTS:
    key = c.api_key(cfg, PROVIDER_ID)
    model = c.opt_str(cfg, PROVIDER_ID, "model", "modelId") or DEFAULT_MODEL
    voice = c.opt_str(cfg, PROVIDER_ID, "voice", "voiceId") or DEFAULT_VOICE
    instructions = c.opt_str(cfg, PROVIDER_ID, "instructions")
    speed = c.opt_number(cfg, PROVIDER_ID, "speed", low=0.25, high=4.0)
    if instructions and model.startswith(_NO_INSTRUCTIONS):
        log.warning("tts.providers.openai.instructions is ignored by model %s", model)
    return TTS(key, model=model, voice=voice, instructions=instructions, speed=speed,
               base_url=c.base_url(cfg, PROVIDER_ID, DEFAULT_BASE_URL),
               read_timeout_s=c.read_timeout_s(cfg, PROVIDER_ID))
