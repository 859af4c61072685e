"""Google Gemini Live (``BidiGenerateContent`` over WebSocket) as a ``RealtimeProvider``.

Wire protocol (``ai-speech-apis.md`` §3, ``openclaw-voice-call.md`` §7.2):

- ``wss://generativelanguage.googleapis.com/ws/google.ai.generativelanguage.
  v1beta.GenerativeService.BidiGenerateContent`` with the key in the
  ``x-goog-api-key`` header (what python-genai sends; never in the URL, so it
  cannot leak through a logged URL);
- first message ``setup``: ``model`` (``models/`` prefixed),
  ``generationConfig`` (``responseModalities: ["AUDIO"]``, prebuilt voice),
  ``systemInstruction``, tools as ``functionDeclarations`` (the JSON schema
  turned into Gemini's OpenAPI-subset ``Schema``: upper-case types, unknown
  keywords dropped; a tool without properties has no ``parameters``),
  ``realtimeInputConfig.automaticActivityDetection`` (only the settings
  configured: ``startOfSpeechSensitivity``, ``endOfSpeechSensitivity``,
  ``prefixPaddingMs``, ``silenceDurationMs``), ``inputAudioTranscription`` /
  ``outputAudioTranscription`` ``{}``, ``sessionResumption`` (``{}``, or
  ``{"handle": ...}`` when resuming) and ``contextWindowCompression``
  ``{"slidingWindow": {}}``, both on by default. Nothing else is sent before
  ``setupComplete``; audio and messages queued until then are flushed in order;
- caller audio: mu-law 8 kHz -> PCM16 -> 16 kHz (soxr stream) ->
  ``realtimeInput.audio`` ``{data: b64, mimeType: "audio/pcm;rate=16000"}``;
- model audio: ``serverContent.modelTurn.parts[].inlineData`` PCM16 at the
  rate its ``mimeType`` names (24 kHz) -> 8 kHz -> mu-law ``audio`` events,
  tagged with a per-turn ``item_id`` (``gemini-turn-N``; Gemini has no items);
- ``serverContent.interrupted`` -> ``interrupted`` (the server already dropped
  its queued audio; the bridge clears the carrier buffer; ``truncate`` is a
  no-op); ``turnComplete`` -> ``response-done`` (``text``: ``completed`` or
  ``interrupted``); ``inputTranscription`` / ``outputTranscription`` chunks ->
  ``transcript`` (``final=False`` per chunk, then the whole text with
  ``final=True`` at the end of the turn, or when ``finished`` says so);
- Gemini sends no reliable speech start/stop events, so ``speech-start`` is
  the first caller transcription chunk (or ``voiceActivity`` ACTIVITY_START,
  where the account gets those) and ``speech-stop`` the model starting to
  answer (or ACTIVITY_END);
- ``toolCall.functionCalls`` -> ``tool-call`` (``arguments`` is the ``args``
  object as JSON text); ``send_tool_result`` -> ``toolResponse``
  ``{functionResponses: [{id, name, response: {output: <the result>}}]}``
  (the model continues on its own); results for calls the server cancelled
  (``toolCallCancellation``) are dropped. Continuation (models with
  asynchronous function calling: not ``gemini-3.1-*``, see
  ``supports_async_tools``): a tool marked
  ``interim_results`` is declared ``behavior: NON_BLOCKING`` and its
  responses carry ``scheduling`` (``WHEN_IDLE``; ``SILENT`` for
  ``respond=False``), the interim one ``willContinue: true`` (ignored by the
  server for blocking calls, so an interim result for one is not sent);
- ``say`` / greeting -> a ``clientContent`` user turn with ``turnComplete``;
- ``sessionResumptionUpdate`` handles are kept (resumable ones only). On
  ``goAway``, or when the connection closes unexpectedly (1001, 1006, 1008,
  1011-1014) while a handle is held, the session continues on a **new**
  connection whose ``setup`` carries ``sessionResumption.handle``; audio and
  messages sent meanwhile are queued. At most ``max_resume_attempts``
  consecutive unexpected-close resumptions without model output in between;
- errors arrive as close codes with a reason: ``ProviderError`` with the code
  and reason (1007 invalid argument, 1008 not found / policy, 1011 internal);
  a reason mentioning the API key gives ``status_code`` 401.

Config (``realtime.providers.google``): ``apiKey`` (``GEMINI_API_KEY``
fallback applied by the config layer), ``model``
(``gemini-2.5-flash-native-audio-preview-12-2025``), ``voice`` (``Kore``;
``RealtimeSetup.voice`` wins), ``language``, ``silenceDurationMs``,
``prefixPaddingMs``, ``startSensitivity`` / ``endSensitivity`` (``high`` /
``low``, or the full enum names), ``sessionResumption`` (true),
``contextWindowCompression`` (true), ``inputTranscription`` /
``outputTranscription`` (true), ``baseUrl`` / ``endpoint``.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import logging
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic.alias_generators import to_snake
from websockets.exceptions import ConnectionClosed

from voicecall.audio.g711 import mulaw_to_pcm16, pcm16_to_mulaw
from voicecall.audio.resample import StreamResampler, pcm16_bytes
from voicecall.errors import ConfigError, ProviderError
from voicecall.speech.realtime._ws import (
    CONNECT_TIMEOUT_S,
    DEFAULT_MAX_QUEUED_BYTES,
    READY_TIMEOUT_S,
    RealtimeWsSession,
    Reconnect,
    greeting_instructions,
    say_instructions,
)
from voicecall.speech.realtime.base import RealtimeCapabilities, RealtimeSetup, RealtimeTool
from voicecall.speech.stt._ws import ProviderConfig, ws_url

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_URL",
    "DEFAULT_VOICE",
    "GeminiLiveSession",
    "Provider",
    "create",
    "function_declaration",
    "gemini_schema",
    "supports_async_tools",
]

log = logging.getLogger("voicecall.realtime")

PROVIDER_ID = "google"
ENV_KEYS = ("GEMINI_API_KEY", "GOOGLE_GENERATIVE_AI_API_KEY")
DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"
LIVE_PATH = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
DEFAULT_URL = ws_url(DEFAULT_BASE_URL, LIVE_PATH)
DEFAULT_MODEL = "gemini-2.5-flash-native-audio-preview-12-2025"
DEFAULT_VOICE = "Kore"
INPUT_RATE = 16000
OUTPUT_RATE = 24000
TELEPHONY_RATE = 8000
INPUT_MIME = f"audio/pcm;rate={INPUT_RATE}"
START_SENSITIVITY = {"high": "START_SENSITIVITY_HIGH", "low": "START_SENSITIVITY_LOW"}
END_SENSITIVITY = {"high": "END_SENSITIVITY_HIGH", "low": "END_SENSITIVITY_LOW"}
# Unexpected closes after which the session is worth resuming with a handle.
RESUMABLE_CLOSE_CODES = frozenset({1001, 1006, 1008, 1011, 1012, 1013, 1014})
RETRYABLE_CLOSE_CODES = frozenset({1001, 1006, 1011, 1012, 1013, 1014})
DEFAULT_MAX_RESUME_ATTEMPTS = 3
_RATE = re.compile(r"rate=(\d+)")
# Gemini ``Schema`` fields kept from a JSON schema (everything else is dropped).
_SCHEMA_KEYS = ("format", "title", "description", "nullable", "enum", "maxItems", "minItems",
                "minProperties", "maxProperties", "minLength", "maxLength", "pattern",
                "example", "default", "minimum", "maximum", "propertyOrdering")


# --------------------------------------------------------------------------- tools


def gemini_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON schema as Gemini's OpenAPI-subset ``Schema`` (upper-case ``type``)."""
    out: dict[str, Any] = {}
    kind = schema.get("type")
    if isinstance(kind, list):
        names = [k for k in kind if isinstance(k, str) and k != "null"]
        if "null" in kind:
            out["nullable"] = True
        kind = names[0] if names else None
    if isinstance(kind, str):
        out["type"] = kind.upper()
    for key in _SCHEMA_KEYS:
        if key in schema:
            out[key] = schema[key]
    if "enum" in out:
        out["enum"] = [str(v) for v in out["enum"]]
        out.setdefault("type", "STRING")
        if out["type"] != "STRING":
            out["format"] = "enum"
            out["type"] = "STRING"
    props = schema.get("properties")
    if isinstance(props, Mapping):
        out["properties"] = {str(k): gemini_schema(v) for k, v in props.items()
                             if isinstance(v, Mapping)}
    required = schema.get("required")
    if isinstance(required, list):
        out["required"] = [str(r) for r in required]
    items = schema.get("items")
    if isinstance(items, Mapping):
        out["items"] = gemini_schema(items)
    any_of = schema.get("anyOf") or schema.get("oneOf")
    if isinstance(any_of, list):
        out["anyOf"] = [gemini_schema(s) for s in any_of if isinstance(s, Mapping)]
    return out


def function_declaration(tool: RealtimeTool, *, non_blocking: bool = False) -> dict[str, Any]:
    decl: dict[str, Any] = {"name": tool.name, "description": tool.description}
    params = tool.parameters or {}
    if params.get("properties"):
        decl["parameters"] = gemini_schema(params)
    if non_blocking:
        decl["behavior"] = "NON_BLOCKING"
    return decl


def supports_async_tools(model: str) -> bool:
    """NON_BLOCKING calls continued with ``willContinue``: not on Gemini 3.1 (no asynchronous
    function calling), nor the 3.8 "extended thinking" variant (it reportedly rejects
    ``scheduling`` and drops a call after an interim response)."""
    name = model.removeprefix("models/")
    return not name.startswith("gemini-3.1-") and "extended-thinking" not in name


# --------------------------------------------------------------------------- session


def _get(data: Mapping[str, Any], key: str) -> Any:
    """A field by its camelCase name, or its snake_case spelling."""
    value = data.get(key)
    if value is None:
        value = data.get(to_snake(key))
    return value


class GeminiLiveSession(RealtimeWsSession):
    provider = PROVIDER_ID

    def __init__(self, owner: Provider, call_id: str, setup: RealtimeSetup) -> None:
        super().__init__(call_id=call_id, secret=owner._api_key,
                         connect_timeout=owner.connect_timeout,
                         ready_timeout=owner.ready_timeout,
                         max_queued_bytes=owner.max_queued_bytes)
        self._owner = owner
        self.setup = setup
        self.handle: str | None = None          # the last resumable handle
        self.resumptions = 0                    # successful resumptions so far
        self.resumed_with: list[str] = []       # handles presented on resumption
        self._resume_failures = 0
        self._resuming = False
        self._in_rs = StreamResampler(TELEPHONY_RATE, INPUT_RATE)
        self._out_rs: StreamResampler | None = None
        self._out_rate = OUTPUT_RATE
        self._turns = itertools.count(1)
        self._turn_id: str | None = None
        self._turn_interrupted = False
        self._user_speaking = False
        self._user_text = ""
        self._model_text = ""
        self._call_names: dict[str, str] = {}
        self._cancelled: set[str] = set()
        # Tools declared NON_BLOCKING: their responses may continue (``willContinue``).
        self._non_blocking = {t.name for t in setup.tools
                              if t.interim_results and owner.capabilities.tool_continuation}
        self._call_ids = itertools.count(1)

    # ---------------------------------------------------------------- protocol

    def connect_target(self) -> tuple[str, Mapping[str, str]]:
        return self._owner.url, {"x-goog-api-key": self._owner._api_key}

    def setup_message(self) -> dict[str, Any]:
        o = self._owner
        speech: dict[str, Any] = {"voiceConfig": {"prebuiltVoiceConfig": {
            "voiceName": self.setup.voice or o.voice}}}
        if o.language:
            speech["languageCode"] = o.language
        setup: dict[str, Any] = {
            "model": o.model_name,
            "generationConfig": {"responseModalities": ["AUDIO"], "speechConfig": speech},
        }
        if self.setup.instructions:
            setup["systemInstruction"] = {"parts": [{"text": self.setup.instructions}]}
        if self.setup.tools:
            setup["tools"] = [{"functionDeclarations": [
                function_declaration(t, non_blocking=t.name in self._non_blocking)
                for t in self.setup.tools]}]
        activity: dict[str, Any] = {}
        if o.start_sensitivity:
            activity["startOfSpeechSensitivity"] = o.start_sensitivity
        if o.end_sensitivity:
            activity["endOfSpeechSensitivity"] = o.end_sensitivity
        if o.prefix_padding_ms is not None:
            activity["prefixPaddingMs"] = o.prefix_padding_ms
        if o.silence_duration_ms is not None:
            activity["silenceDurationMs"] = o.silence_duration_ms
        if activity:
            setup["realtimeInputConfig"] = {"automaticActivityDetection": activity}
        if o.input_transcription:
            setup["inputAudioTranscription"] = {}
        if o.output_transcription:
            setup["outputAudioTranscription"] = {}
        if o.session_resumption:
            setup["sessionResumption"] = {"handle": self.handle} if self.handle else {}
        if o.context_window_compression:
            setup["contextWindowCompression"] = {"slidingWindow": {}}
        return {"setup": setup}

    async def on_open(self) -> None:
        self._resuming = self.connections > 1
        if self._resuming and self.handle:
            self.resumed_with.append(self.handle)
        await self.send_now(self.setup_message())

    async def on_first_live(self) -> None:
        if self.setup.greeting:
            await self._user_turn(greeting_instructions("", self.setup.greeting))

    def encode_audio(self, mulaw: bytes) -> list[str]:
        pcm = self._in_rs.feed(mulaw_to_pcm16(mulaw))
        if pcm.size == 0:
            return []          # the resampler holds a little audio back; it comes next time
        data = base64.b64encode(pcm.astype("<i2").tobytes()).decode("ascii")
        return [json.dumps({"realtimeInput": {"audio": {"data": data, "mimeType": INPUT_MIME}}},
                           separators=(",", ":"))]

    def on_connection_lost(self, exc: ConnectionClosed) -> bool:
        code = exc.rcvd.code if exc.rcvd is not None else 1006
        if not (self._owner.session_resumption and self.handle and self.ready):
            return False
        if code not in RESUMABLE_CLOSE_CODES:
            return False
        if self._resume_failures >= self._owner.max_resume_attempts:
            return False
        self._resume_failures += 1
        self._reset_output()
        return True

    def _close_error(self, exc: ConnectionClosed) -> ProviderError:
        code = exc.rcvd.code if exc.rcvd is not None else 1006
        reason = exc.rcvd.reason if exc.rcvd is not None else ""
        what = "closed by the server" if exc.rcvd is not None else "lost"
        text = f"{self.provider}: connection {what} (code {code}" + \
            (f": {reason})" if reason else ")")
        if self._resuming and not self.live:
            text += " while resuming the session"
        status = 401 if "api key" in reason.lower() else None
        return ProviderError(self.error_text(text), retryable=code in RETRYABLE_CLOSE_CODES,
                             status_code=status)

    async def on_message(self, data: dict[str, Any]) -> None:
        if _get(data, "setupComplete") is not None:
            if self._resuming:
                self.resumptions += 1
                log.info("realtime.resumed", extra={"provider": self.provider,
                                                    "call_id": self.call_id,
                                                    "connection": self.connections})
            await self.mark_live()
        update = _get(data, "sessionResumptionUpdate")
        if isinstance(update, Mapping):
            handle = _get(update, "newHandle")
            if isinstance(handle, str) and handle and _get(update, "resumable") is not False:
                self.handle = handle
        content = _get(data, "serverContent")
        if isinstance(content, Mapping):
            self._on_content(content)
        tool_call = _get(data, "toolCall")
        if isinstance(tool_call, Mapping):
            self._on_tool_call(tool_call)
        cancelled = _get(data, "toolCallCancellation")
        if isinstance(cancelled, Mapping):
            ids = _get(cancelled, "ids")
            if isinstance(ids, list):
                self._cancelled.update(str(i) for i in ids)
                log.info("realtime.tool_calls_cancelled", extra={
                    "provider": self.provider, "call_id": self.call_id, "ids": ids})
        activity = _get(data, "voiceActivity")
        if isinstance(activity, Mapping):
            kind = str(_get(activity, "voiceActivityType") or "")
            if kind.endswith("START"):
                self._user_started()
            elif kind.endswith("END"):
                self._user_stopped()
        go_away = _get(data, "goAway")
        if go_away is not None:
            time_left = _get(go_away, "timeLeft") if isinstance(go_away, Mapping) else None
            if self._owner.session_resumption and self.handle:
                self._reset_output()
                raise Reconnect(f"goAway (timeLeft {time_left})")
            log.warning("realtime.go_away_without_handle", extra={
                "provider": self.provider, "call_id": self.call_id, "time_left": time_left})

    # ---------------------------------------------------------------- server content

    def _on_content(self, content: Mapping[str, Any]) -> None:
        transcription = _get(content, "inputTranscription")
        if isinstance(transcription, Mapping):
            text = _get(transcription, "text")
            if isinstance(text, str) and text:
                self._user_started()
                self._user_text += text
                self.emit("transcript", role="user", text=text, final=False)
            if _get(transcription, "finished") is True:
                self._flush_user_text()
        turn = _get(content, "modelTurn")
        if isinstance(turn, Mapping):
            parts = _get(turn, "parts")
            for part in parts if isinstance(parts, list) else []:
                if not isinstance(part, Mapping):
                    continue
                blob = _get(part, "inlineData")
                if isinstance(blob, Mapping):
                    self._on_model_audio(blob)
        transcription = _get(content, "outputTranscription")
        if isinstance(transcription, Mapping):
            text = _get(transcription, "text")
            if isinstance(text, str) and text:
                self._model_started()
                self._model_text += text
                self.emit("transcript", role="assistant", text=text, final=False,
                          item_id=self._turn_id)
        if _get(content, "interrupted") is True:
            self._turn_interrupted = True
            self._out_rs = None          # drop what the resampler still holds
            self.emit("interrupted", item_id=self._turn_id)
        if _get(content, "turnComplete") is True:
            self._end_turn()

    def _model_started(self) -> None:
        self._resume_failures = 0      # the resumed session produces output again
        if self._user_speaking:
            self._user_stopped()
        if self._turn_id is None:
            self._turn_id = f"gemini-turn-{next(self._turns)}"
            self._turn_interrupted = False

    def _on_model_audio(self, blob: Mapping[str, Any]) -> None:
        mime = str(_get(blob, "mimeType") or "")
        data = _get(blob, "data")
        if not isinstance(data, str) or not mime.startswith("audio/pcm"):
            return
        try:
            raw = base64.b64decode(data)
        except (binascii.Error, ValueError):
            log.debug("realtime.bad_audio", extra={"provider": self.provider})
            return
        match = _RATE.search(mime)
        rate = int(match.group(1)) if match else OUTPUT_RATE
        self._model_started()
        if self._out_rs is None or self._out_rate != rate:
            self._flush_output()
            self._out_rs = StreamResampler(rate, TELEPHONY_RATE)
            self._out_rate = rate
        pcm = self._out_rs.feed(pcm16_bytes(raw))
        if pcm.size:
            self.emit("audio", audio=pcm16_to_mulaw(pcm), item_id=self._turn_id)

    def _flush_output(self) -> None:
        rs, self._out_rs = self._out_rs, None
        if rs is None:
            return
        tail = rs.feed(np.zeros(0, dtype=np.int16), last=True)
        if tail.size:
            self.emit("audio", audio=pcm16_to_mulaw(tail), item_id=self._turn_id)

    def _end_turn(self) -> None:
        interrupted = self._turn_interrupted
        if interrupted:
            self._out_rs = None
        else:
            self._flush_output()
            self._flush_user_text()
        if self._model_text:
            self.emit("transcript", role="assistant", text=self._model_text.strip(), final=True,
                      item_id=self._turn_id)
            self._model_text = ""
        self.emit("response-done", text="interrupted" if interrupted else "completed",
                  item_id=self._turn_id)
        self._turn_id = None
        self._turn_interrupted = False

    def _reset_output(self) -> None:
        """A connection is being replaced: what it was saying is gone."""
        self._out_rs = None
        self._model_text = ""
        self._turn_id = None
        self._turn_interrupted = False

    def _user_started(self) -> None:
        if not self._user_speaking:
            self._user_speaking = True
            self.emit("speech-start")

    def _user_stopped(self) -> None:
        if self._user_speaking:
            self._user_speaking = False
            self.emit("speech-stop")

    def _flush_user_text(self) -> None:
        text, self._user_text = self._user_text.strip(), ""
        if text:
            self.emit("transcript", role="user", text=text, final=True)

    def _on_tool_call(self, tool_call: Mapping[str, Any]) -> None:
        calls = _get(tool_call, "functionCalls")
        for call in calls if isinstance(calls, list) else []:
            if not isinstance(call, Mapping):
                continue
            name = _get(call, "name")
            if not isinstance(name, str) or not name:
                continue
            self._model_started()
            call_id = _get(call, "id")
            if not isinstance(call_id, str) or not call_id:
                call_id = f"gemini-call-{next(self._call_ids)}"
            self._call_names[call_id] = name
            args = _get(call, "args")
            self.emit("tool-call", call_id=call_id, name=name,
                      arguments=json.dumps(args if isinstance(args, Mapping) else {}))

    # ---------------------------------------------------------------- public API

    async def _user_turn(self, text: str) -> None:
        await self.send_control({"clientContent": {
            "turns": [{"role": "user", "parts": [{"text": text}]}], "turnComplete": True}})

    async def send_tool_result(self, call_id: str, output: str, *, will_continue: bool = False,
                               respond: bool = True) -> None:
        name = self._call_names.get(call_id) if will_continue \
            else self._call_names.pop(call_id, None)
        non_blocking = name is not None and name in self._non_blocking
        if will_continue and not non_blocking:
            return      # a blocking call's first response is its final one
        if call_id in self._cancelled:
            if not will_continue:
                self._cancelled.discard(call_id)
            log.info("realtime.tool_result_dropped", extra={
                "provider": self.provider, "call_id": self.call_id, "tool_call": call_id})
            return
        try:
            value: Any = json.loads(output)
        except ValueError:
            value = output
        response: dict[str, Any] = {"id": call_id, "response": {"output": value}}
        if name:
            response["name"] = name
        if non_blocking:
            # Speak it once the caller is not talking; SILENT: answer without a reply.
            response["scheduling"] = "WHEN_IDLE" if respond else "SILENT"
            if will_continue:
                response["willContinue"] = True
        await self.send_control({"toolResponse": {"functionResponses": [response]}})

    async def truncate(self, item_id: str, played_ms: int) -> None:
        # Gemini assumes real-time playback and drops its own queued audio on ``interrupted``.
        return None

    async def say(self, text: str) -> None:
        await self._user_turn(say_instructions("", text))

    async def send_text(self, text: str) -> None:
        """A user text turn (e.g. caller keypresses); the model answers it."""
        await self._user_turn(text)


# --------------------------------------------------------------------------- provider


class Provider:
    """Gemini Live native audio, bridged to telephony mu-law 8 kHz."""

    name = PROVIDER_ID
    capabilities = RealtimeCapabilities(server_vad=True, truncation=False, resumption=True)

    def __init__(self, api_key: str, *, model: str = DEFAULT_MODEL, voice: str = DEFAULT_VOICE,
                 language: str | None = None, silence_duration_ms: int | None = None,
                 prefix_padding_ms: int | None = None, start_sensitivity: str | None = None,
                 end_sensitivity: str | None = None, session_resumption: bool = True,
                 context_window_compression: bool = True, input_transcription: bool = True,
                 output_transcription: bool = True, url: str = DEFAULT_URL,
                 connect_timeout: float = CONNECT_TIMEOUT_S,
                 ready_timeout: float = READY_TIMEOUT_S,
                 max_queued_bytes: int = DEFAULT_MAX_QUEUED_BYTES,
                 max_resume_attempts: int = DEFAULT_MAX_RESUME_ATTEMPTS) -> None:
        if not api_key:
            raise ValueError("api_key is required")
        self._api_key = api_key
        self.model = model
        self.capabilities = RealtimeCapabilities(
            server_vad=True, truncation=False, resumption=True,
            tool_continuation=supports_async_tools(model))
        self.voice = voice
        self.language = language
        self.silence_duration_ms = silence_duration_ms
        self.prefix_padding_ms = prefix_padding_ms
        self.start_sensitivity = _sensitivity(start_sensitivity, START_SENSITIVITY) \
            if start_sensitivity else None
        self.end_sensitivity = _sensitivity(end_sensitivity, END_SENSITIVITY) \
            if end_sensitivity else None
        self.session_resumption = session_resumption
        self.context_window_compression = context_window_compression
        self.input_transcription = input_transcription
        self.output_transcription = output_transcription
        self.url = url
        self.connect_timeout = connect_timeout
        self.ready_timeout = ready_timeout
        self.max_queued_bytes = max_queued_bytes
        self.max_resume_attempts = max_resume_attempts

    @property
    def model_name(self) -> str:
        return self.model if self.model.startswith(("models/", "projects/")) \
            else f"models/{self.model}"

    def __repr__(self) -> str:
        return f"<google realtime model={self.model!r}>"

    async def open(self, call_id: str, setup: RealtimeSetup) -> GeminiLiveSession:
        session = GeminiLiveSession(self, call_id, setup)
        session.start()
        return session


def _sensitivity(value: str, table: Mapping[str, str]) -> str:
    """``high``/``low`` (any case) or the full enum name -> the enum name."""
    key = value.strip().lower()
    if key in table:
        return table[key]
    upper = value.strip().upper()
    if upper in table.values():
        return upper
    raise ValueError(f"unsupported sensitivity {value!r} (allowed: high, low)")


def _choice(pc: ProviderConfig, key: str, table: Mapping[str, str]) -> str | None:
    value = pc.get_str(key)
    if value is None:
        return None
    try:
        return _sensitivity(value, table)
    except ValueError:
        raise ConfigError(f"unsupported value {value!r}", path=pc.path(key),
                          allowed=list(table)) from None


def _optional_int(pc: ProviderConfig, key: str, maximum: int) -> int | None:
    if pc.raw(key) is None:
        return None
    return pc.get_int(key, 0, minimum=0, maximum=maximum)


def create(cfg: Mapping[str, Any]) -> Provider:
    """The provider from its raw ``realtime.providers.google`` config."""
    pc = ProviderConfig(cfg, PROVIDER_ID, section="realtime")
    api_key = pc.api_key(ENV_KEYS)
    return Provider(
        api_key,
        model=pc.get_str("model", DEFAULT_MODEL) or DEFAULT_MODEL,
        voice=pc.get_str("voice", DEFAULT_VOICE) or DEFAULT_VOICE,
        language=pc.get_str("language"),
        silence_duration_ms=_optional_int(pc, "silenceDurationMs", 10_000),
        prefix_padding_ms=_optional_int(pc, "prefixPaddingMs", 10_000),
        start_sensitivity=_choice(pc, "startSensitivity", START_SENSITIVITY),
        end_sensitivity=_choice(pc, "endSensitivity", END_SENSITIVITY),
        session_resumption=pc.get_bool("sessionResumption", True),
        context_window_compression=pc.get_bool("contextWindowCompression", True),
        input_transcription=pc.get_bool("inputTranscription", True),
        output_transcription=pc.get_bool("outputTranscription", True),
        url=pc.url(DEFAULT_BASE_URL, LIVE_PATH, ()),
    )


if TYPE_CHECKING:      # the classes satisfy the contract's Protocols (checked by mypy)
    from voicecall.speech.realtime.base import RealtimeProvider, RealtimeSession

    def _provider(p: Provider) -> RealtimeProvider:
        return p

    def _session(s: GeminiLiveSession) -> RealtimeSession:
        return s
