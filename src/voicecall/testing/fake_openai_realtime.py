"""A fake OpenAI Realtime speech-to-speech endpoint (GA interface, ``/v1/realtime?model=``).

A real ``websockets`` server on ``127.0.0.1:0`` modelled on ``ai-speech-apis.md``
§1 and the §9 checklist::

    async with FakeOpenAIRealtime(script=[Speech("Hi there", ms=600)]) as fake:
        provider = openai.create({"apiKey": fake.api_key, "baseUrl": fake.base_url})
        ...
        assert fake.last.config["audio"]["input"]["format"] == {"type": "audio/pcmu"}

Behaviour:

- auth: no ``Authorization: Bearer`` -> HTTP 401 with an OpenAI error body;
  a wrong key -> the upgrade succeeds, then ``error`` ``invalid_api_key``
  (key echoed masked) and close ``3000``; an ``OpenAI-Beta`` header is
  recorded and (``reject_beta``, the default, as the live service since May
  2026) answered with ``beta_api_shape_disabled`` and close ``4000``;
  ``?model=`` is required (HTTP 400 without it);
- ``session.created`` on connect (after ``ready_delay``) with the server
  defaults (PCM 24 kHz both ways, voice ``alloy``, server VAD 0.5/300/500);
- ``session.update`` validated strictly against the GA shape:
  ``session.type`` required and ``realtime``; beta flat fields
  (``voice``, ``input_audio_format``, ``turn_detection``, ``modalities``...)
  are unknown parameters; nested ``audio.input`` (format, noise_reduction,
  transcription, turn_detection) and ``audio.output`` (format, voice,
  speed); flat function tools (a Chat-Completions ``function: {...}``
  nesting is refused); a bad update gets an ``error`` event echoing the
  client's ``event_id`` and changes nothing;
- ``input_audio_buffer.append`` decoded per the input format; server VAD
  from audio energy (``Segmenter``: threshold scaled by the session's
  ``threshold``, turn end after ``silence_duration_ms``), emitting
  ``speech_started`` / ``speech_stopped`` / ``committed`` /
  ``conversation.item.added`` + ``done`` / input transcription (when on) and,
  with ``create_response``, a response;
- the scripted "model": each response says the next ``script`` item
  (``Speech``: a tone burst of ``ms`` streamed as ``response.output_audio.delta``
  of ``chunk_ms`` each in the session's output format, ``pace_s`` apart, with
  the transcript word by word; ``FunctionCall``: a ``function_call`` item and
  ``response.function_call_arguments.done``; its ``function_call_output`` plus
  ``response.create`` gets the call's ``then`` speech, or "Result: <output>";
  an interim output (JSON ``status: "working"``) gets ``CHECKING`` instead, and
  the call's final result may then come as a ``message`` item quoting the
  ``call_id``: recorded in ``continued_results``, the next response says
  ``then`` or "Result: <the message after its first line>"; a second
  ``function_call_output`` for a ``call_id`` is an error, as on the service).
  A ``response.create`` whose instructions quote a text (greeting, ``say``)
  speaks the last quoted text instead. ``legacy_names`` uses the beta event
  names (``response.audio.delta``...) to test clients accept both;
- barge-in: caller speech during a response emits ``speech_started`` and,
  with ``interrupt_response``, cancels it (``response.done`` ``cancelled`` /
  ``turn_detected``); ``conversation.item.truncate`` is recorded in
  ``truncations`` and validated (assistant message, ``content_index`` 0,
  ``audio_end_ms`` not past the audio generated) -> ``conversation.item.truncated``
  or an ``error``;
- ``response.create`` while a response runs -> ``conversation_already_has_active_response``;
  ``response.cancel`` with none -> ``response_cancel_not_active``;
- session expiry: ``session_expiry_s`` after connecting (or ``expire()``) ->
  ``error`` ``session_expired`` and close ``1001``;
- fault injection from the STT fake base: ``connect_delay``, ``event_delay``,
  ``reject_status``, ``close_after_ms`` (of caller audio; ``close_code=None``
  drops TCP), ``error_after_ms`` (a ``server_error`` event).

Records: ``connections`` (``ConnRecord`` per attempt: ``headers``, ``query``,
``config`` = the session in force, ``messages`` = client events except audio,
``sent`` = server events), ``truncations``, ``tool_outputs``,
``continued_results``, ``replies``, ``interruptions``, ``responses_requested``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import itertools
import json
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from websockets.http11 import Response

from voicecall.audio.g711 import pcm16_to_alaw, pcm16_to_mulaw
from voicecall.testing.fake_stt._openai_wire import (
    CLIENT_EVENTS,
    INPUT_KEYS,
    OpenAIWireFake,
    WireSession,
    _check_keys,
    _Invalid,
    _need_object,
    _number,
    _supported,
    check_format,
    check_noise_reduction,
    check_session_type,
    check_transcription_model,
    check_turn_detection,
)
from voicecall.testing.fake_stt._openai_wire import codec as _codec
from voicecall.testing.fake_stt._server import DEFAULT_API_KEY, ConnRecord, FakeConn, SegEvent

__all__ = [
    "CHECKING",
    "DEFAULT_API_KEY",
    "FakeOpenAIRealtime",
    "FunctionCall",
    "ScriptItem",
    "Speech",
    "last_quoted",
    "tone_pcm",
    "word_schedule",
]

# --------------------------------------------------------------------------- script


@dataclass(frozen=True)
class Speech:
    """The model says ``text``: a tone burst of ``ms`` milliseconds at ``freq`` Hz."""

    text: str
    ms: int = 600
    freq: float = 330.0


@dataclass(frozen=True)
class FunctionCall:
    """The model calls ``name`` with ``arguments``; after the result it says ``then``.

    ``then`` None: it says "Result: <the tool output>".
    """

    name: str
    arguments: Mapping[str, Any] = field(default_factory=dict)
    then: Speech | None = None


ScriptItem = Speech | FunctionCall
DEFAULT_REPLY = Speech("Okay.", ms=300)
CHECKING = "Let me check on that."      # what the "model" says to an interim tool output
_QUOTED = re.compile(r"\"([^\"]+)\"")


def last_quoted(text: str) -> str | None:
    """The last double-quoted text in ``text`` (what a greeting / ``say`` asks to speak)."""
    found = _QUOTED.findall(text or "")
    return found[-1] if found else None


def is_interim(output: Any) -> bool:
    """A tool output that only says the work is still going on (``status: "working"``)."""
    if isinstance(output, str):
        try:
            output = json.loads(output)
        except ValueError:
            return False
    return isinstance(output, dict) and output.get("status") == "working"


def spoken_result(call: FunctionCall, output: Any) -> Speech:
    """What the "model" says once a tool output arrived."""
    if is_interim(output):
        return Speech(CHECKING, ms=300)
    text = output if isinstance(output, str) else json.dumps(output)
    return call.then or Speech(f"Result: {text}")


def tone_pcm(ms: int, rate: int, freq: float = 330.0, level: float = 0.3) -> npt.NDArray[np.int16]:
    """``ms`` of a sine at ``freq`` as PCM16 at ``rate``."""
    t = np.arange(rate * ms // 1000) / rate
    return (np.sin(2 * np.pi * freq * t) * level * 32767).astype(np.int16)


def word_schedule(text: str, chunks: int) -> list[list[str]]:
    """The transcript deltas to send with each of ``chunks`` audio chunks."""
    words = text.split()
    out: list[list[str]] = [[] for _ in range(max(1, chunks))]
    for i, word in enumerate(words):
        out[min(len(out) - 1, i * len(out) // max(1, len(words)))].append(
            word if i == 0 else f" {word}")
    return out


# --------------------------------------------------------------------------- validation

VOICES = ("alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar")
SESSION_KEYS = ("type", "model", "instructions", "output_modalities", "audio", "tools",
                "tool_choice", "max_output_tokens", "truncation", "include", "tracing", "prompt")
OUTPUT_KEYS = ("format", "voice", "speed")
SERVER_VAD_KEYS = ("type", "threshold", "prefix_padding_ms", "silence_duration_ms",
                   "create_response", "interrupt_response", "idle_timeout_ms")
SEMANTIC_VAD_KEYS = ("type", "eagerness", "create_response", "interrupt_response")
TOOL_KEYS = ("type", "name", "description", "parameters")
RESPONSE_KEYS = ("instructions", "tools", "tool_choice", "output_modalities", "audio",
                 "max_output_tokens", "metadata", "conversation", "input")


def _bool(obj: dict[str, Any], key: str, where: str) -> None:
    if key in obj and not isinstance(obj[key], bool):
        raise _Invalid("invalid_type", f"Invalid type for '{where}.{key}': expected a boolean.",
                       f"{where}.{key}")


def _turn_detection(td: Any, where: str) -> None:
    if td is None:
        return
    vad = check_turn_detection(td, where, SERVER_VAD_KEYS, SEMANTIC_VAD_KEYS)
    _bool(vad, "create_response", where)
    _bool(vad, "interrupt_response", where)


def _tools(value: Any) -> None:
    if not isinstance(value, list):
        raise _Invalid("invalid_type", "Invalid type for 'session.tools': expected an array.",
                       "session.tools")
    for i, tool in enumerate(value):
        where = f"session.tools[{i}]"
        tool = _need_object(tool, where)
        _check_keys(tool, TOOL_KEYS, where)
        if tool.get("type") != "function":
            raise _Invalid("invalid_value", f"Invalid value: '{tool.get('type')}'. Supported "
                           "values are: 'function' and 'mcp'.", f"{where}.type")
        if not isinstance(tool.get("name"), str) or not tool["name"]:
            raise _Invalid("missing_required_parameter", f"Missing required parameter: "
                           f"'{where}.name'.", f"{where}.name")
        params = tool.get("parameters")
        if params is not None:
            params = _need_object(params, f"{where}.parameters")
            if params.get("type") != "object":
                raise _Invalid("invalid_value", f"Invalid schema for function "
                               f"'{tool['name']}': schema must be a JSON Schema of 'type: "
                               "\"object\"'.", f"{where}.parameters")


def validate_realtime_session(session: Any, model: str | None) -> None:
    """Raise ``_Invalid`` the way the Realtime API words it."""
    s = check_session_type(session, "realtime")
    _check_keys(s, SESSION_KEYS, "session")
    if "model" in s and s["model"] != model:
        raise _Invalid("invalid_value", "Cannot update a session's model.", "session.model")
    if "instructions" in s and not isinstance(s["instructions"], str):
        raise _Invalid("invalid_type", "Invalid type for 'session.instructions': expected a "
                       "string.", "session.instructions")
    mods = s.get("output_modalities")
    if mods is not None and mods not in (["audio"], ["text"]):
        raise _Invalid("invalid_value", "Invalid 'session.output_modalities': supported values "
                       "are ['audio'] and ['text'].", "session.output_modalities")
    if "tools" in s:
        _tools(s["tools"])
    choice = s.get("tool_choice")
    if choice is not None and choice not in ("auto", "none", "required") \
            and not isinstance(choice, dict):
        raise _Invalid("invalid_value", f"Invalid value: '{choice}'. Supported values are: "
                       "'auto', 'none', and 'required'.", "session.tool_choice")
    if "audio" not in s:
        return
    audio = _need_object(s["audio"], "session.audio")
    _check_keys(audio, ("input", "output"), "session.audio")
    if "input" in audio:
        where = "session.audio.input"
        inp = _need_object(audio["input"], where)
        _check_keys(inp, INPUT_KEYS, where)
        if "format" in inp:
            check_format(inp["format"], f"{where}.format")
        nr = inp.get("noise_reduction")
        if nr is not None:
            check_noise_reduction(nr, f"{where}.noise_reduction", strict=False)
        tr = inp.get("transcription")
        if tr is not None:
            check_transcription_model(_need_object(tr, f"{where}.transcription"),
                                      f"{where}.transcription")
        if "turn_detection" in inp:
            _turn_detection(inp["turn_detection"], f"{where}.turn_detection")
    if "output" in audio:
        where = "session.audio.output"
        out = _need_object(audio["output"], where)
        _check_keys(out, OUTPUT_KEYS, where)
        if "format" in out:
            check_format(out["format"], f"{where}.format")
        voice = out.get("voice")
        if voice is not None and voice not in VOICES and not isinstance(voice, dict):
            raise _Invalid("invalid_value", f"Invalid value: '{voice}'. Supported values are: "
                           f"{_supported(VOICES)}.", f"{where}.voice")
        _number(out, "speed", where, 0.25, 1.5)


def default_session(model: str | None) -> dict[str, Any]:
    return {
        "type": "realtime",
        "object": "realtime.session",
        "id": f"sess_{int(time.time() * 1000):x}",
        "model": model,
        "expires_at": int(time.time()) + 3600,
        "instructions": "You are a helpful assistant.",
        "output_modalities": ["audio"],
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": 24000},
                "noise_reduction": None,
                "transcription": None,
                "turn_detection": {"type": "server_vad", "threshold": 0.5,
                                   "prefix_padding_ms": 300, "silence_duration_ms": 500,
                                   "create_response": True, "interrupt_response": True,
                                   "idle_timeout_ms": None},
            },
            "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "alloy",
                       "speed": 1.0},
        },
        "tools": [],
        "tool_choice": "auto",
        "max_output_tokens": "inf",
        "truncation": "auto",
        "include": None,
    }


def encode_pcm(samples: npt.NDArray[np.int16], codec: str) -> bytes:
    if codec == "mulaw":
        return pcm16_to_mulaw(samples)
    if codec == "alaw":
        return pcm16_to_alaw(samples)
    return samples.astype("<i2").tobytes()


# --------------------------------------------------------------------------- session


@dataclass
class _Item:
    id: str
    kind: str                 # "message" / "function_call" / "function_call_output"
    role: str | None = None
    audio_ms: float = 0.0
    transcript: str = ""
    call_id: str | None = None


class _Session(WireSession):
    """Protocol state of one connection (OpenAI sessions cannot be resumed)."""

    fake: FakeOpenAIRealtime

    def __init__(self, fake: FakeOpenAIRealtime, conn: FakeConn, model: str | None) -> None:
        super().__init__(fake, conn, default_session(model))
        self.model = model
        self.user_item: str | None = None
        self.user_transcript = ""
        self.items: dict[str, _Item] = {}
        self.response_task: asyncio.Task[None] | None = None
        self.response_id: str | None = None
        self.current_item: _Item | None = None
        self.open_calls: dict[str, FunctionCall] = {}
        self.answered: list[tuple[FunctionCall, str]] = []
        self.continued: dict[str, FunctionCall] = {}    # interim output in, final due
        self.tasks: set[asyncio.Task[None]] = set()

    # -------------------------------------------------------- helpers

    @property
    def audio_out(self) -> dict[str, Any]:
        value: dict[str, Any] = self.session["audio"]["output"]
        return value

    @property
    def active(self) -> bool:
        return self.response_task is not None and not self.response_task.done()

    def name(self, ga: str) -> str:
        """``ga`` as sent: the beta name when the fake plays an old server."""
        if not self.fake.legacy_names:
            return ga
        return ga.replace("response.output_audio_transcript", "response.audio_transcript") \
            .replace("response.output_audio", "response.audio")

    def spawn(self, coro: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def shutdown(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        for task in list(self.tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # -------------------------------------------------------- client events

    def on_message(self, msg: dict[str, Any]) -> None:
        kind = msg.get("type")
        eid = msg.get("event_id")
        if kind != "input_audio_buffer.append":
            self.conn.record.messages.append(msg)
        if kind == "session.update":
            self.update_session(msg, eid, lambda s: validate_realtime_session(s, self.model),
                                self.fake.ready_delay)
        elif kind == "input_audio_buffer.append":
            self.on_append(msg, eid)
        elif kind == "input_audio_buffer.commit":
            self.on_commit(eid)
        elif kind == "input_audio_buffer.clear":
            self.buffer_ms = 0.0
            self.seg = self._segmenter(self.seg.t_ms)
            self.event("input_audio_buffer.cleared")
        elif kind == "conversation.item.create":
            self.on_item_create(msg, eid)
        elif kind == "conversation.item.truncate":
            self.on_truncate(msg, eid)
        elif kind == "response.create":
            self.on_response_create(msg, eid)
        elif kind == "response.cancel":
            if self.active:
                self.cancel("client_cancelled")
            else:
                self.error("response_cancel_not_active", "Cancellation failed: no active "
                           "response found", None, eid)
        elif kind in ("conversation.item.retrieve", "conversation.item.delete"):
            item = self.items.get(str(msg.get("item_id")))
            if item is None:
                self.error("item_retrieve_invalid_item_id", f"Item with item_id "
                           f"'{msg.get('item_id')}' not found.", "item_id", eid)
            elif kind.endswith("delete"):
                del self.items[item.id]
                self.event("conversation.item.deleted", item_id=item.id)
            else:
                self.event("conversation.item.retrieved", item=self.item_json(item))
        elif kind in CLIENT_EVENTS:
            self.error("invalid_value", f"'{kind}' is only supported for WebRTC and SIP "
                       "sessions.", "type", eid)
        else:
            self.error("invalid_value", f"Invalid value: '{kind}'. Supported values are: "
                       f"{_supported(CLIENT_EVENTS)}.", "type", eid)

    def on_append(self, msg: dict[str, Any], eid: Any) -> None:
        samples = self.append(msg, eid)
        if samples is None or not self.audio_in.get("turn_detection"):
            return
        for ev in self.seg.feed(samples):
            self.on_vad(ev)

    def on_vad(self, ev: SegEvent) -> None:
        td = self.audio_in.get("turn_detection") or {}
        if ev.kind == "start":
            self.user_item = self.conn.next_id("item")
            self.user_transcript = self.fake.next_transcript()
            padding = float(td.get("prefix_padding_ms", 300))
            self.event("input_audio_buffer.speech_started",
                       audio_start_ms=int(max(0.0, ev.at_ms - padding)), item_id=self.user_item)
            if self.active:
                self.fake.interruptions += 1
                if td.get("interrupt_response", True):
                    self.cancel("turn_detected")
        elif ev.kind == "end" and self.user_item is not None:
            self.event("input_audio_buffer.speech_stopped", audio_end_ms=int(self.seg.t_ms),
                       item_id=self.user_item)
            self.commit(self.user_item, self.user_transcript)
            self.user_item = None
            if td.get("create_response", True) and not self.active:
                self.start_response(self.next_reply())

    def on_commit(self, eid: Any) -> None:
        if self.commit_too_small(eid):
            return
        self.seg.flush()
        item = self.user_item or self.conn.next_id("item")
        transcript = self.user_transcript if self.user_item else self.fake.next_transcript()
        self.user_item = None
        self.commit(item, transcript)

    def commit(self, item_id: str, transcript: str) -> None:
        self.event("input_audio_buffer.committed", item_id=item_id,
                   previous_item_id=self.previous_item)
        self.buffer_ms = 0.0
        item = _Item(item_id, "message", "user", transcript=transcript)
        self.add_item(item)
        tr = self.audio_in.get("transcription")
        if not tr:
            return
        words = transcript.split()
        for i, word in enumerate(words):
            self.event("conversation.item.input_audio_transcription.delta", item_id=item_id,
                       content_index=0, delta=word if i == 0 else f" {word}")
        self.event("conversation.item.input_audio_transcription.completed", item_id=item_id,
                   content_index=0, transcript=transcript,
                   usage={"type": "duration", "seconds": 1})

    def item_json(self, item: _Item) -> dict[str, Any]:
        out: dict[str, Any] = {"id": item.id, "object": "realtime.item", "type": item.kind,
                               "status": "completed"}
        if item.kind == "message":
            out["role"] = item.role
            part = "input_audio" if item.role == "user" else "output_audio"
            out["content"] = [{"type": part, "transcript": item.transcript}]
        elif item.call_id is not None:
            out["call_id"] = item.call_id
        return out

    def add_item(self, item: _Item) -> None:
        self.items[item.id] = item
        body = self.item_json(item)
        self.event("conversation.item.added", previous_item_id=self.previous_item, item=body)
        self.event("conversation.item.done", previous_item_id=self.previous_item, item=body)
        self.previous_item = item.id

    def on_item_create(self, msg: dict[str, Any], eid: Any) -> None:
        item = msg.get("item")
        if not isinstance(item, dict):
            self.error("missing_required_parameter", "Missing required parameter: 'item'.",
                       "item", eid)
            return
        kind = item.get("type")
        if kind == "function_call_output":
            call_id = item.get("call_id")
            output = item.get("output")
            if not isinstance(output, str):
                self.error("invalid_type", "Invalid type for 'item.output': expected a string.",
                           "item.output", eid)
                return
            call = self.open_calls.pop(str(call_id), None)
            if call is None:
                self.error("invalid_value", f"No tool call found with call_id '{call_id}'.",
                           "item.call_id", eid)
                return
            self.fake.tool_outputs.append({"call_id": call_id, "name": call.name,
                                           "output": output})
            self.answered.append((call, output))
            if is_interim(output):
                self.continued[str(call_id)] = call
            self.add_item(_Item(self.conn.next_id("item"), "function_call_output",
                                call_id=str(call_id)))
        elif kind == "message":
            role = item.get("role")
            if role not in ("user", "assistant", "system"):
                self.error("invalid_value", f"Invalid value: '{role}'. Supported values are: "
                           "'user', 'assistant', and 'system'.", "item.role", eid)
                return
            content = item.get("content") or []
            text = " ".join(str(c.get("text", "")) for c in content if isinstance(c, dict))
            self.add_item(_Item(self.conn.next_id("item"), "message", role, transcript=text))
            late = next((cid for cid in self.continued
                         if re.search(rf"\b{re.escape(cid)}\b", text)), None)
            if late is not None:
                call = self.continued.pop(late)
                body = text.split("\n", 1)[1] if "\n" in text else text
                self.fake.continued_results.append({"call_id": late, "name": call.name,
                                                    "role": role, "output": body})
                self.answered.append((call, body))
        else:
            self.error("invalid_value", f"Invalid value: '{kind}'. Supported values are: "
                       "'message', 'function_call', and 'function_call_output'.",
                       "item.type", eid)

    def on_truncate(self, msg: dict[str, Any], eid: Any) -> None:
        record: dict[str, Any] = {"item_id": msg.get("item_id"),
                                  "content_index": msg.get("content_index"),
                                  "audio_end_ms": msg.get("audio_end_ms"), "accepted": False}
        self.fake.truncations.append(record)
        item = self.items.get(str(msg.get("item_id")))
        end = msg.get("audio_end_ms")
        if item is None:
            self.error("item_truncate_invalid_item_id", f"Item with item_id "
                       f"'{msg.get('item_id')}' not found.", "item_id", eid)
        elif item.kind != "message" or item.role != "assistant":
            self.error("invalid_value", "Only assistant messages can be truncated.",
                       "item_id", eid)
        elif msg.get("content_index") != 0:
            self.error("invalid_value", "Invalid 'content_index': only 0 is supported.",
                       "content_index", eid)
        elif isinstance(end, bool) or not isinstance(end, int) or end < 0:
            self.error("invalid_type", "Invalid type for 'audio_end_ms': expected a "
                       "non-negative integer.", "audio_end_ms", eid)
        elif end > item.audio_ms + 1e-6:
            self.error("invalid_value", f"Audio content of {item.audio_ms:.0f}ms is shorter "
                       f"than {end}ms.", "audio_end_ms", eid)
        else:
            record["accepted"] = True
            item.audio_ms = float(end)
            self.event("conversation.item.truncated", item_id=item.id, content_index=0,
                       audio_end_ms=end)

    def on_response_create(self, msg: dict[str, Any], eid: Any) -> None:
        self.fake.responses_requested.append(msg)
        if self.active:
            self.error("conversation_already_has_active_response", "Conversation already has "
                       f"an active response in progress: {self.response_id}. Wait until the "
                       "response is finished before creating a new one.", None, eid)
            return
        response = msg.get("response") or {}
        if not isinstance(response, dict):
            self.error("invalid_type", "Invalid type for 'response': expected an object.",
                       "response", eid)
            return
        try:
            _check_keys(response, RESPONSE_KEYS, "response")
        except _Invalid as exc:
            self.error(exc.code, exc.message, exc.param, eid)
            return
        quoted = last_quoted(str(response.get("instructions") or ""))
        if self.answered:
            call, output = self.answered.pop(0)
            self.answered.clear()
            item: ScriptItem = spoken_result(call, output)
        elif quoted:
            item = Speech(quoted, ms=self.fake.say_ms)
        else:
            item = self.next_reply()
        self.start_response(item)

    # -------------------------------------------------------- responses

    def next_reply(self) -> ScriptItem:
        return self.fake.next_script_item()

    def start_response(self, item: ScriptItem) -> None:
        self.response_id = self.conn.next_id("resp")
        self.response_task = self.spawn(self.respond(self.response_id, item))

    async def respond(self, resp_id: str, item: ScriptItem) -> None:
        if self.fake.response_delay:
            await asyncio.sleep(self.fake.response_delay)
        self.event("response.created", response={
            "id": resp_id, "object": "realtime.response", "status": "in_progress",
            "output": [], "output_modalities": self.session.get("output_modalities")})
        if isinstance(item, Speech):
            out = await self.speak(resp_id, item)
        else:
            out = await self.call(resp_id, item)
        self.current_item = None
        self.event("response.done", response={
            "id": resp_id, "object": "realtime.response", "status": "completed",
            "status_details": None, "output": [out],
            "usage": {"total_tokens": 42, "input_tokens": 30, "output_tokens": 12}})
        self.event("rate_limits.updated", rate_limits=[
            {"name": "requests", "limit": 1000, "remaining": 999, "reset_seconds": 60}])

    async def speak(self, resp_id: str, speech: Speech) -> dict[str, Any]:
        item = _Item(self.conn.next_id("item"), "message", "assistant")
        self.items[item.id] = item
        self.current_item = item
        body = {"id": item.id, "object": "realtime.item", "type": "message",
                "role": "assistant", "status": "in_progress", "content": []}
        self.event("response.output_item.added", response_id=resp_id, output_index=0, item=body)
        self.event("conversation.item.added", previous_item_id=self.previous_item, item=body)
        self.previous_item = item.id
        self.event("response.content_part.added", response_id=resp_id, item_id=item.id,
                   output_index=0, content_index=0, part={"type": "audio", "transcript": ""})
        codec, rate = _codec(self.audio_out["format"])
        pcm = tone_pcm(speech.ms, rate, speech.freq)
        step = max(1, rate * self.fake.chunk_ms // 1000)
        chunks = [pcm[i:i + step] for i in range(0, len(pcm), step)]
        words = word_schedule(speech.text, len(chunks))
        ids: dict[str, Any] = {"response_id": resp_id, "item_id": item.id, "output_index": 0,
                               "content_index": 0}
        for i, chunk in enumerate(chunks):
            data = encode_pcm(chunk, codec)
            self.event(self.name("response.output_audio.delta"), **ids,
                       delta=base64.b64encode(data).decode("ascii"))
            item.audio_ms += len(chunk) * 1000 / rate
            for word in words[i]:
                item.transcript += word
                self.event(self.name("response.output_audio_transcript.delta"), **ids,
                           delta=word)
            if self.fake.pace_s:
                await asyncio.sleep(self.fake.pace_s)
        self.event(self.name("response.output_audio.done"), **ids)
        self.event(self.name("response.output_audio_transcript.done"), **ids,
                   transcript=item.transcript)
        part = {"type": "audio", "transcript": item.transcript}
        self.event("response.content_part.done", **ids, part=part)
        done = self.item_json(item)
        self.event("response.output_item.done", response_id=resp_id, output_index=0, item=done)
        self.event("conversation.item.done", previous_item_id=None, item=done)
        self.fake.replies.append({"response_id": resp_id, "item_id": item.id,
                                  "text": item.transcript, "audio_ms": item.audio_ms,
                                  "status": "completed"})
        return done

    async def call(self, resp_id: str, fc: FunctionCall) -> dict[str, Any]:
        call_id = self.conn.next_id("call")
        item = _Item(self.conn.next_id("item"), "function_call", call_id=call_id)
        self.items[item.id] = item
        body = {"id": item.id, "object": "realtime.item", "type": "function_call",
                "status": "in_progress", "call_id": call_id, "name": fc.name, "arguments": ""}
        self.event("response.output_item.added", response_id=resp_id, output_index=0, item=body)
        self.event("conversation.item.added", previous_item_id=self.previous_item, item=body)
        self.previous_item = item.id
        arguments = json.dumps(dict(fc.arguments))
        half = len(arguments) // 2
        ids: dict[str, Any] = {"response_id": resp_id, "item_id": item.id, "output_index": 0,
                               "call_id": call_id}
        for piece in (arguments[:half], arguments[half:]):
            if piece:
                self.event("response.function_call_arguments.delta", **ids, delta=piece)
        self.open_calls[call_id] = fc
        self.event("response.function_call_arguments.done", **ids, name=fc.name,
                   arguments=arguments)
        done = dict(body, status="completed", arguments=arguments)
        self.event("response.output_item.done", response_id=resp_id, output_index=0, item=done)
        self.event("conversation.item.done", previous_item_id=None, item=done)
        if self.fake.pace_s:
            await asyncio.sleep(self.fake.pace_s)
        return done

    def cancel(self, reason: str) -> None:
        task, resp_id = self.response_task, self.response_id
        if task is None or task.done() or resp_id is None:
            return
        task.cancel()
        self.response_task = None
        item = self.current_item
        self.current_item = None
        output: list[dict[str, Any]] = []
        if item is not None:
            body = dict(self.item_json(item), status="incomplete")
            output.append(body)
            self.event("response.output_item.done", response_id=resp_id, output_index=0,
                       item=body)
            self.fake.replies.append({"response_id": resp_id, "item_id": item.id,
                                      "text": item.transcript, "audio_ms": item.audio_ms,
                                      "status": "cancelled"})
        self.event("response.done", response={
            "id": resp_id, "object": "realtime.response", "status": "cancelled",
            "status_details": {"type": "cancelled", "reason": reason}, "output": output})


# --------------------------------------------------------------------------- server


class FakeOpenAIRealtime(OpenAIWireFake):
    """``async with FakeOpenAIRealtime(script=[...]) as fake:``; point clients at ``fake.base_url``.

    ``script``: what the model does on each turn, in order (then ``Speech("Okay.")``);
    ``transcripts``: what the caller "says" on each turn (input transcription).
    Pacing: ``chunk_ms`` of audio per delta, ``pace_s`` between deltas,
    ``response_delay`` before each response. ``say_ms``: length of a spoken
    greeting / ``say``. ``session_expiry_s``: expire the session after that long.
    """

    def __init__(self, script: Sequence[ScriptItem] = (), *,
                 transcripts: Sequence[str] = ("hello",), chunk_ms: int = 100,
                 pace_s: float = 0.0, response_delay: float = 0.0, say_ms: int = 400,
                 session_expiry_s: float | None = None, reject_beta: bool = True,
                 legacy_names: bool = False, **kwargs: Any) -> None:
        super().__init__(transcripts, **kwargs)
        self.script = list(script)
        self.chunk_ms = chunk_ms
        self.pace_s = pace_s
        self.response_delay = response_delay
        self.say_ms = say_ms
        self.session_expiry_s = session_expiry_s
        self.reject_beta = reject_beta
        self.legacy_names = legacy_names
        self.truncations: list[dict[str, Any]] = []
        self.tool_outputs: list[dict[str, Any]] = []
        self.continued_results: list[dict[str, Any]] = []
        self.replies: list[dict[str, Any]] = []
        self.responses_requested: list[dict[str, Any]] = []
        self.interruptions = 0
        self.expired = 0
        self._script_pos = itertools.count()
        self._live: list[tuple[_Session, FakeConn]] = []

    async def __aenter__(self) -> FakeOpenAIRealtime:
        await self.start()
        return self

    @property
    def base_url(self) -> str:
        """What a client's ``baseUrl`` should be (``/realtime`` gets appended)."""
        return self.origin + "/v1"

    def next_script_item(self) -> ScriptItem:
        i = next(self._script_pos)
        return self.script[i] if i < len(self.script) else DEFAULT_REPLY

    def expire(self) -> None:
        """Expire every live session now (``session_expired`` then close 1001)."""
        for state, conn in list(self._live):
            self._expire(state, conn)

    def _expire(self, state: _Session, conn: FakeConn) -> None:
        if conn.closing:
            return
        self.expired += 1
        state.error("session_expired", "Your session hit the maximum duration of 60 minutes.",
                    kind="invalid_request_error")
        conn.close(1001, "session_expired")

    def check_query(self, record: ConnRecord) -> Response | None:
        return self.missing_model() if record.q("model") is None else None

    async def serve(self, conn: FakeConn) -> None:
        state = _Session(self, conn, conn.record.q("model"))
        expiry: asyncio.Task[None] | None = None
        if not self.refused(state, self.reject_beta):
            state.event("session.created", session=copy.deepcopy(state.session))
            if self.session_expiry_s is not None:
                expiry = asyncio.get_running_loop().create_task(
                    self._expire_later(state, conn, self.session_expiry_s))
        self._live.append((state, conn))
        try:
            await self.read_events(state)
        finally:
            self._live.remove((state, conn))
            if expiry is not None:
                expiry.cancel()
            await state.shutdown()

    async def _expire_later(self, state: _Session, conn: FakeConn, delay: float) -> None:
        await asyncio.sleep(delay)
        self._expire(state, conn)
