"""A fake Gemini Live endpoint (``BidiGenerateContent`` WebSocket, Developer API).

A real ``websockets`` server on ``127.0.0.1:0`` modelled on ``ai-speech-apis.md``
§3 and the §9 checklist::

    async with FakeGeminiLive(script=[Speech("Hi there", ms=600)]) as fake:
        provider = google.create({"apiKey": fake.api_key, "endpoint": fake.url})
        ...
        assert fake.last.config["sessionResumption"] == {}

Behaviour:

- auth: ``?key=`` or the ``x-goog-api-key`` header (both masked in the
  records). No key: the upgrade succeeds and the socket is closed ``1008``
  (Google's "unregistered callers" text); a wrong key: closed ``1007`` "API
  key not valid. Please pass a valid API key." when the first message arrives
  [both close shapes are guesses: the live service's exact behaviour is not
  documented];
- every client message must have exactly one of ``setup``,
  ``clientContent``, ``realtimeInput``, ``toolResponse`` (camelCase or
  snake_case; keys are normalised to camelCase, never inside schemas, args or
  responses); ``setup`` must come first and is validated strictly (unknown
  fields, model, modalities, voice, tool schemas with upper-case types, VAD
  enums, resumption handle); errors close the socket with ``1007`` /
  ``1008`` and a reason, as the vendor does (no JSON errors); a good setup
  gets ``{"setupComplete": {}}`` after ``ready_delay``;
- ``realtimeInput.audio`` (``audio/pcm;rate=N``, also the deprecated
  ``mediaChunks``) is decoded and segmented by energy (``Segmenter``); the
  start threshold doubles with ``START_SENSITIVITY_LOW``, the end needs
  ``silenceDurationMs`` of quiet (default 500, 800 with ``END_SENSITIVITY_LOW``),
  speech must last ``prefixPaddingMs`` (at least ``min_speech_ms``).
  ``audioStreamEnd`` ends a turn; ``activityStart``/``activityEnd`` only with
  automatic detection disabled. While the caller speaks the fake streams
  ``inputTranscription`` word by word (when enabled), optionally
  ``voiceActivity`` START/END (``voice_activity=True``; allowlisted-only on
  the real service);
- the scripted "model": at the end of each caller turn the next ``script``
  item: ``Speech`` -> ``modelTurn`` parts with 24 kHz PCM ``inlineData`` in
  ``chunk_ms`` chunks ``pace_s`` apart, ``outputTranscription`` word by word,
  ``generationComplete``, then ``turnComplete`` with ``usageMetadata``;
  ``FunctionCall`` -> ``toolCall`` and the model waits for the matching
  ``toolResponse`` id, then says the call's ``then`` (or "Result: <output>"),
  after any reply still playing; ``scheduling: SILENT`` gets no reply. A
  function declared ``NON_BLOCKING`` may answer with ``willContinue: true``
  first: the call stays open and the model says ``CHECKING`` (blocking calls
  ignore ``willContinue``, as the service does: that response is final).
  A ``clientContent`` turn with ``turnComplete`` gets a reply that speaks the
  last quoted text in it (greeting / ``say``), else the next script item;
- barge-in: caller speech during a reply, or while a tool call waits for its
  response, cancels it and sends ``{"serverContent": {"interrupted": true}}``
  (pending calls: ``toolCallCancellation``) then ``turnComplete``; counted in
  ``interruptions``;
- resumption (when ``setup.sessionResumption`` is present): a
  ``sessionResumptionUpdate`` with a fresh resumable handle after
  ``setupComplete`` and after each turn (``resumable: false`` while
  generating); a new connection whose ``setup.sessionResumption.handle`` is an
  issued handle continues that conversation (pending tool calls included);
  recorded in ``resumed_handles``; an unknown handle closes ``1007``;
- ``goAway``: ``go_away_after_s`` after ``setupComplete`` on the first
  ``go_away_max`` connections, or ``send_go_away()``: ``{"goAway":
  {"timeLeft": "<go_away_grace_s>s"}}``, then the connection is closed after
  that grace;
- faults: ``fail_setup=(code, reason)`` closes on ``setup``;
  ``close_after_tool_response=(code, reason)`` (the intermittent 1011/1008
  after tool responses); ``binary_frames`` sends JSON in binary frames;
  from the STT fake base: ``connect_delay``, ``event_delay``,
  ``reject_status``, ``close_after_ms`` of caller audio (``close_code`` /
  ``close_reason``; ``None`` drops TCP), ``error_after_ms`` (close 1011).

Records: ``connections`` (``ConnRecord``: ``headers``, ``query``, ``config``
= the normalised setup, ``messages`` = client messages except audio,
``sent`` = server messages), ``issued_handles``, ``resumed_handles``,
``tool_outputs``, ``replies``, ``interruptions``, ``client_turns``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import itertools
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic.alias_generators import to_camel
from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response
from websockets.protocol import State

from voicecall.audio.resample import pcm16_bytes
from voicecall.testing.fake_openai_realtime import (
    CHECKING,
    FunctionCall,
    ScriptItem,
    Speech,
    last_quoted,
    spoken_result,
    tone_pcm,
    word_schedule,
)
from voicecall.testing.fake_stt._server import (
    DEFAULT_API_KEY,
    ConnRecord,
    FakeConn,
    FakeSttServer,
    SegEvent,
    Segmenter,
)

__all__ = [
    "DEFAULT_API_KEY",
    "LIVE_PATH",
    "FakeGeminiLive",
    "FunctionCall",
    "Speech",
    "sent_keys",
]

LIVE_PATH = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
OUTPUT_RATE = 24000
MODELS = ("gemini-2.5-flash-native-audio-preview-12-2025",
          "gemini-2.5-flash-native-audio-preview-09-2025", "gemini-3.1-flash-live-preview",
          "gemini-live-2.5-flash-native-audio")
VOICES = ("Puck", "Charon", "Kore", "Fenrir", "Aoede", "Leda", "Orus", "Zephyr", "Achernar",
          "Achird", "Algenib", "Sulafat", "Zubenelgenubi")
CLIENT_KEYS = ("setup", "clientContent", "realtimeInput", "toolResponse")
SETUP_KEYS = ("model", "generationConfig", "systemInstruction", "tools", "realtimeInputConfig",
              "sessionResumption", "contextWindowCompression", "inputAudioTranscription",
              "outputAudioTranscription", "proactivity", "historyConfig", "explicitVadSignal")
GENERATION_KEYS = ("responseModalities", "speechConfig", "temperature", "topP", "topK",
                   "maxOutputTokens", "candidateCount", "presencePenalty", "frequencyPenalty",
                   "mediaResolution", "thinkingConfig", "enableAffectiveDialog", "seed")
AAD_KEYS = ("disabled", "startOfSpeechSensitivity", "endOfSpeechSensitivity",
            "prefixPaddingMs", "silenceDurationMs")
SCHEMA_TYPES = ("TYPE_UNSPECIFIED", "STRING", "NUMBER", "INTEGER", "BOOLEAN", "ARRAY", "OBJECT",
                "NULL")
SCHEMA_KEYS = ("type", "format", "title", "description", "nullable", "enum", "maxItems",
               "minItems", "properties", "required", "minProperties", "maxProperties",
               "minLength", "maxLength", "pattern", "example", "anyOf", "propertyOrdering",
               "default", "items", "minimum", "maximum")
# Values under these keys are user data (schemas, arguments): never renamed.
OPAQUE_KEYS = frozenset({"parameters", "parametersJsonSchema", "parameters_json_schema",
                         "response", "responseJsonSchema", "response_json_schema", "args"})
INVALID = "Request contains an invalid argument."
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,63}$")
_RATE = re.compile(r"rate=(\d+)")


def camel_keys(obj: Any) -> Any:
    """``obj`` with snake_case keys as camelCase (user data under OPAQUE_KEYS untouched)."""
    if isinstance(obj, dict):
        return {to_camel(k) if "_" in k else k: (v if k in OPAQUE_KEYS else camel_keys(v))
                for k, v in obj.items()}
    if isinstance(obj, list):
        return [camel_keys(v) for v in obj]
    return obj


def snake_path(path: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", lambda m: "_" + m.group(1).lower(), path)


def sent_keys(record: ConnRecord) -> list[str]:
    """What the fake sent on a connection, as ``key`` or ``serverContent.<field>`` names."""
    out: list[str] = []
    for msg in record.sent:
        for key, value in msg.items():
            if key == "serverContent" and isinstance(value, dict):
                out.extend(f"serverContent.{k}" for k in value)
            else:
                out.append(key)
    return out


class _Bad(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def _unknown(obj: dict[str, Any], allowed: Sequence[str], where: str) -> None:
    for key in obj:
        if key not in allowed:
            raise _Bad(1007, f"Invalid JSON payload received. Unknown name \"{key}\" at "
                       f"'{snake_path(where)}': Cannot find field.")


def _obj(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Bad(1007, f"Invalid JSON payload received. Invalid value at "
                   f"'{snake_path(where)}': expected an object.")
    return value


def _enum(value: Any, allowed: Sequence[str], where: str) -> None:
    if value not in allowed:
        raise _Bad(1007, f"Invalid value at '{snake_path(where)}', \"{value}\"")


def _schema(schema: Any, where: str) -> None:
    s = _obj(schema, where)
    _unknown(s, SCHEMA_KEYS, where)
    if "type" in s:
        _enum(s["type"], SCHEMA_TYPES, f"{where}.type")
    if s.get("type") == "OBJECT" and "properties" in s and not s["properties"]:
        raise _Bad(1007, f"* GenerateContentRequest.{snake_path(where)}.properties: should be "
                   "non-empty for OBJECT type")
    for name, sub in (s.get("properties") or {}).items():
        _schema(sub, f"{where}.properties[{name}]")
    if "items" in s:
        _schema(s["items"], f"{where}.items")
    for i, sub in enumerate(s.get("anyOf") or []):
        _schema(sub, f"{where}.anyOf[{i}]")


def validate_setup(setup: Any, models: Sequence[str]) -> None:
    s = _obj(setup, "setup")
    _unknown(s, SETUP_KEYS, "setup")
    model = s.get("model")
    if not isinstance(model, str) or not model:
        raise _Bad(1007, INVALID)
    name = model.removeprefix("models/")
    if not model.startswith("models/") or name not in models:
        raise _Bad(1008, f"models/{name} is not found for API version v1beta, or is not "
                   "supported for bidiGenerateContent.")
    gen = _obj(s.get("generationConfig", {}), "setup.generationConfig")
    _unknown(gen, GENERATION_KEYS, "setup.generationConfig")
    mods = gen.get("responseModalities", ["AUDIO"])
    if not isinstance(mods, list) or len(mods) != 1:
        raise _Bad(1007, INVALID)
    _enum(mods[0], ("AUDIO", "TEXT"), "setup.generationConfig.responseModalities[0]")
    if mods[0] != "AUDIO" and "native-audio" in name:
        raise _Bad(1007, "Cannot extract voices from a non-audio request.")
    speech = _obj(gen.get("speechConfig", {}), "setup.generationConfig.speechConfig")
    _unknown(speech, ("voiceConfig", "languageCode", "multiSpeakerVoiceConfig"),
             "setup.generationConfig.speechConfig")
    voice = _obj(speech.get("voiceConfig", {}), "setup.generationConfig.speechConfig.voiceConfig")
    prebuilt = _obj(voice.get("prebuiltVoiceConfig", {}),
                    "setup.generationConfig.speechConfig.voiceConfig.prebuiltVoiceConfig")
    if "voiceName" in prebuilt and prebuilt["voiceName"] not in VOICES:
        raise _Bad(1007, f"Voice name {prebuilt['voiceName']} is not supported.")
    if "systemInstruction" in s and not isinstance(s["systemInstruction"], str):
        si = _obj(s["systemInstruction"], "setup.systemInstruction")
        _unknown(si, ("parts", "role"), "setup.systemInstruction")
        if not isinstance(si.get("parts"), list):
            raise _Bad(1007, INVALID)
    for i, tool in enumerate(s.get("tools") or []):
        where = f"setup.tools[{i}]"
        tool = _obj(tool, where)
        _unknown(tool, ("functionDeclarations", "googleSearch", "codeExecution", "urlContext"),
                 where)
        for j, decl in enumerate(tool.get("functionDeclarations") or []):
            dw = f"{where}.functionDeclarations[{j}]"
            decl = _obj(decl, dw)
            _unknown(decl, ("name", "description", "parameters", "parametersJsonSchema",
                            "behavior", "response", "responseJsonSchema"), dw)
            if not isinstance(decl.get("name"), str) or not _NAME.match(decl["name"]):
                raise _Bad(1007, f"* GenerateContentRequest.{snake_path(dw)}.name: Invalid "
                           "function name.")
            if "parameters" in decl:
                _schema(decl["parameters"], f"{dw}.parameters")
            if "behavior" in decl:
                _enum(decl["behavior"], ("BLOCKING", "NON_BLOCKING"), f"{dw}.behavior")
    ric = _obj(s.get("realtimeInputConfig", {}), "setup.realtimeInputConfig")
    _unknown(ric, ("automaticActivityDetection", "activityHandling", "turnCoverage"),
             "setup.realtimeInputConfig")
    aad = _obj(ric.get("automaticActivityDetection", {}),
               "setup.realtimeInputConfig.automaticActivityDetection")
    where = "setup.realtimeInputConfig.automaticActivityDetection"
    _unknown(aad, AAD_KEYS, where)
    if "startOfSpeechSensitivity" in aad:
        _enum(aad["startOfSpeechSensitivity"], ("START_SENSITIVITY_UNSPECIFIED",
              "START_SENSITIVITY_HIGH", "START_SENSITIVITY_LOW"),
              f"{where}.startOfSpeechSensitivity")
    if "endOfSpeechSensitivity" in aad:
        _enum(aad["endOfSpeechSensitivity"], ("END_SENSITIVITY_UNSPECIFIED",
              "END_SENSITIVITY_HIGH", "END_SENSITIVITY_LOW"), f"{where}.endOfSpeechSensitivity")
    for key in ("prefixPaddingMs", "silenceDurationMs"):
        value = aad.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < 0):
            raise _Bad(1007, f"Invalid value at '{snake_path(where + '.' + key)}' (TYPE_INT32), "
                       f"{value}")
    if "disabled" in aad and not isinstance(aad["disabled"], bool):
        raise _Bad(1007, INVALID)
    if "activityHandling" in ric:
        _enum(ric["activityHandling"], ("ACTIVITY_HANDLING_UNSPECIFIED",
              "START_OF_ACTIVITY_INTERRUPTS", "NO_INTERRUPTION"),
              "setup.realtimeInputConfig.activityHandling")
    for key in ("inputAudioTranscription", "outputAudioTranscription", "proactivity",
                "historyConfig"):
        if key in s:
            _obj(s[key], f"setup.{key}")
    if "sessionResumption" in s:
        sr = _obj(s["sessionResumption"], "setup.sessionResumption")
        _unknown(sr, ("handle", "transparent"), "setup.sessionResumption")
        if "handle" in sr and not isinstance(sr["handle"], str):
            raise _Bad(1007, INVALID)
    if "contextWindowCompression" in s:
        cwc = _obj(s["contextWindowCompression"], "setup.contextWindowCompression")
        _unknown(cwc, ("triggerTokens", "slidingWindow"), "setup.contextWindowCompression")
        if "slidingWindow" in cwc:
            sw = _obj(cwc["slidingWindow"], "setup.contextWindowCompression.slidingWindow")
            _unknown(sw, ("targetTokens",), "setup.contextWindowCompression.slidingWindow")


# --------------------------------------------------------------------------- state


@dataclass
class _Conversation:
    """The logical session: survives a connection when resumed with a handle."""

    id: int
    open_calls: dict[str, FunctionCall] = field(default_factory=dict)
    answered: list[tuple[FunctionCall, Any]] = field(default_factory=list)
    turns: int = 0
    history: list[tuple[str, str]] = field(default_factory=list)   # (role, text)


class _GeminiConn(FakeConn):
    """``FakeConn`` that can send its JSON in binary frames, as the live service may."""

    async def send_now(self, event: dict[str, Any]) -> None:
        self.sent.append(event)
        text = json.dumps(event)
        await self.ws.send(text.encode() if getattr(self.server, "binary_frames", False)
                           else text)

    def close(self, code: int = 1000, reason: str = "", delay: float = 0.0) -> None:
        super().close(code, reason[:123], delay)

    async def stop(self, wait: float = 0.0) -> None:
        # A socket already closed has nothing left to flush: do not wait for a queued close.
        await super().stop(0.0 if self.ws.state is State.CLOSED else wait)


class _Live:
    """Protocol state of one connection."""

    def __init__(self, fake: FakeGeminiLive, conn: FakeConn) -> None:
        self.fake = fake
        self.conn = conn
        self.setup: dict[str, Any] | None = None
        self.convo: _Conversation | None = None
        self.seg: Segmenter | None = None
        self.seg_rate = 16000
        self.words: list[str] = []
        self.words_sent = 0
        self.user_text = ""
        self.in_speech = False
        self.reply_task: asyncio.Task[None] | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.activity_disabled = False
        self.interrupts = True

    # -------------------------------------------------------- helpers

    def send(self, msg: dict[str, Any], delay: float = 0.0) -> None:
        self.conn.send(msg, delay)

    def content(self, **fields: Any) -> None:
        self.send({"serverContent": fields})

    def close(self, code: int, reason: str) -> None:
        self.conn.close(code, reason)

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

    @property
    def replying(self) -> bool:
        return self.reply_task is not None and not self.reply_task.done()

    @property
    def resumption(self) -> bool:
        return self.setup is not None and "sessionResumption" in self.setup

    def issue_handle(self) -> None:
        if not self.resumption or self.convo is None:
            return
        handle = f"h{self.convo.id}-{len(self.fake.issued_handles) + 1:04d}"
        self.fake.handles[handle] = self.convo
        self.fake.issued_handles.append(handle)
        self.send({"sessionResumptionUpdate": {"newHandle": handle, "resumable": True}})

    # -------------------------------------------------------- messages

    def on_message(self, raw: dict[str, Any]) -> None:
        msg = camel_keys(raw)
        keys = [k for k in msg if k in CLIENT_KEYS]
        if len(msg) != 1 or len(keys) != 1:
            unknown = next((k for k in msg if k not in CLIENT_KEYS), None)
            raise _Bad(1007, f"Invalid JSON payload received. Unknown name \"{unknown}\": "
                       "Cannot find field." if unknown else INVALID)
        key = keys[0]
        if key != "realtimeInput" or "audio" not in msg[key]:
            self.conn.record.messages.append(msg)
        if self.setup is None:
            if key != "setup":
                raise _Bad(1007, "The first message must be a setup message.")
            self.on_setup(msg["setup"])
        elif key == "setup":
            raise _Bad(1007, "Setup has already been received.")
        elif key == "realtimeInput":
            self.on_realtime_input(_obj(msg[key], "realtime_input"))
        elif key == "clientContent":
            self.on_client_content(_obj(msg[key], "client_content"))
        else:
            self.on_tool_response(_obj(msg[key], "tool_response"))

    def on_setup(self, setup: Any) -> None:
        fake = self.fake
        if fake.fail_setup is not None:
            raise _Bad(*fake.fail_setup)
        if not self.conn.record.authorized:
            if id(self.conn.record) in fake._keyless:
                raise _Bad(1008, "Method doesn't allow unregistered callers (callers without "
                           "established identity). Please use API Key or other form of API "
                           "consumer identity to call this API.")
            raise _Bad(1007, "API key not valid. Please pass a valid API key.")
        validate_setup(setup, fake.models)
        self.setup = setup
        self.conn.record.config = setup
        handle = (setup.get("sessionResumption") or {}).get("handle")
        if handle:
            convo = fake.handles.get(handle)
            if convo is None:
                raise _Bad(1007, "Session resumption handle is invalid or has expired.")
            fake.resumed_handles.append(handle)
            self.convo = convo
        else:
            self.convo = _Conversation(next(fake._convo_ids))
        aad = (setup.get("realtimeInputConfig") or {}).get("automaticActivityDetection") or {}
        self.activity_disabled = bool(aad.get("disabled", False))
        self.interrupts = (setup.get("realtimeInputConfig") or {}).get(
            "activityHandling") != "NO_INTERRUPTION"
        self.send({"setupComplete": {}}, fake.ready_delay)
        self.issue_handle()
        index = len(fake._conn_setups)
        fake._conn_setups.append(self)
        if fake.go_away_after_s is not None and index < fake.go_away_max:
            self.spawn(self._go_away_later(fake.go_away_after_s))

    def segmenter(self, rate: int) -> Segmenter:
        assert self.setup is not None
        aad = (self.setup.get("realtimeInputConfig") or {}).get("automaticActivityDetection") \
            or {}
        threshold = self.fake.rms_threshold
        if aad.get("startOfSpeechSensitivity") == "START_SENSITIVITY_LOW":
            threshold *= 2.0
        silence = aad.get("silenceDurationMs")
        if silence is None:
            silence = 800 if aad.get("endOfSpeechSensitivity") == "END_SENSITIVITY_LOW" else 500
        min_speech = max(self.fake.min_speech_ms, float(aad.get("prefixPaddingMs") or 0))
        offset = self.seg.t_ms if self.seg is not None else 0.0
        return Segmenter(rate, threshold=threshold, end_silence_ms=float(silence),
                         min_speech_ms=min_speech, word_ms=self.fake.word_ms, offset_ms=offset)

    def on_realtime_input(self, ri: dict[str, Any]) -> None:
        _unknown(ri, ("audio", "mediaChunks", "audioStreamEnd", "activityStart", "activityEnd",
                      "text", "video"), "realtime_input")
        blobs: list[Any] = []
        if "audio" in ri:
            blobs.append(ri["audio"])
        blobs.extend(ri.get("mediaChunks") or [])
        for blob in blobs:
            self.on_audio(_obj(blob, "realtime_input.audio"))
        if ri.get("audioStreamEnd") and self.seg is not None:
            for ev in self.seg.flush():
                self.on_vad(ev)
        if "activityStart" in ri or "activityEnd" in ri:
            if not self.activity_disabled:
                raise _Bad(1007, "Explicit activity control is not supported when automatic "
                           "activity detection is enabled.")
            if "activityStart" in ri:
                self.on_vad(SegEvent("start", 0.0))
            if "activityEnd" in ri:
                self.on_vad(SegEvent("end", 0.0))
        text = ri.get("text")
        if isinstance(text, str) and text:
            self.fake.client_turns.append(text)
            self.reply(self.fake.next_script_item())

    def on_audio(self, blob: dict[str, Any]) -> None:
        mime = str(blob.get("mimeType", ""))
        if not mime.startswith("audio/pcm"):
            raise _Bad(1007, f"Unsupported mime type: {mime or '(empty)'}.")
        match = _RATE.search(mime)
        rate = int(match.group(1)) if match else 16000
        try:
            raw = base64.b64decode(str(blob.get("data", "")), validate=True)
        except (binascii.Error, ValueError):
            raise _Bad(1007, "Invalid value at 'realtime_input.audio.data' (TYPE_BYTES), "
                       "Base64 decoding failed.") from None
        samples = pcm16_bytes(raw)
        self.fake.audio_rates.add(rate)
        if not self.conn.on_audio(len(raw), len(samples) * 1000 / rate):
            return
        if self.activity_disabled:
            return
        if self.seg is None or self.seg_rate != rate:
            self.seg_rate = rate
            self.seg = self.segmenter(rate)
        for ev in self.seg.feed(samples):
            self.on_vad(ev)

    def on_vad(self, ev: SegEvent) -> None:
        assert self.setup is not None
        transcribe = "inputAudioTranscription" in self.setup
        if ev.kind == "start":
            self.in_speech = True
            self.words = self.fake.next_transcript().split()
            self.words_sent = 0
            if self.fake.voice_activity:
                self.send({"voiceActivity": {"voiceActivityType": "ACTIVITY_START"}})
            pending = self.convo is not None and bool(self.convo.open_calls)
            if (self.replying or pending) and self.interrupts:
                self.interrupt()
        elif ev.kind == "word" and transcribe:
            self.send_words(min(len(self.words), ev.words))
        elif ev.kind == "end" and self.in_speech:
            self.in_speech = False
            if transcribe:
                self.send_words(len(self.words))
            if self.fake.voice_activity:
                self.send({"voiceActivity": {"voiceActivityType": "ACTIVITY_END"}})
            if self.convo is not None:
                self.convo.history.append(("user", " ".join(self.words)))
            if not self.replying:
                self.reply(self.fake.next_script_item())

    def send_words(self, upto: int) -> None:
        while self.words_sent < upto:
            word = self.words[self.words_sent]
            self.content(inputTranscription={"text": word if self.words_sent == 0
                                             else f" {word}"})
            self.words_sent += 1

    def interrupt(self) -> None:
        task = self.reply_task
        if task is not None and not task.done():
            task.cancel()
        self.reply_task = None
        self.fake.interruptions += 1
        self.content(interrupted=True)
        if self.convo is not None and self.convo.open_calls:
            ids = list(self.convo.open_calls)
            self.convo.open_calls.clear()
            self.send({"toolCallCancellation": {"ids": ids}})
        self.content(turnComplete=True)
        self.issue_handle()

    def on_client_content(self, cc: dict[str, Any]) -> None:
        _unknown(cc, ("turns", "turnComplete"), "client_content")
        texts: list[str] = []
        for turn in cc.get("turns") or []:
            for part in _obj(turn, "client_content.turns").get("parts") or []:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    texts.append(part["text"])
        text = "\n".join(texts)
        self.fake.client_turns.append(text)
        if not cc.get("turnComplete"):
            return
        if self.replying:
            self.interrupt()
        quoted = last_quoted(text)
        self.reply(Speech(quoted, ms=self.fake.say_ms) if quoted else
                   self.fake.next_script_item())

    def on_tool_response(self, tr: dict[str, Any]) -> None:
        _unknown(tr, ("functionResponses",), "tool_response")
        responses = tr.get("functionResponses")
        if not isinstance(responses, list) or not responses:
            raise _Bad(1007, INVALID)
        convo = self.convo
        assert convo is not None
        silent = False
        for fr in responses:
            fr = _obj(fr, "tool_response.function_responses")
            _unknown(fr, ("id", "name", "response", "scheduling", "willContinue"),
                     "tool_response.function_responses")
            response = _obj(fr.get("response"), "tool_response.function_responses.response")
            if "scheduling" in fr:
                _enum(fr["scheduling"], ("SCHEDULING_UNSPECIFIED", "SILENT", "WHEN_IDLE",
                                         "INTERRUPT"), "tool_response.scheduling")
            silent = silent or fr.get("scheduling") == "SILENT"
            call_id = str(fr.get("id", ""))
            call = convo.open_calls.get(call_id)
            interim = (call is not None and fr.get("willContinue") is True
                       and self.behavior(call.name) == "NON_BLOCKING")
            record: dict[str, Any] = {"id": call_id, "name": fr.get("name"),
                                      "response": response, "known": call is not None}
            for key, field_name in (("willContinue", "will_continue"),
                                    ("scheduling", "scheduling")):
                if key in fr:
                    record[field_name] = fr[key]
            self.fake.tool_outputs.append(record)
            if interim:
                if fr.get("scheduling") != "SILENT":
                    self.reply_after(Speech(CHECKING, ms=300))
                continue
            convo.open_calls.pop(call_id, None)
            if call is not None:
                convo.answered.append((call, response.get("output", response)))
        if self.fake.close_after_tool_response is not None:
            self.close(*self.fake.close_after_tool_response)
            return
        if convo.answered and not convo.open_calls:
            call, output = convo.answered[0]
            convo.answered.clear()
            if not silent:
                self.reply_after(spoken_result(call, output))

    def behavior(self, name: str) -> str:
        """How ``name`` was declared: ``BLOCKING`` (the default) or ``NON_BLOCKING``."""
        for tool in (self.setup or {}).get("tools") or []:
            for decl in tool.get("functionDeclarations") or []:
                if decl.get("name") == name:
                    return str(decl.get("behavior") or "BLOCKING")
        return "BLOCKING"

    # -------------------------------------------------------- the model

    def reply(self, item: ScriptItem) -> None:
        self.reply_task = self.spawn(self.respond(item))

    def reply_after(self, item: ScriptItem) -> None:
        """Reply once the reply still playing (if any) is over."""
        before = self.reply_task

        async def after() -> None:
            if before is not None and not before.done():
                try:
                    await asyncio.wait({before})
                except asyncio.CancelledError:
                    before.cancel()      # interrupted while queued: the earlier reply too
                    raise
            await self.respond(item)

        self.reply_task = self.spawn(after())

    async def respond(self, item: ScriptItem) -> None:
        if self.fake.response_delay:
            await asyncio.sleep(self.fake.response_delay)
        convo = self.convo
        assert convo is not None
        convo.turns += 1
        if isinstance(item, FunctionCall):
            call_id = f"fc_{convo.id}_{convo.turns}"
            convo.open_calls[call_id] = item
            self.send({"toolCall": {"functionCalls": [
                {"id": call_id, "name": item.name, "args": dict(item.arguments)}]}})
            return
        if self.resumption:
            self.send({"sessionResumptionUpdate": {"newHandle": "", "resumable": False}})
        step = OUTPUT_RATE * self.fake.chunk_ms // 1000
        pcm = tone_pcm(item.ms, OUTPUT_RATE, item.freq)
        chunks = [pcm[i:i + step] for i in range(0, len(pcm), step)]
        words = word_schedule(item.text, len(chunks))
        record: dict[str, Any] = {"text": "", "audio_ms": 0.0, "status": "in_progress"}
        self.fake.replies.append(record)
        transcribe = self.setup is not None and "outputAudioTranscription" in self.setup
        try:
            for i, chunk in enumerate(chunks):
                data = base64.b64encode(chunk.astype("<i2").tobytes()).decode("ascii")
                self.content(modelTurn={"role": "model", "parts": [{"inlineData": {
                    "mimeType": f"audio/pcm;rate={OUTPUT_RATE}", "data": data}}]})
                record["audio_ms"] = float(record["audio_ms"]) + len(chunk) * 1000 / OUTPUT_RATE
                for word in words[i]:
                    record["text"] = str(record["text"]) + word
                    if transcribe:
                        self.content(outputTranscription={"text": word})
                if self.fake.pace_s:
                    await asyncio.sleep(self.fake.pace_s)
        except asyncio.CancelledError:
            record["status"] = "interrupted"
            raise
        record["status"] = "completed"
        convo.history.append(("model", str(record["text"])))
        self.content(generationComplete=True)
        self.send({"serverContent": {"turnComplete": True}, "usageMetadata": {
            "promptTokenCount": 100, "responseTokenCount": 20, "totalTokenCount": 120}})
        self.issue_handle()

    async def _go_away_later(self, delay: float) -> None:
        await asyncio.sleep(delay)
        self.go_away()

    def go_away(self) -> None:
        if self.conn.closing:
            return
        grace = self.fake.go_away_grace_s
        self.fake.go_aways += 1
        self.send({"goAway": {"timeLeft": f"{grace:g}s"}})
        self.conn.close(1000, "", delay=grace)


# --------------------------------------------------------------------------- server


class FakeGeminiLive(FakeSttServer):
    """``async with FakeGeminiLive(script=[...]) as fake:``; point clients at ``fake.url``.

    ``script``: what the model does on each turn, in order (then ``Speech("Okay.")``);
    ``transcripts``: what the caller "says" on each turn (``inputTranscription``).
    """

    path = LIVE_PATH

    def __init__(self, script: Sequence[ScriptItem] = (), *,
                 transcripts: Sequence[str] = ("hello",), chunk_ms: int = 100,
                 pace_s: float = 0.0, response_delay: float = 0.0, say_ms: int = 400,
                 models: Sequence[str] = MODELS, voice_activity: bool = False,
                 go_away_after_s: float | None = None, go_away_max: int = 1,
                 go_away_grace_s: float = 5.0, fail_setup: tuple[int, str] | None = None,
                 close_after_tool_response: tuple[int, str] | None = None,
                 binary_frames: bool = False, **kwargs: Any) -> None:
        kwargs.setdefault("close_reason", "Internal error occurred.")
        super().__init__(transcripts, **kwargs)
        self.script = list(script)
        self.chunk_ms = chunk_ms
        self.pace_s = pace_s
        self.response_delay = response_delay
        self.say_ms = say_ms
        self.models = tuple(models)
        self.voice_activity = voice_activity
        self.go_away_after_s = go_away_after_s
        self.go_away_max = go_away_max
        self.go_away_grace_s = go_away_grace_s
        self.fail_setup = fail_setup
        self.close_after_tool_response = close_after_tool_response
        self.binary_frames = binary_frames
        self.handles: dict[str, _Conversation] = {}
        self.issued_handles: list[str] = []
        self.resumed_handles: list[str] = []
        self.tool_outputs: list[dict[str, Any]] = []
        self.replies: list[dict[str, Any]] = []
        self.client_turns: list[str] = []
        self.audio_rates: set[int] = set()
        self.interruptions = 0
        self.go_aways = 0
        self._script_pos = itertools.count()
        self._convo_ids = itertools.count(1)
        self._conn_setups: list[_Live] = []
        self._live: list[_Live] = []
        self._keyless: set[int] = set()

    def next_script_item(self) -> ScriptItem:
        i = next(self._script_pos)
        return self.script[i] if i < len(self.script) else Speech("Okay.", ms=300)

    async def __aenter__(self) -> FakeGeminiLive:
        await self.start()
        return self

    def send_go_away(self) -> None:
        """``goAway`` on every live connection now (closed after ``go_away_grace_s``)."""
        for live in list(self._live):
            if live.setup is not None:
                live.go_away()

    def close_live(self, code: int | None = 1011, reason: str = "Internal error occurred.") -> None:
        """Close every live connection now with ``code`` (``None``: drop TCP, the client sees 1006)."""
        for live in list(self._live):
            if code is None:
                live.conn.abort()
            else:
                live.conn.close(code, reason)

    def check_handshake(self, request: Request, record: ConnRecord) -> Response | None:
        header = request.headers.get("x-goog-api-key")
        query = record.q("key")
        key = header or query
        if "x-goog-api-key" in record.headers:
            record.headers["x-goog-api-key"] = "***"
        if "key" in record.query:
            record.query["key"] = ["***"]
        record.authorized = key == self.api_key
        if not key:
            self._keyless.add(id(record))    # accepted, then closed 1008 on setup
        return None

    def inject_error(self, conn: FakeConn) -> None:
        conn.close(1011, "Internal error occurred.")

    def new_conn(self, ws: ServerConnection, record: ConnRecord) -> FakeConn:
        return _GeminiConn(self, ws, record)

    async def serve(self, conn: FakeConn) -> None:
        live = _Live(self, conn)
        self._live.append(live)
        try:
            async for message in conn.ws:
                if conn.closing:
                    continue
                try:
                    data = json.loads(message)
                except ValueError:
                    conn.close(1007, "Invalid JSON payload received.")
                    continue
                try:
                    if not isinstance(data, dict):
                        raise _Bad(1007, INVALID)
                    live.on_message(data)
                except _Bad as exc:
                    conn.close(exc.code, exc.reason)
        finally:
            self._live.remove(live)
            await live.shutdown()
