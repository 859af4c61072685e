"""xAI streaming STT (``wss://api.x.ai/v1/stt``).

Wire protocol (see ``ai-speech-apis.md`` §6b; pipecat's ``xai/stt.py``):

- all configuration in the query: ``sample_rate=8000&encoding=mulaw
  &interim_results=true&endpointing=800[&language=en]``, with
  ``Authorization: Bearer <key>``; no setup message;
- the server says ``{"type":"transcript.created"}`` when it accepts audio;
  nothing is sent before that (audio is queued here until then);
- audio as raw **binary** frames (mu-law passes straight through; ``pcm`` is
  decoded and resampled to ``sampleRate``); ``{"type":"audio.done"}`` at the
  end, after which the server sends ``transcript.done`` and closes;
- ``transcript.partial`` with ``is_final: false`` -> ``partial``;
  ``is_final: true`` locks a chunk, ``speech_final: true`` ends the utterance
  -> ``final`` (locked chunks joined); ``error`` -> ``error``.
- xAI sends no explicit speech-started event: ``speech-start`` is emitted on
  the first non-empty transcript of each utterance (endpointing is the
  server's, so ``server_vad`` is declared, but speech-start comes with the
  first interim result rather than at the onset).

Config (``streaming.providers.xai``): ``apiKey`` (or ``XAI_API_KEY``),
``language``, ``encoding`` (``mulaw`` | ``pcm``), ``sampleRate`` (8000),
``endpointingMs`` (800), ``interimResults`` (true), ``baseUrl``
(``https://api.x.ai/v1``; ``/stt`` is appended) or a full ``endpoint``
(default ``wss://api.x.ai/v1/stt``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from voicecall.audio.g711 import SAMPLE_RATE
from voicecall.errors import ProviderError
from voicecall.speech.stt._ws import (
    CONNECT_TIMEOUT_S,
    DEFAULT_MAX_QUEUED_BYTES,
    READY_TIMEOUT_S,
    PcmEncoder,
    ProviderConfig,
    WsSttProvider,
    WsSttSession,
    check_encoding,
    joined,
    query_bool,
    ws_url,
)
from voicecall.speech.stt.base import SttCapabilities

__all__ = [
    "DEFAULT_ENCODING",
    "DEFAULT_ENDPOINTING_MS",
    "DEFAULT_SAMPLE_RATE",
    "DEFAULT_URL",
    "STT",
    "XaiSttSession",
    "create",
]

PROVIDER_ID = "xai"
ENV_KEYS = ("XAI_API_KEY",)
DEFAULT_URL = "wss://api.x.ai/v1/stt"
STT_PATH = "/v1/stt"
DEFAULT_ENCODING = "mulaw"
DEFAULT_SAMPLE_RATE = SAMPLE_RATE
DEFAULT_ENDPOINTING_MS = 800
ENCODINGS = ("mulaw", "pcm")
# The rates xAI accepts; pcm is resampled to them with soxr.
XAI_RATES = (8000, 16000, 22050, 24000, 44100, 48000)


class XaiSttSession(WsSttSession):
    provider = PROVIDER_ID

    def __init__(self, owner: STT, call_id: str) -> None:
        super().__init__(call_id=call_id, **owner.connection("Bearer"),
                         pcm=PcmEncoder(owner.sample_rate) if owner.encoding == "pcm" else None)
        self._segments: list[str] = []
        self._interim = ""
        self._in_utterance = False

    def finish_message(self) -> str:
        return json.dumps({"type": "audio.done"})

    def flush_pending(self) -> None:
        """Locked chunks still waiting for ``speech_final`` become a final."""
        if self._segments:
            text = joined(self._segments)
            self._segments.clear()
            self.emit("final", text)
        self._interim = ""
        self._in_utterance = False

    async def on_text(self, data: dict[str, Any]) -> None:
        kind = data.get("type")
        if kind == "transcript.created":
            await self.mark_ready()
        elif kind == "transcript.partial":
            self._on_partial(data)
        elif kind == "transcript.done":
            # The stream is over: whatever this utterance had is all it will get.
            # (``text`` here is the whole session's transcript, so it is not used.)
            if self._interim:
                self._segments.append(self._interim)
            self.flush_pending()
        elif kind == "error":
            message = data.get("message") or data.get("error") or "error"
            text = self.error_text(f"{self.provider}: {message}")
            if not self.ready:
                raise ProviderError(text)
            self.emit("error", text)

    def _on_partial(self, data: dict[str, Any]) -> None:
        text = data.get("text")
        text = text.strip() if isinstance(text, str) else ""
        if not text:
            return
        if not self._in_utterance:
            self._in_utterance = True
            self.emit("speech-start")
        confidence = data.get("confidence")
        self._interim = ""
        if data.get("is_final"):
            self._segments.append(text)
            if data.get("speech_final"):
                final = joined(self._segments)
                self._segments.clear()
                self._in_utterance = False
                self.emit("final", final,
                          float(confidence) if isinstance(confidence, int | float) else None)
            else:
                self.emit("partial", joined(self._segments))
        else:
            self._interim = text
            self.emit("partial", joined(self._segments, text))


class STT(WsSttProvider):
    """xAI streaming transcription (server endpointing, interim results)."""

    name = PROVIDER_ID

    def __init__(self, api_key: str, *, language: str | None = None,
                 encoding: str = DEFAULT_ENCODING, sample_rate: int = DEFAULT_SAMPLE_RATE,
                 endpointing_ms: int = DEFAULT_ENDPOINTING_MS, interim_results: bool = True,
                 url: str = DEFAULT_URL, connect_timeout: float = CONNECT_TIMEOUT_S,
                 ready_timeout: float = READY_TIMEOUT_S,
                 max_queued_bytes: int = DEFAULT_MAX_QUEUED_BYTES) -> None:
        super().__init__(api_key, url, connect_timeout=connect_timeout,
                         ready_timeout=ready_timeout, max_queued_bytes=max_queued_bytes)
        check_encoding(encoding, sample_rate, ENCODINGS, pcm="pcm")
        self.language = language
        self.encoding = encoding
        self.sample_rate = sample_rate
        self.endpointing_ms = endpointing_ms
        self.interim_results = interim_results
        self.url = ws_url(url, "", self.query())
        self.capabilities = SttCapabilities(interim_results=interim_results, server_vad=True)

    def query(self) -> list[tuple[str, str]]:
        q = [("sample_rate", str(self.sample_rate)), ("encoding", self.encoding),
             ("interim_results", query_bool(self.interim_results)),
             ("endpointing", str(self.endpointing_ms))]
        if self.language:
            q.append(("language", self.language))
        return q

    def __repr__(self) -> str:
        return f"<xai STT url={self.url!r}>"

    async def open(self, call_id: str) -> XaiSttSession:
        return XaiSttSession(self, call_id).start()


def create(cfg: Mapping[str, Any]) -> STT:
    """The provider from its raw ``streaming.providers.xai`` config."""
    pc = ProviderConfig(cfg, PROVIDER_ID)
    api_key = pc.api_key(ENV_KEYS)
    encoding = pc.get_choice("encoding", DEFAULT_ENCODING, ENCODINGS)
    sample_rate = pc.get_sample_rate(encoding, XAI_RATES, mulaw="mulaw", pcm="pcm")
    return STT(
        api_key,
        language=pc.get_str("language"),
        encoding=encoding,
        sample_rate=sample_rate,
        endpointing_ms=pc.get_int("endpointingMs", DEFAULT_ENDPOINTING_MS, minimum=0,
                                  maximum=5000),
        interim_results=pc.get_bool("interimResults", True),
        url=pc.url(DEFAULT_URL, STT_PATH, ()),
    )


if TYPE_CHECKING:      # ``create`` is a registry factory; ``STT`` satisfies the Protocol
    from voicecall.speech.registry import SttFactory

    _factory: SttFactory = create
