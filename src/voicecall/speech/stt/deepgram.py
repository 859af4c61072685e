"""Deepgram streaming STT (``/v1/listen``, Nova).

Wire protocol (see ``ai-speech-apis.md`` §4):

- ``wss://api.deepgram.com/v1/listen?model=nova-3&encoding=mulaw&sample_rate=8000
  &channels=1&interim_results=true&endpointing=800&utterance_end_ms=1000
  &vad_events=true&smart_format=true&punctuate=true[&language=..][&keyterm=..]``
  with ``Authorization: Token <key>``; all configuration is in the query;
- the socket is ready as soon as the upgrade succeeds; audio goes as raw
  **binary** frames (mu-law passes straight through; ``linear16`` is decoded
  and resampled to ``sampleRate``);
- text control frames: ``KeepAlive`` when no audio has been sent for a few
  seconds (the server drops a silent socket after 10 s), ``CloseStream`` on
  close (the server flushes, sends ``Metadata`` and closes normally);
- ``SpeechStarted`` -> ``speech-start``; ``Results`` with ``is_final: false``
  -> ``partial``; ``is_final: true`` segments are joined until
  ``speech_final: true`` (endpointing) or ``UtteranceEnd``, which give the
  ``final``. Empty transcripts (silence) are ignored.

Config (``streaming.providers.deepgram``): ``apiKey`` (or
``DEEPGRAM_API_KEY``), ``model`` (``nova-3``), ``language``, ``encoding``
(``mulaw`` | ``linear16``), ``sampleRate`` (8000), ``endpointingMs`` (800;
``false`` switches endpointing off), ``interimResults`` (true),
``utteranceEndMs`` (1000, only with interim results), ``smartFormat`` (true),
``punctuate`` (true), ``keyterms`` (Nova-3 key terms), ``baseUrl``
(``https://api.deepgram.com``) or a full ``endpoint``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from voicecall.audio.g711 import SAMPLE_RATE
from voicecall.audio.resample import RATES
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
    "DEFAULT_ENDPOINTING_MS",
    "DEFAULT_MODEL",
    "DEFAULT_URL",
    "DeepgramSttSession",
    "STT",
    "create",
]

PROVIDER_ID = "deepgram"
ENV_KEYS = ("DEEPGRAM_API_KEY",)
DEFAULT_BASE_URL = "https://api.deepgram.com"
LISTEN_PATH = "/v1/listen"
DEFAULT_URL = ws_url(DEFAULT_BASE_URL, LISTEN_PATH)
DEFAULT_MODEL = "nova-3"
DEFAULT_ENDPOINTING_MS = 800
DEFAULT_UTTERANCE_END_MS = 1000
ENCODINGS = ("mulaw", "linear16")
KEEPALIVE_S = 4.0           # Deepgram: every 3-5 s while no audio flows


class DeepgramSttSession(WsSttSession):
    provider = PROVIDER_ID
    ready_on_open = True

    def __init__(self, owner: STT, call_id: str) -> None:
        super().__init__(call_id=call_id, **owner.connection("Token"),
                         keepalive_s=owner.keepalive_s,
                         pcm=PcmEncoder(owner.sample_rate) if owner.encoding == "linear16"
                         else None)
        self._segments: list[str] = []
        self._confidences: list[float] = []
        # No endpointing and no UtteranceEnd: the server never marks a turn's end, so each
        # locked (is_final) segment is a final on its own.
        self._final_per_segment = owner.endpointing_ms is None and owner.utterance_end_ms is None

    def keepalive_message(self) -> str:
        return json.dumps({"type": "KeepAlive"})

    def finish_message(self) -> str:
        return json.dumps({"type": "CloseStream"})

    def flush_pending(self) -> None:
        if not self._segments:
            return
        text = joined(self._segments)
        confidence = sum(self._confidences) / len(self._confidences) \
            if self._confidences else None
        self._segments.clear()
        self._confidences.clear()
        self.emit("final", text, round(confidence, 4) if confidence is not None else None)

    async def on_text(self, data: dict[str, Any]) -> None:
        kind = data.get("type")
        if kind == "Results":
            self._on_results(data)
        elif kind == "SpeechStarted":
            self.emit("speech-start")
        elif kind == "UtteranceEnd":
            self.flush_pending()
        elif kind == "Error":
            message = data.get("description") or data.get("message") or "error"
            raise ProviderError(self.error_text(f"{self.provider}: {message}"), retryable=True)

    def _on_results(self, data: dict[str, Any]) -> None:
        channel = data.get("channel")
        alternatives = channel.get("alternatives") if isinstance(channel, dict) else None
        best = alternatives[0] if isinstance(alternatives, list) and alternatives else {}
        text = best.get("transcript") if isinstance(best, dict) else None
        text = text.strip() if isinstance(text, str) else ""
        confidence = best.get("confidence") if isinstance(best, dict) else None
        if data.get("is_final"):
            if text:
                self._segments.append(text)
                if isinstance(confidence, int | float):
                    self._confidences.append(float(confidence))
            if data.get("speech_final") or self._final_per_segment:
                self.flush_pending()
            elif text:
                self.emit("partial", joined(self._segments))
        elif text:
            self.emit("partial", joined(self._segments, text))


class STT(WsSttProvider):
    """Deepgram live transcription (server VAD events, interim results, endpointing)."""

    name = PROVIDER_ID

    def __init__(self, api_key: str, *, model: str = DEFAULT_MODEL, language: str | None = None,
                 encoding: str = "mulaw", sample_rate: int = SAMPLE_RATE,
                 endpointing_ms: int | None = DEFAULT_ENDPOINTING_MS,
                 interim_results: bool = True,
                 utterance_end_ms: int | None = DEFAULT_UTTERANCE_END_MS,
                 smart_format: bool = True, punctuate: bool = True,
                 keyterms: Sequence[str] = (), url: str = DEFAULT_URL,
                 connect_timeout: float = CONNECT_TIMEOUT_S,
                 ready_timeout: float = READY_TIMEOUT_S,
                 max_queued_bytes: int = DEFAULT_MAX_QUEUED_BYTES,
                 keepalive_s: float = KEEPALIVE_S) -> None:
        super().__init__(api_key, url, connect_timeout=connect_timeout,
                         ready_timeout=ready_timeout, max_queued_bytes=max_queued_bytes)
        check_encoding(encoding, sample_rate, ENCODINGS, pcm="linear16")
        self.model = model
        self.language = language
        self.encoding = encoding
        self.sample_rate = sample_rate
        self.endpointing_ms = endpointing_ms
        self.interim_results = interim_results
        # UtteranceEnd needs interim results; without them the parameter is left out.
        self.utterance_end_ms = utterance_end_ms if interim_results else None
        self.smart_format = smart_format
        self.punctuate = punctuate
        self.keyterms = list(keyterms)
        self.keepalive_s = keepalive_s
        self.url = ws_url(url, "", self.query())
        self.capabilities = SttCapabilities(interim_results=interim_results, server_vad=True)

    def query(self) -> list[tuple[str, str]]:
        q = [("model", self.model), ("encoding", self.encoding),
             ("sample_rate", str(self.sample_rate)), ("channels", "1"),
             ("interim_results", query_bool(self.interim_results)),
             ("endpointing", "false" if self.endpointing_ms is None
              else str(self.endpointing_ms))]
        if self.utterance_end_ms is not None:
            q.append(("utterance_end_ms", str(self.utterance_end_ms)))
        q += [("vad_events", "true"), ("smart_format", query_bool(self.smart_format)),
              ("punctuate", query_bool(self.punctuate))]
        if self.language:
            q.append(("language", self.language))
        q += [("keyterm", term) for term in self.keyterms]
        return q

    def __repr__(self) -> str:
        return f"<deepgram STT model={self.model!r} url={self.url!r}>"

    async def open(self, call_id: str) -> DeepgramSttSession:
        return DeepgramSttSession(self, call_id).start()


def create(cfg: Mapping[str, Any]) -> STT:
    """The provider from its raw ``streaming.providers.deepgram`` config."""
    pc = ProviderConfig(cfg, PROVIDER_ID)
    api_key = pc.api_key(ENV_KEYS)
    encoding = pc.get_choice("encoding", "mulaw", ENCODINGS)
    sample_rate = pc.get_sample_rate(encoding, RATES, mulaw="mulaw", pcm="linear16")
    endpointing: int | None
    if pc.raw("endpointingMs") is False:
        endpointing = None
    else:
        endpointing = pc.get_int("endpointingMs", DEFAULT_ENDPOINTING_MS, minimum=0,
                                 maximum=60_000)
    return STT(
        api_key,
        model=pc.get_str("model", DEFAULT_MODEL) or DEFAULT_MODEL,
        language=pc.get_str("language"),
        encoding=encoding,
        sample_rate=sample_rate,
        endpointing_ms=endpointing,
        interim_results=pc.get_bool("interimResults", True),
        utterance_end_ms=pc.get_int("utteranceEndMs", DEFAULT_UTTERANCE_END_MS,
                                    minimum=0, maximum=60_000),
        smart_format=pc.get_bool("smartFormat", True),
        punctuate=pc.get_bool("punctuate", True),
        keyterms=pc.get_str_list("keyterms"),
        url=pc.url(DEFAULT_BASE_URL, LISTEN_PATH, ()),
    )


if TYPE_CHECKING:      # ``create`` is a registry factory; ``STT`` satisfies the Protocol
    from voicecall.speech.registry import SttFactory

    _factory: SttFactory = create
