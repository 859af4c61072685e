"""A fake OpenAI Realtime transcription endpoint (``/v1/realtime?intent=transcription``).

Behaviour modelled on the GA interface (``ai-speech-apis.md`` §1-§2, §9):

- auth: no ``Authorization: Bearer`` header -> HTTP 401 with an OpenAI error
  body; a wrong key -> the upgrade succeeds, then an ``error`` event
  (``invalid_api_key``, key echoed masked) and close ``3000``
  ``invalid_request_error.invalid_api_key``, as the live service does;
  an ``OpenAI-Beta`` header -> ``beta_api_shape_disabled`` and close ``4000``;
- ``session.created`` on connect (after ``ready_delay``), with the server
  defaults (PCM 24 kHz, server VAD 0.5/300/500);
- ``session.update`` validated strictly: ``session.type`` required and must be
  ``transcription`` (``realtime`` when ``?model=`` made it a conversation
  session); only ``type``/``audio``/``include``; only ``audio.input``; known
  formats, transcription models, VAD fields and ranges. A bad update gets an
  ``error`` event (``missing_required_parameter``, ``unknown_parameter``,
  ``invalid_value``, ``invalid_type``) that echoes the client's ``event_id``,
  and the session is left unchanged; a good one gets ``session.updated``;
- ``input_audio_buffer.append`` audio decoded per the session format; server
  VAD from audio energy (threshold scaled by the session's ``threshold``,
  turn end after ``silence_duration_ms``), emitting ``speech_started``,
  ``speech_stopped``, ``committed``, then transcription ``delta`` events word
  by word (after the commit, as ``gpt-4o-transcribe`` does; ``whisper-1``
  sends one delta) and ``completed`` with ``usage``;
- ``input_audio_buffer.commit`` (under 100 ms -> ``input_audio_buffer_commit_empty``)
  and ``.clear``;
- fault injection: ``error_after_ms`` sends a ``server_error`` event (the
  session stays up); ``close_after_ms`` closes/aborts.

``record.config`` is the session in force; ``record.messages`` holds every
client event except audio appends.
"""

from __future__ import annotations

import copy
import time
from typing import Any

from websockets.http11 import Response

from voicecall.testing.fake_stt._openai_wire import (
    CLIENT_EVENTS,
    INPUT_KEYS,
    OpenAIWireFake,
    WireSession,
    _check_keys,
    _Invalid,
    _need_object,
    _supported,
    check_format,
    check_noise_reduction,
    check_session_type,
    check_transcription_model,
    check_turn_detection,
)
from voicecall.testing.fake_stt._server import ConnRecord, FakeConn, SegEvent, json_response

__all__ = ["FakeOpenAITranscription"]

NO_VAD_MODELS = ("gpt-live-transcribe", "gpt-realtime-whisper")
SESSION_KEYS = ("type", "audio", "include")
TRANSCRIPTION_KEYS = ("model", "language", "prompt", "keywords", "languages", "delay")
SERVER_VAD_KEYS = ("type", "threshold", "prefix_padding_ms", "silence_duration_ms",
                   "idle_timeout_ms")
SEMANTIC_VAD_KEYS = ("type", "eagerness")
INCLUDE_VALUES = ("item.input_audio_transcription.logprobs",)


def validate_session(session: Any, expected_type: str) -> None:
    """Raise ``_Invalid`` the way the Realtime API words it."""
    s = check_session_type(session, expected_type)
    _check_keys(s, SESSION_KEYS, "session")
    include = s.get("include")
    if include is not None:
        if not isinstance(include, list) or any(v not in INCLUDE_VALUES for v in include):
            raise _Invalid("invalid_value", "Invalid value for 'session.include'. Supported "
                           f"values are: {_supported(INCLUDE_VALUES)}.", "session.include")
    if "audio" not in s:
        return
    audio = _need_object(s["audio"], "session.audio")
    _check_keys(audio, ("input",), "session.audio")
    if "input" not in audio:
        return
    inp = _need_object(audio["input"], "session.audio.input")
    _check_keys(inp, INPUT_KEYS, "session.audio.input")
    where = "session.audio.input"
    if "format" in inp:
        check_format(inp["format"], f"{where}.format")
    nr = inp.get("noise_reduction")
    if nr is not None:
        check_noise_reduction(nr, f"{where}.noise_reduction", strict=True)
    model: Any = None
    tr = inp.get("transcription")
    if tr is not None:
        tr = _need_object(tr, f"{where}.transcription")
        _check_keys(tr, TRANSCRIPTION_KEYS, f"{where}.transcription")
        model = check_transcription_model(tr, f"{where}.transcription")
        for key in ("language", "prompt"):
            if key in tr and not isinstance(tr[key], str):
                raise _Invalid("invalid_type", f"Invalid type for '{where}.transcription.{key}'"
                               ": expected a string.", f"{where}.transcription.{key}")
    td = inp.get("turn_detection", "absent")
    if td is None or td == "absent":
        return
    tw = f"{where}.turn_detection"
    check_turn_detection(td, tw, SERVER_VAD_KEYS, SEMANTIC_VAD_KEYS)
    if model in NO_VAD_MODELS:
        raise _Invalid("invalid_value", f"Turn detection is not supported with '{model}'; set "
                       "'turn_detection' to null and commit the buffer yourself.", tw)


def default_session(kind: str) -> dict[str, Any]:
    return {
        "type": kind,
        "id": f"sess_{int(time.time() * 1000):x}",
        "object": "realtime.transcription_session" if kind == "transcription"
        else "realtime.session",
        "expires_at": int(time.time()) + 3600,
        "audio": {"input": {
            "format": {"type": "audio/pcm", "rate": 24000},
            "noise_reduction": None,
            "transcription": None,
            "turn_detection": {"type": "server_vad", "threshold": 0.5,
                               "prefix_padding_ms": 300, "silence_duration_ms": 500},
        }},
        "include": None,
    }


class _Session(WireSession):
    """Protocol state of one connection."""

    fake: FakeOpenAITranscription

    def __init__(self, fake: FakeOpenAITranscription, conn: FakeConn, kind: str) -> None:
        super().__init__(fake, conn, default_session(kind))
        self.kind = kind
        self.item: str | None = None
        self.transcript = ""
        self.buffer_speech = False

    # -------------------------------------------------------- client events

    def on_message(self, msg: dict[str, Any]) -> None:
        kind = msg.get("type")
        eid = msg.get("event_id")
        if kind != "input_audio_buffer.append":
            self.conn.record.messages.append(msg)
        if kind == "session.update":
            self.update_session(msg, eid, lambda s: validate_session(s, self.kind))
        elif kind == "input_audio_buffer.append":
            self.on_append(msg, eid)
        elif kind == "input_audio_buffer.commit":
            self.on_commit(eid)
        elif kind == "input_audio_buffer.clear":
            self.buffer_ms, self.buffer_speech = 0.0, False
            self.seg = self._segmenter(self.seg.t_ms)
            self.event("input_audio_buffer.cleared")
        elif kind in CLIENT_EVENTS:
            self.error("invalid_value", f"'{kind}' is not supported in a transcription session.",
                       "type", eid)
        else:
            self.error("invalid_value", f"Invalid value: '{kind}'. Supported values are: "
                       f"{_supported(CLIENT_EVENTS)}.", "type", eid)

    def on_append(self, msg: dict[str, Any], eid: Any) -> None:
        samples = self.append(msg, eid)
        if samples is None:
            return
        td = self.audio_in.get("turn_detection")
        for ev in self.seg.feed(samples):
            if ev.kind == "start":
                self.buffer_speech = True
            if td:
                self.on_vad(ev)

    def on_vad(self, ev: SegEvent) -> None:
        if ev.kind == "start":
            self.item = self.conn.next_id("item")
            self.transcript = self.fake.next_transcript()
            td = self.audio_in.get("turn_detection") or {}
            padding = float(td.get("prefix_padding_ms", 300))
            self.event("input_audio_buffer.speech_started",
                       audio_start_ms=int(max(0.0, ev.at_ms - padding)), item_id=self.item)
        elif ev.kind == "end" and self.item is not None:
            self.event("input_audio_buffer.speech_stopped", audio_end_ms=int(self.seg.t_ms),
                       item_id=self.item)
            self.commit(self.item, self.transcript)
            self.item = None

    def on_commit(self, eid: Any) -> None:
        if self.commit_too_small(eid):
            return
        self.seg.flush()
        item = self.item or self.conn.next_id("item")
        transcript = self.transcript if self.item else \
            (self.fake.next_transcript() if self.buffer_speech else "")
        self.item = None
        self.commit(item, transcript)

    def commit(self, item: str, transcript: str) -> None:
        self.event("input_audio_buffer.committed", item_id=item,
                   previous_item_id=self.previous_item)
        self.previous_item = item
        audio_ms = self.buffer_ms
        self.buffer_ms, self.buffer_speech = 0.0, False
        tr = self.audio_in.get("transcription")
        if not tr:
            return          # transcription off: nothing more for this item
        model = tr.get("model", "")
        words = transcript.split()
        deltas = [transcript] if model == "whisper-1" or not words else \
            [w if i == 0 else f" {w}" for i, w in enumerate(words)]
        for i, delta in enumerate(deltas):
            self.event("conversation.item.input_audio_transcription.delta",
                       self.fake.final_delay if i == 0 else 0.0,
                       item_id=item, content_index=0, delta=delta)
        audio_tokens = max(1, int(audio_ms / 100))
        completed: dict[str, Any] = {
            "item_id": item, "content_index": 0, "transcript": transcript,
            "usage": {"type": "tokens", "input_tokens": audio_tokens,
                      "output_tokens": len(words), "total_tokens": audio_tokens + len(words),
                      "input_token_details": {"audio_tokens": audio_tokens, "text_tokens": 0}},
        }
        if INCLUDE_VALUES[0] in (self.session.get("include") or []):
            completed["logprobs"] = [{"token": w, "logprob": -0.02, "bytes": list(w.encode())}
                                     for w in words]
        self.event("conversation.item.input_audio_transcription.completed", **completed)


class FakeOpenAITranscription(OpenAIWireFake):
    """``async with FakeOpenAITranscription(transcripts=[...]) as fake:`` on ``fake.url``."""

    def check_query(self, record: ConnRecord) -> Response | None:
        if record.q("intent") is None and record.q("model") is None:
            return self.missing_model()
        if record.q("intent") not in (None, "transcription"):
            return json_response(400, {"error": {
                "message": f"Invalid value: '{record.q('intent')}'. Supported values are: "
                           "'transcription'.",
                "type": "invalid_request_error", "param": "intent", "code": "invalid_value"}})
        return None

    async def serve(self, conn: FakeConn) -> None:
        record = conn.record
        kind = "transcription" if record.q("intent") == "transcription" \
            and record.q("model") is None else "realtime"
        state = _Session(self, conn, kind)
        if not self.refused(state):
            state.event("session.created", self.ready_delay, session=copy.deepcopy(state.session))
        await self.read_events(state)
