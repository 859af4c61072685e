"""A fake xAI streaming STT endpoint (``/v1/stt``).

Behaviour (``ai-speech-apis.md`` §6b, §9; pipecat ``xai/stt.py``):

- auth: ``Authorization: Bearer <key>``; none -> HTTP 401; a wrong key ->
  HTTP 400 ``{"code": "Client specified an invalid argument", "error":
  "Incorrect API key provided: xa***yz. ..."}`` as xAI's REST API answers
  (the WebSocket status codes are not documented; see the report);
- configuration only in the query: ``sample_rate`` (required; 8000, 16000,
  22050, 24000, 44100, 48000), ``encoding`` (``pcm``, ``mulaw``, ``alaw``;
  default ``pcm``), ``language``, ``interim_results``, ``endpointing``
  (0-5000 ms; default 10 ms, "very low"), ``diarize``, ``multichannel``,
  ``channels``; anything else or a bad value -> HTTP 400;
- ``{"type":"transcript.created"}`` after ``ready_delay``; audio that arrives
  before it is counted in ``record.early_audio_bytes`` and ignored;
- binary audio decoded per encoding; per utterance: ``transcript.partial``
  interim results growing word by word (``is_final: false``), then one with
  ``is_final: true, speech_final: true`` after ``endpointing`` ms of silence;
- ``{"type":"audio.done"}`` -> flush, ``transcript.done`` with the whole
  text, close 1000; an unknown text message -> ``error`` event;
- fault injection: ``error_after_ms`` -> ``{"type":"error"}`` then close 1011.

``record.config`` is the parsed query.
"""

from __future__ import annotations

from typing import Any

from websockets.http11 import Request, Response

from voicecall.testing.fake_stt._server import (
    ConnRecord,
    FakeConn,
    FakeSttServer,
    SegEvent,
    Segmenter,
    decode_audio,
    json_response,
    mask_key,
)

__all__ = ["FakeXai"]

RATES = (8000, 16000, 22050, 24000, 44100, 48000)
ENCODINGS = {"pcm": "pcm16", "mulaw": "mulaw", "alaw": "alaw"}
PARAMS = ("sample_rate", "encoding", "language", "interim_results", "endpointing", "diarize",
          "multichannel", "channels")
BOOLS = ("interim_results", "diarize", "multichannel")
INVALID = "Client specified an invalid argument"
DEFAULT_ENDPOINTING_MS = 10


class _BadRequest(Exception):
    pass


def parse_query(query: dict[str, list[str]]) -> dict[str, Any]:
    cfg: dict[str, Any] = {}
    for name, values in query.items():
        if name not in PARAMS:
            raise _BadRequest(f"Unknown query parameter: {name}")
        if len(values) != 1:
            raise _BadRequest(f"Query parameter given more than once: {name}")
        value = values[0]
        if name in BOOLS:
            if value not in ("true", "false"):
                raise _BadRequest(f"Invalid value for {name}: {value!r} (expected true or false)")
            cfg[name] = value == "true"
        elif name in ("sample_rate", "endpointing", "channels"):
            if not value.isdigit():
                raise _BadRequest(f"Invalid value for {name}: {value!r} (expected an integer)")
            cfg[name] = int(value)
        else:
            cfg[name] = value
    if "sample_rate" not in cfg:
        raise _BadRequest("Missing required query parameter: sample_rate")
    if cfg["sample_rate"] not in RATES:
        raise _BadRequest(f"Unsupported sample_rate {cfg['sample_rate']}; supported: "
                          + ", ".join(map(str, RATES)))
    if cfg.setdefault("encoding", "pcm") not in ENCODINGS:
        raise _BadRequest(f"Unsupported encoding {cfg['encoding']!r}; supported: pcm, mulaw, "
                          "alaw")
    if not 0 <= cfg.get("endpointing", 0) <= 5000:
        raise _BadRequest("endpointing must be between 0 and 5000 ms")
    if cfg.get("multichannel") and cfg.get("channels", 1) < 2:
        raise _BadRequest("multichannel requires channels >= 2")
    if cfg.get("multichannel") or cfg.get("channels", 1) != 1:
        raise _BadRequest("fake: only one channel is supported by this fake")
    return cfg


class _Stream:
    def __init__(self, fake: FakeXai, conn: FakeConn, cfg: dict[str, Any]) -> None:
        self.fake = fake
        self.conn = conn
        self.rate = int(cfg["sample_rate"])
        self.encoding = ENCODINGS[cfg["encoding"]]
        self.interim = bool(cfg.get("interim_results", False))
        self.seg = Segmenter(self.rate, threshold=fake.rms_threshold,
                             end_silence_ms=cfg.get("endpointing", DEFAULT_ENDPOINTING_MS),
                             min_speech_ms=fake.min_speech_ms, word_ms=fake.word_ms)
        self.ready = False
        self.transcript = ""
        self.start_ms = 0.0
        self.shown = 0
        self.open = False
        self.finals: list[str] = []

    def partial(self, text: str, end_ms: float, *, final: bool) -> dict[str, Any]:
        words = text.split()
        span = max(end_ms - self.start_ms, 1.0) / max(len(words), 1)
        return {"type": "transcript.partial", "text": text, "is_final": final,
                "speech_final": final, "start": round(self.start_ms / 1000, 3),
                "duration": round((end_ms - self.start_ms) / 1000, 3),
                "words": [{"word": w, "start": round((self.start_ms + i * span) / 1000, 3),
                           "end": round((self.start_ms + (i + 1) * span) / 1000, 3)}
                          for i, w in enumerate(words)]}

    def on_audio(self, data: bytes) -> None:
        if not self.ready:
            self.conn.record.early_audio_bytes += len(data)
            return
        samples = decode_audio(self.encoding, data)
        if not self.conn.on_audio(len(data), len(samples) * 1000 / self.rate):
            return
        for ev in self.seg.feed(samples):
            self.on_seg(ev)

    def on_seg(self, ev: SegEvent) -> None:
        if ev.kind == "start":
            self.transcript = self.fake.next_transcript()
            self.start_ms = ev.at_ms
            self.shown = 0
            self.open = True
        elif ev.kind == "word" and self.interim and self.open:
            words = self.transcript.split()
            n = min(ev.words, len(words))
            if n > self.shown:
                self.shown = n
                self.conn.send(self.partial(" ".join(words[:n]), ev.at_ms, final=False))
        elif ev.kind == "end" and self.open:
            self.open = False
            self.finals.append(self.transcript)
            self.conn.send(self.partial(self.transcript, ev.at_ms, final=True),
                           self.fake.final_delay)

    def on_control(self, text: str) -> None:
        kind = self.conn.control(text)
        if kind == "audio.done":
            for ev in self.seg.flush():
                self.on_seg(ev)
            self.conn.send({"type": "transcript.done", "text": " ".join(self.finals),
                            "duration": round(self.seg.t_ms / 1000, 3)})
            self.conn.close(1000)
        else:
            self.conn.send({"type": "error", "message": f"Unknown message type: {kind!r}"
                            if kind else "Text messages must be JSON objects with a 'type'."})


class FakeXai(FakeSttServer):
    """``async with FakeXai(transcripts=[...]) as fake:`` serving ``fake.url``."""

    path = "/v1/stt"

    def check_handshake(self, request: Request, record: ConnRecord) -> Response | None:
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or not auth[7:].strip():
            return json_response(401, {"code": "Unauthenticated",
                                       "error": "No API key provided. Pass it as "
                                                "'Authorization: Bearer <key>'."})
        key = auth[7:].strip()
        if key != self.api_key:
            return json_response(400, {"code": INVALID,
                                       "error": f"Incorrect API key provided: {mask_key(key)}. "
                                                "You can obtain an API key from "
                                                "https://console.x.ai."})
        record.authorized = True
        try:
            record.config = parse_query(record.query)
        except _BadRequest as exc:
            return json_response(400, {"code": INVALID, "error": str(exc)})
        return None

    def inject_error(self, conn: FakeConn) -> None:
        conn.send({"type": "error", "message": "Internal error while transcribing."})
        conn.close(1011, "internal error")

    async def serve(self, conn: FakeConn) -> None:
        stream = _Stream(self, conn, conn.record.config)
        ws = conn.ws
        # Audio that arrives before transcript.created is not transcribed.
        conn.send({"type": "transcript.created"}, self.ready_delay)
        async for message in ws:
            # Ready once transcript.created has actually gone out.
            if not stream.ready and "transcript.created" in conn.record.sent_types():
                stream.ready = True
            if conn.closing:
                continue
            if isinstance(message, bytes):
                stream.on_audio(message)
            else:
                stream.on_control(message)
