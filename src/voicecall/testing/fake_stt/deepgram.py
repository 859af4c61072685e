"""A fake Deepgram live transcription endpoint (``/v1/listen``).

Behaviour (``ai-speech-apis.md`` §4, §9):

- auth: ``Authorization: Token <key>`` (or ``Bearer <token>`` for one of
  ``access_tokens``); anything else -> HTTP 401 with Deepgram's error body
  (``err_code``/``err_msg``/``request_id``) and ``dg-error`` header;
- the query is validated against the SDK's parameter list and value types;
  unknown parameters, bad values, a raw encoding without ``sample_rate`` or
  ``utterance_end_ms`` without ``interim_results=true`` -> HTTP 400;
- audio is binary, decoded per ``encoding``/``sample_rate`` (mulaw, alaw,
  linear16); text frames are control messages: ``KeepAlive`` (counted),
  ``Finalize`` (flush, ``from_finalize: true``), ``CloseStream`` (flush,
  ``Metadata``, close 1000); an empty binary frame is the deprecated
  CloseStream; an unknown message -> an ``Error`` message and close 1008;
- per utterance: ``SpeechStarted`` (with ``vad_events=true``), interim
  ``Results`` growing word by word (with ``interim_results=true``), a final
  ``Results`` with ``is_final``/``speech_final`` after ``endpointing`` ms of
  silence (``speech_final: false`` when endpointing is off), ``UtteranceEnd``
  after ``utterance_end_ms`` of silence; an empty final ``Results`` for each
  second of silence outside speech, as the service does;
- no input for ``idle_timeout_s`` (10 s) -> close 1011 (NET-0001);
- fault injection: ``error_after_ms`` -> ``Error`` message then close 1011.

``record.config`` is the parsed query (one value per key; ``keyterm`` a list).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from voicecall.testing.fake_stt._server import (
    ConnRecord,
    FakeConn,
    FakeSttServer,
    SegEvent,
    Segmenter,
    decode_audio,
    json_response,
    new_request_id,
)

__all__ = ["FakeDeepgram"]

PARAMS = ("callback", "callback_method", "channels", "detect_entities", "diarize",
          "diarize_model", "dictation", "encoding", "endpointing", "extra", "interim_results",
          "keyterm", "keywords", "language", "mip_opt_out", "model", "multichannel", "numerals",
          "profanity_filter", "punctuate", "redact", "replace", "sample_rate", "search",
          "smart_format", "tag", "utterance_end_ms", "vad_events", "version")
REPEATABLE = ("keyterm", "keywords", "redact", "replace", "search", "tag", "extra")
BOOLS = ("detect_entities", "diarize", "dictation", "interim_results", "mip_opt_out",
         "multichannel", "numerals", "profanity_filter", "punctuate", "smart_format",
         "vad_events")
ENCODINGS = ("linear16", "linear32", "flac", "alaw", "mulaw", "amr-nb", "amr-wb", "opus",
             "ogg-opus", "speex", "g729")
RAW_ENCODINGS = ("linear16", "linear32", "alaw", "mulaw", "amr-nb", "amr-wb", "speex", "g729")
DECODABLE = {"mulaw": "mulaw", "alaw": "alaw", "linear16": "pcm16"}
NET0001 = "Deepgram did not receive audio data or a text message within the timeout window. " \
          "See https://dpgr.am/net0001"
MODEL_UUID = "1b1e6a2b-5f1c-4c2d-9a34-0123456789ab"


class _BadRequest(Exception):
    pass


def parse_query(query: dict[str, list[str]]) -> dict[str, Any]:
    """Deepgram's checks on ``/v1/listen`` parameters; ``_BadRequest`` when they fail."""
    cfg: dict[str, Any] = {}
    for name, values in query.items():
        if name not in PARAMS:
            raise _BadRequest(f"Unknown query parameter '{name}'.")
        if name in REPEATABLE:
            cfg[name] = list(values)
            continue
        if len(values) != 1:
            raise _BadRequest(f"Query parameter '{name}' given more than once.")
        value = values[0]
        if name in BOOLS:
            if value not in ("true", "false"):
                raise _BadRequest(f"Invalid value for '{name}': expected true or false, got "
                                  f"'{value}'.")
            cfg[name] = value == "true"
        elif name in ("sample_rate", "channels", "utterance_end_ms"):
            if not value.isdigit() or int(value) <= 0:
                raise _BadRequest(f"Invalid value for '{name}': expected a positive integer, "
                                  f"got '{value}'.")
            cfg[name] = int(value)
        elif name == "endpointing":
            if value == "false":
                cfg[name] = False
            elif value.isdigit():
                cfg[name] = int(value)
            else:
                raise _BadRequest(f"Invalid value for 'endpointing': expected an integer or "
                                  f"false, got '{value}'.")
        elif name == "encoding":
            if value not in ENCODINGS:
                raise _BadRequest(f"Invalid encoding '{value}'.")
            cfg[name] = value
        else:
            if not value:
                raise _BadRequest(f"Empty value for '{name}'.")
            cfg[name] = value
    encoding = cfg.get("encoding")
    if encoding in RAW_ENCODINGS and "sample_rate" not in cfg:
        raise _BadRequest(f"Raw audio encoding '{encoding}' requires 'sample_rate'.")
    if "utterance_end_ms" in cfg and not cfg.get("interim_results"):
        raise _BadRequest("'utterance_end_ms' requires 'interim_results=true'.")
    if encoding is not None and encoding not in DECODABLE:
        raise _BadRequest(f"fake: encoding '{encoding}' is not supported by this fake.")
    if cfg.get("channels", 1) != 1:
        raise _BadRequest("fake: only channels=1 is supported by this fake.")
    return cfg


class _Stream:
    """Protocol state of one connection."""

    def __init__(self, fake: FakeDeepgram, conn: FakeConn, cfg: dict[str, Any]) -> None:
        self.fake = fake
        self.conn = conn
        self.cfg = cfg
        self.request_id = new_request_id()
        self.encoding = DECODABLE.get(cfg.get("encoding", "linear16"), "pcm16")
        self.rate = int(cfg.get("sample_rate", 16000))
        endpointing = cfg.get("endpointing", 10)
        self.endpointing: int | None = None if endpointing is False else int(endpointing)
        self.interim = bool(cfg.get("interim_results", False))
        self.utterance_end: int | None = cfg.get("utterance_end_ms")
        end_silence = self.endpointing if self.endpointing is not None else \
            (self.utterance_end or 1000)
        self.seg = Segmenter(self.rate, threshold=fake.rms_threshold, end_silence_ms=end_silence,
                             gap_ms=self.utterance_end, min_speech_ms=fake.min_speech_ms,
                             word_ms=fake.word_ms)
        self.transcript = ""
        self.utt_start_ms = 0.0
        self.shown = 0
        self.finalized = True
        self.last_result_ms = 0.0

    def results(self, text: str, start_ms: float, end_ms: float, *, is_final: bool,
                speech_final: bool, from_finalize: bool = False) -> dict[str, Any]:
        words = text.split()
        span = max(end_ms - start_ms, 1.0) / max(len(words), 1)
        self.last_result_ms = self.seg.t_ms
        return {
            "type": "Results", "channel_index": [0, 1],
            "duration": round((end_ms - start_ms) / 1000, 3), "start": round(start_ms / 1000, 3),
            "is_final": is_final, "speech_final": speech_final, "from_finalize": from_finalize,
            "channel": {"alternatives": [{
                "transcript": text, "confidence": self.fake.confidence if words else 0.0,
                "words": [{"word": w.strip(".,?!").lower(),
                           "start": round((start_ms + i * span) / 1000, 3),
                           "end": round((start_ms + (i + 1) * span) / 1000, 3),
                           "confidence": self.fake.confidence, "punctuated_word": w}
                          for i, w in enumerate(words)],
            }]},
            "metadata": {"request_id": self.request_id,
                         "model_info": {"name": f"general-{self.cfg.get('model', 'nova-3')}",
                                        "version": "2026-01-01.0",
                                        "arch": self.cfg.get("model", "nova-3")},
                         "model_uuid": MODEL_UUID},
        }

    def on_audio(self, data: bytes) -> None:
        samples = decode_audio(self.encoding, data)
        if not self.conn.on_audio(len(data), len(samples) * 1000 / self.rate):
            return
        for ev in self.seg.feed(samples):
            self.on_seg(ev)
        if self.seg.state == "idle" and self.seg.t_ms - self.last_result_ms >= 1000:
            start = self.last_result_ms
            self.conn.send(self.results("", start, self.seg.t_ms, is_final=True,
                                        speech_final=False))

    def on_seg(self, ev: SegEvent) -> None:
        if ev.kind == "start":
            self.transcript = self.fake.next_transcript()
            self.utt_start_ms = ev.at_ms
            self.shown = 0
            self.finalized = False
            if self.cfg.get("vad_events"):
                self.conn.send({"type": "SpeechStarted", "channel": [0],
                                "timestamp": round(ev.at_ms / 1000, 3)})
        elif ev.kind == "word" and self.interim and not self.finalized:
            words = self.transcript.split()
            n = min(ev.words, len(words))
            if n > self.shown:
                self.shown = n
                self.conn.send(self.results(" ".join(words[:n]), self.utt_start_ms, ev.at_ms,
                                            is_final=False, speech_final=False))
        elif ev.kind == "end":
            self.finalize(ev.at_ms, speech_final=self.endpointing is not None)
        elif ev.kind == "gap" and self.interim:
            self.conn.send({"type": "UtteranceEnd", "channel": [0, 1],
                            "last_word_end": round(ev.at_ms / 1000, 3)})

    def finalize(self, end_ms: float, *, speech_final: bool, from_finalize: bool = False) -> None:
        if self.finalized:
            return
        self.finalized = True
        self.conn.send(self.results(self.transcript, self.utt_start_ms, end_ms, is_final=True,
                                    speech_final=speech_final, from_finalize=from_finalize),
                       self.fake.final_delay)

    def flush(self, *, from_finalize: bool) -> None:
        for ev in self.seg.flush():
            self.finalize(ev.at_ms, speech_final=False, from_finalize=from_finalize)

    def metadata(self) -> dict[str, Any]:
        return {"type": "Metadata", "transaction_key": "deprecated",
                "request_id": self.request_id, "sha256": "0" * 64,
                "created": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
                "duration": round(self.seg.t_ms / 1000, 3), "channels": 1,
                "models": [MODEL_UUID],
                "model_info": {MODEL_UUID: {"name": f"general-{self.cfg.get('model', 'nova-3')}",
                                            "version": "2026-01-01.0",
                                            "arch": self.cfg.get("model", "nova-3")}}}

    def close_stream(self) -> None:
        self.flush(from_finalize=False)
        self.conn.send(self.metadata())
        self.conn.close(1000)

    def on_control(self, text: str) -> None:
        kind = self.conn.control(text)
        if kind == "KeepAlive":
            self.conn.record.keepalives += 1
        elif kind == "Finalize":
            self.flush(from_finalize=True)
        elif kind == "CloseStream":
            self.close_stream()
        else:
            self.conn.send({"type": "Error", "variant": "InvalidMessage",
                            "description": "Failed to parse the text message.",
                            "message": f"Unknown message type: {kind!r}" if kind
                            else "Text messages must be JSON objects with a 'type'."})
            self.conn.close(1008, "DATA-0000")


class FakeDeepgram(FakeSttServer):
    """``async with FakeDeepgram(transcripts=[...]) as fake:`` serving ``fake.url``.

    Extra knobs: ``idle_timeout_s`` (10 s, then close 1011), ``confidence``,
    ``access_tokens`` (accepted as ``Authorization: Bearer``).
    """

    path = "/v1/listen"

    def __init__(self, transcripts: Sequence[str] = (), *, idle_timeout_s: float = 10.0,
                 confidence: float = 0.97, access_tokens: Sequence[str] = (),
                 **kwargs: Any) -> None:
        super().__init__(transcripts, **kwargs)
        self.idle_timeout_s = idle_timeout_s
        self.confidence = confidence
        self.access_tokens = tuple(access_tokens)

    def _error(self, status: int, code: str, message: str) -> Response:
        rid = new_request_id()
        return json_response(status, {"err_code": code, "err_msg": message, "request_id": rid},
                             [("dg-error", message), ("dg-request-id", rid)])

    def check_handshake(self, request: Request, record: ConnRecord) -> Response | None:
        auth = request.headers.get("Authorization", "")
        scheme, _, credential = auth.partition(" ")
        ok = (scheme == "Token" and credential == self.api_key) or \
            (scheme == "Bearer" and credential in self.access_tokens)
        if not ok:
            return self._error(401, "INVALID_AUTH", "Invalid credentials.")
        record.authorized = True
        try:
            record.config = parse_query(record.query)
        except _BadRequest as exc:
            return self._error(400, "Bad Request", str(exc))
        return None

    def inject_error(self, conn: FakeConn) -> None:
        conn.send({"type": "Error", "variant": "InternalError",
                   "description": "The server encountered an internal error.",
                   "message": "Internal server error"})
        conn.close(1011, "NET-0000")

    async def serve(self, conn: FakeConn) -> None:
        stream = _Stream(self, conn, conn.record.config)
        ws = conn.ws
        while True:
            try:
                message = await asyncio.wait_for(ws.recv(), self.idle_timeout_s)
            except TimeoutError:
                conn.close(1011, NET0001[:120])
                return
            except ConnectionClosed:
                return
            if conn.closing:
                continue
            if isinstance(message, bytes):
                if not message:
                    stream.close_stream()
                else:
                    stream.on_audio(message)
            else:
                stream.on_control(message)
