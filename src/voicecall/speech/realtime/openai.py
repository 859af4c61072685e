"""OpenAI Realtime speech-to-speech (GA interface) as a ``RealtimeProvider``.

Wire protocol (``ai-speech-apis.md`` §1, ``openclaw-voice-call.md`` §7.2):

- ``wss://api.openai.com/v1/realtime?model=<model>`` with
  ``Authorization: Bearer <key>``; **no** ``OpenAI-Beta`` header (the beta
  shape is switched off: the server answers ``beta_api_shape_disabled``);
- first message ``session.update`` with ``session.type: "realtime"``,
  ``output_modalities: ["audio"]``, instructions, and the nested GA audio
  settings: ``audio.input.format`` and ``audio.output.format`` both
  ``{"type": "audio/pcmu"}`` (telephony G.711 mu-law passes through both ways,
  no resampling), ``audio.input.turn_detection`` server VAD
  (``threshold``, ``prefix_padding_ms``, ``silence_duration_ms``,
  ``create_response``, ``interrupt_response``), ``audio.input.transcription``
  when caller transcripts are on, ``audio.output.voice``; tools as flat
  function tools with ``tool_choice: "auto"``. The session is ready on
  ``session.updated``; audio queued until then is flushed in order;
- caller audio as ``input_audio_buffer.append`` (base64 mu-law); the server
  commits turns itself (server VAD) and starts a response;
- server events, GA names and the old beta names both accepted:
  ``input_audio_buffer.speech_started`` / ``speech_stopped`` ->
  ``speech-start`` / ``speech-stop``; ``response.output_audio.delta``
  (``response.audio.delta``) -> ``audio`` with the output ``item_id``;
  ``response.output_audio_transcript.delta`` / ``.done``
  (``response.audio_transcript.*``, and ``response.output_text.*`` /
  ``response.text.*``) -> assistant ``transcript`` (``final`` on done);
  ``conversation.item.input_audio_transcription.delta`` / ``.completed`` ->
  user ``transcript``; ``response.function_call_arguments.done`` ->
  ``tool-call``; ``response.done`` -> ``response-done`` (``text`` is the
  response status: ``completed``, ``cancelled``, ...); ``error`` -> ``error``
  (fatal codes and any error before ready end the session);
- barge-in: the server cancels its response itself (``interrupt_response``);
  the session reports ``speech-start`` and the bridge calls ``truncate`` with
  what the caller actually heard -> ``conversation.item.truncate``
  ``{item_id, content_index: 0, audio_end_ms}`` (clamped to the audio
  received for that item: a larger value is a server error). This provider
  never emits ``interrupted``;
- ``send_tool_result`` -> ``conversation.item.create`` with a
  ``function_call_output``, then ``response.create`` (held back while a
  response is still running, and while other calls of the same response are
  unanswered, so one ``response.create`` follows all outputs; ``respond=False``:
  no ``response.create``). Continuation: a ``call_id`` takes one
  ``function_call_output`` only, so an interim result (``will_continue``) is
  that output (plus ``response.create``: the model says it is checking) and
  the final result follows as a ``system`` message naming the call, then
  ``response.create``;
  ``say``/greeting -> ``response.create`` with instructions (also held back
  while a response runs, to avoid ``conversation_already_has_active_response``).

Config (``realtime.providers.openai``): ``apiKey`` (or ``OPENAI_API_KEY``),
``model`` (``gpt-realtime``), ``voice`` (``alloy``; ``RealtimeSetup.voice``
wins), ``baseUrl`` (``https://api.openai.com/v1``, ``/realtime`` appended) or
a full ``endpoint``, ``silenceDurationMs`` (500), ``vadThreshold`` /
``threshold`` (0.5), ``prefixPaddingMs`` (300), ``interruptResponse``
(true), ``inputTranscription`` (true) with ``transcriptionModel``
(``gpt-4o-mini-transcribe``) and ``language``, ``noiseReduction``
(``near_field`` / ``far_field``; off when unset), ``speed``.
"""

from __future__ import annotations

import base64
import itertools
import json
import logging
from collections import OrderedDict, deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from websockets.exceptions import ConnectionClosed

from voicecall.errors import ConfigError, ProviderError
from voicecall.speech.realtime._ws import (
    CONNECT_TIMEOUT_S,
    DEFAULT_MAX_QUEUED_BYTES,
    READY_TIMEOUT_S,
    RealtimeWsSession,
    greeting_instructions,
    say_instructions,
)
from voicecall.speech.realtime.base import (
    RealtimeCapabilities,
    RealtimeSetup,
    RealtimeTool,
)
from voicecall.speech.stt._ws import ProviderConfig, ws_url

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_URL",
    "DEFAULT_VOICE",
    "OpenAIRealtimeSession",
    "Provider",
    "continued_result_text",
    "create",
    "function_tool",
]

log = logging.getLogger("voicecall.realtime")

PROVIDER_ID = "openai"
ENV_KEYS = ("OPENAI_API_KEY",)
DEFAULT_BASE_URL = "https://api.openai.com/v1"
REALTIME_PATH = "/realtime"
DEFAULT_MODEL = "gpt-realtime"
DEFAULT_VOICE = "alloy"
DEFAULT_TRANSCRIPTION_MODEL = "gpt-4o-mini-transcribe"
DEFAULT_SILENCE_DURATION_MS = 500
DEFAULT_VAD_THRESHOLD = 0.5
DEFAULT_PREFIX_PADDING_MS = 300
DEFAULT_URL = ws_url(DEFAULT_BASE_URL, REALTIME_PATH, (("model", DEFAULT_MODEL),))
AUDIO_FORMAT = {"type": "audio/pcmu"}       # G.711 mu-law 8 kHz, both directions
MULAW_BYTES_PER_MS = 8
NOISE_REDUCTION = ("near_field", "far_field")
# The server ends the session after these.
FATAL_CODES = frozenset({"invalid_api_key", "session_expired", "beta_api_shape_disabled",
                         "insufficient_quota"})
# Harmless races (pipecat treats these two as non-fatal and silent too).
BENIGN_CODES = frozenset({"response_cancel_not_active", "conversation_already_has_active_response"})
_MAX_TRACKED_ITEMS = 64

AUDIO_DELTA = frozenset({"response.output_audio.delta", "response.audio.delta"})
TRANSCRIPT_DELTA = frozenset({"response.output_audio_transcript.delta",
                              "response.audio_transcript.delta",
                              "response.output_text.delta", "response.text.delta"})
TRANSCRIPT_DONE = frozenset({"response.output_audio_transcript.done",
                             "response.audio_transcript.done",
                             "response.output_text.done", "response.text.done"})


def function_tool(tool: RealtimeTool) -> dict[str, Any]:
    params = dict(tool.parameters) if tool.parameters else {"type": "object", "properties": {}}
    return {"type": "function", "name": tool.name, "description": tool.description,
            "parameters": params}


class OpenAIRealtimeSession(RealtimeWsSession):
    provider = PROVIDER_ID

    def __init__(self, owner: Provider, call_id: str, setup: RealtimeSetup) -> None:
        super().__init__(call_id=call_id, secret=owner._api_key,
                         connect_timeout=owner.connect_timeout,
                         ready_timeout=owner.ready_timeout,
                         max_queued_bytes=owner.max_queued_bytes)
        self._owner = owner
        self.setup = setup
        self._ids = itertools.count(1)
        self._response_active = False
        self._response_create_event: str | None = None   # our last response.create's event_id
        self._deferred: deque[dict[str, Any]] = deque()   # response.create waiting its turn
        self._open_calls: set[str] = set()                # tool calls not yet answered
        self._call_names: dict[str, str] = {}             # tool calls not finally answered
        self._continuing: set[str] = set()                # interim output sent, final due
        self._seen_calls: set[str] = set()
        self._item_bytes: OrderedDict[str, int] = OrderedDict()  # mu-law received per item
        self._user_text: dict[str, str] = {}

    # ---------------------------------------------------------------- protocol

    def connect_target(self) -> tuple[str, Mapping[str, str]]:
        return self._owner.url, {"Authorization": f"Bearer {self._owner._api_key}"}

    def _event_id(self) -> str:
        return f"vc_{next(self._ids):05d}"

    def session_update(self) -> dict[str, Any]:
        o = self._owner
        audio_in: dict[str, Any] = {
            "format": dict(AUDIO_FORMAT),
            "turn_detection": {
                "type": "server_vad",
                "threshold": o.vad_threshold,
                "prefix_padding_ms": o.prefix_padding_ms,
                "silence_duration_ms": o.silence_duration_ms,
                "create_response": True,
                "interrupt_response": o.interrupt_response,
            },
        }
        if o.input_transcription:
            transcription: dict[str, Any] = {"model": o.transcription_model}
            if o.language:
                transcription["language"] = o.language
            audio_in["transcription"] = transcription
        if o.noise_reduction:
            audio_in["noise_reduction"] = {"type": o.noise_reduction}
        audio_out: dict[str, Any] = {"format": dict(AUDIO_FORMAT),
                                     "voice": self.setup.voice or o.voice}
        if o.speed is not None:
            audio_out["speed"] = o.speed
        session: dict[str, Any] = {
            "type": "realtime",
            "instructions": self.setup.instructions,
            "output_modalities": ["audio"],
            "audio": {"input": audio_in, "output": audio_out},
        }
        if self.setup.tools:
            session["tools"] = [function_tool(t) for t in self.setup.tools]
            session["tool_choice"] = "auto"
        return {"type": "session.update", "event_id": self._event_id(), "session": session}

    async def on_open(self) -> None:
        await self.send_now(self.session_update())

    async def on_first_live(self) -> None:
        if self.setup.greeting:
            await self._request_response(
                {"instructions": greeting_instructions(self.setup.instructions,
                                                       self.setup.greeting)})

    def encode_audio(self, mulaw: bytes) -> list[str]:
        return [json.dumps({"type": "input_audio_buffer.append",
                            "audio": base64.b64encode(mulaw).decode("ascii")})]

    async def on_message(self, data: dict[str, Any]) -> None:
        kind = data.get("type")
        if not isinstance(kind, str):
            return
        if kind in AUDIO_DELTA:
            self._on_audio(data)
        elif kind in TRANSCRIPT_DELTA:
            delta = data.get("delta")
            if isinstance(delta, str) and delta:
                self.emit("transcript", role="assistant", text=delta, final=False,
                          item_id=_str(data.get("item_id")))
        elif kind in TRANSCRIPT_DONE:
            text = data.get("transcript", data.get("text"))
            if isinstance(text, str):
                self.emit("transcript", role="assistant", text=text, final=True,
                          item_id=_str(data.get("item_id")))
        elif kind == "input_audio_buffer.speech_started":
            self.emit("speech-start")
        elif kind == "input_audio_buffer.speech_stopped":
            self.emit("speech-stop")
        elif kind == "conversation.item.input_audio_transcription.delta":
            item = str(data.get("item_id", ""))
            delta = data.get("delta")
            if isinstance(delta, str) and delta:
                self._user_text[item] = self._user_text.get(item, "") + delta
                self.emit("transcript", role="user", text=delta, final=False, item_id=item)
        elif kind == "conversation.item.input_audio_transcription.completed":
            item = str(data.get("item_id", ""))
            self._user_text.pop(item, None)
            transcript = data.get("transcript")
            if isinstance(transcript, str) and transcript.strip():
                self.emit("transcript", role="user", text=transcript.strip(), final=True,
                          item_id=item)
        elif kind == "conversation.item.input_audio_transcription.failed":
            self._user_text.pop(str(data.get("item_id", "")), None)
            log.info("realtime.transcription_failed", extra={
                "provider": self.provider, "call_id": self.call_id,
                "why": self.describe_error(data.get("error"), "transcription failed")})
        elif kind == "response.function_call_arguments.done":
            self._on_tool_call(data)
        elif kind == "response.created":
            self._response_active = True
            self._response_create_event = None
        elif kind == "response.done":
            await self._on_response_done(data)
        elif kind == "session.updated":
            await self.mark_live()
        elif kind == "error":
            await self._on_error(data)
        elif kind == "conversation.item.truncated":
            log.debug("realtime.truncated", extra={"provider": self.provider,
                                                   "call_id": self.call_id})

    # ---------------------------------------------------------------- server events

    def _on_audio(self, data: dict[str, Any]) -> None:
        delta = data.get("delta")
        if not isinstance(delta, str) or not delta:
            return
        audio = base64.b64decode(delta)
        item = _str(data.get("item_id"))
        if item is not None:
            self._item_bytes[item] = self._item_bytes.get(item, 0) + len(audio)
            self._item_bytes.move_to_end(item)
            while len(self._item_bytes) > _MAX_TRACKED_ITEMS:
                self._item_bytes.popitem(last=False)
        self.emit("audio", audio=audio, item_id=item)

    def _on_tool_call(self, data: dict[str, Any]) -> None:
        call_id = _str(data.get("call_id"))
        name = _str(data.get("name"))
        if call_id is None or name is None or call_id in self._seen_calls:
            return
        self._seen_calls.add(call_id)
        self._open_calls.add(call_id)
        self._call_names[call_id] = name
        arguments = data.get("arguments")
        self.emit("tool-call", call_id=call_id, name=name,
                  arguments=arguments if isinstance(arguments, str) else "{}",
                  item_id=_str(data.get("item_id")))

    async def _on_response_done(self, data: dict[str, Any]) -> None:
        self._response_active = False
        self._response_create_event = None
        response = data.get("response")
        status = response.get("status") if isinstance(response, dict) else None
        self.emit("response-done", text=status if isinstance(status, str) else "")
        await self._send_deferred()

    async def _on_error(self, data: dict[str, Any]) -> None:
        err = data.get("error")
        code = err.get("code") if isinstance(err, dict) else None
        kind = err.get("type") if isinstance(err, dict) else None
        echoed = err.get("event_id") if isinstance(err, dict) else None
        if echoed is not None and echoed == self._response_create_event:
            # Our response.create was refused: do not wait for a response.done.
            self._response_active = False
            self._response_create_event = None
        text = self.describe_error(err, "error")
        if not self.ready or code in FATAL_CODES:
            # Before ``session.updated`` an error means our session was refused.
            status = 401 if code == "invalid_api_key" else 429 if code == "insufficient_quota" \
                else None
            raise ProviderError(text, retryable=kind == "server_error" or code == "session_expired",
                                status_code=status)
        if code in BENIGN_CODES:
            log.debug("realtime.benign_error", extra={"provider": self.provider,
                                                      "call_id": self.call_id, "why": text})
            if not self._response_active:
                await self._send_deferred()
            return
        log.warning("realtime.provider_error", extra={"provider": self.provider,
                                                      "call_id": self.call_id, "why": text})
        self.emit("error", text=text)

    # ---------------------------------------------------------------- responses

    async def _request_response(self, response: dict[str, Any] | None = None) -> None:
        """``response.create`` now, or once the running response is done (in order)."""
        payload = dict(response or {})
        if payload or not any(not p for p in self._deferred):
            self._deferred.append(payload)
        await self._send_deferred()

    async def _send_response_create(self, payload: dict[str, Any]) -> None:
        event_id = self._event_id()
        message: dict[str, Any] = {"type": "response.create", "event_id": event_id}
        if payload:
            message["response"] = payload
        self._response_active = True
        self._response_create_event = event_id
        await self.send_control(message)

    async def _send_deferred(self) -> None:
        if self._response_active or not self._deferred:
            return
        if self._open_calls and not self._deferred[0]:
            return      # the plain follow-up waits for the remaining tool outputs
        await self._send_response_create(self._deferred.popleft())

    # ---------------------------------------------------------------- public API

    async def send_tool_result(self, call_id: str, output: str, *, will_continue: bool = False,
                               respond: bool = True) -> None:
        if call_id in self._continuing:
            if will_continue:
                return          # the call already has its interim output
            # A call_id takes one function_call_output: the final result is a message.
            self._continuing.discard(call_id)
            name = self._call_names.pop(call_id, "tool")
            await self.send_control({
                "type": "conversation.item.create", "event_id": self._event_id(),
                "item": {"type": "message", "role": "system", "content": [
                    {"type": "input_text", "text": continued_result_text(name, call_id,
                                                                         output)}]}})
        else:
            self._open_calls.discard(call_id)
            if will_continue:
                self._continuing.add(call_id)
            else:
                self._call_names.pop(call_id, None)
            await self.send_control({
                "type": "conversation.item.create", "event_id": self._event_id(),
                "item": {"type": "function_call_output", "call_id": call_id, "output": output}})
        # Every output first, then one response.create (§1.7): ``_send_deferred`` holds the
        # follow-up while other calls are unanswered or a response is still running.
        if respond:
            await self._request_response()
        else:
            await self._send_deferred()

    async def truncate(self, item_id: str, played_ms: int) -> None:
        received_ms = self._item_bytes.get(item_id)
        audio_end_ms = max(0, int(played_ms))
        if received_ms is not None:
            audio_end_ms = min(audio_end_ms, received_ms // MULAW_BYTES_PER_MS)
        await self.send_control({"type": "conversation.item.truncate",
                                 "event_id": self._event_id(), "item_id": item_id,
                                 "content_index": 0, "audio_end_ms": audio_end_ms})

    async def say(self, text: str) -> None:
        await self._request_response(
            {"instructions": say_instructions(self.setup.instructions, text)})

    async def send_text(self, text: str) -> None:
        """A user text turn (e.g. caller keypresses), then a response to it."""
        await self.send_control({
            "type": "conversation.item.create", "event_id": self._event_id(),
            "item": {"type": "message", "role": "user",
                     "content": [{"type": "input_text", "text": text}]}})
        await self._request_response()

    def on_connection_lost(self, exc: ConnectionClosed) -> bool:
        return False        # OpenAI sessions cannot be resumed


def continued_result_text(name: str, call_id: str, output: str) -> str:
    """The final result of a call whose function output was an interim status."""
    return (f"Final result of your earlier {name} call ({call_id}); its function output was "
            f"only an interim status. Answer the caller with it now:\n{output}")


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


class Provider:
    """OpenAI Realtime (GA) speech-to-speech, mu-law end to end."""

    name = PROVIDER_ID
    capabilities = RealtimeCapabilities(server_vad=True, truncation=True, resumption=False,
                                        tool_continuation=True)

    def __init__(self, api_key: str, *, model: str = DEFAULT_MODEL, voice: str = DEFAULT_VOICE,
                 silence_duration_ms: int = DEFAULT_SILENCE_DURATION_MS,
                 vad_threshold: float = DEFAULT_VAD_THRESHOLD,
                 prefix_padding_ms: int = DEFAULT_PREFIX_PADDING_MS,
                 interrupt_response: bool = True, input_transcription: bool = True,
                 transcription_model: str = DEFAULT_TRANSCRIPTION_MODEL,
                 language: str | None = None, noise_reduction: str | None = None,
                 speed: float | None = None, url: str | None = None,
                 connect_timeout: float = CONNECT_TIMEOUT_S,
                 ready_timeout: float = READY_TIMEOUT_S,
                 max_queued_bytes: int = DEFAULT_MAX_QUEUED_BYTES) -> None:
        if not api_key:
            raise ValueError("api_key is required")
        self._api_key = api_key
        self.model = model
        self.voice = voice
        self.silence_duration_ms = silence_duration_ms
        self.vad_threshold = vad_threshold
        self.prefix_padding_ms = prefix_padding_ms
        self.interrupt_response = interrupt_response
        self.input_transcription = input_transcription
        self.transcription_model = transcription_model
        self.language = language
        self.noise_reduction = noise_reduction
        self.speed = speed
        self.url = url or ws_url(DEFAULT_BASE_URL, REALTIME_PATH, (("model", model),))
        self.connect_timeout = connect_timeout
        self.ready_timeout = ready_timeout
        self.max_queued_bytes = max_queued_bytes

    def __repr__(self) -> str:
        return f"<openai realtime model={self.model!r}>"

    async def open(self, call_id: str, setup: RealtimeSetup) -> OpenAIRealtimeSession:
        session = OpenAIRealtimeSession(self, call_id, setup)
        session.start()
        return session


def create(cfg: Mapping[str, Any]) -> Provider:
    """The provider from its raw ``realtime.providers.openai`` config."""
    pc = ProviderConfig(cfg, PROVIDER_ID, section="realtime")
    api_key = pc.api_key(ENV_KEYS)
    model = pc.get_str("model", DEFAULT_MODEL) or DEFAULT_MODEL
    noise = pc.get_str("noiseReduction")
    if noise is not None:
        noise = pc.get_choice("noiseReduction", noise, NOISE_REDUCTION)
    threshold_key = "vadThreshold" if pc.raw("vadThreshold") is not None else "threshold"
    speed = pc.raw("speed")
    if speed is not None:
        speed = pc.get_number("speed", 1.0, minimum=0.25, maximum=1.5)
    transcription = pc.raw("inputTranscription")
    if transcription is not None and not isinstance(transcription, bool):
        raise ConfigError("must be true or false", path=pc.path("inputTranscription"))
    return Provider(
        api_key,
        model=model,
        voice=pc.get_str("voice", DEFAULT_VOICE) or DEFAULT_VOICE,
        silence_duration_ms=pc.get_int("silenceDurationMs", DEFAULT_SILENCE_DURATION_MS,
                                       minimum=0, maximum=10_000),
        vad_threshold=pc.get_number(threshold_key, DEFAULT_VAD_THRESHOLD,
                                    minimum=0.0, maximum=1.0),
        prefix_padding_ms=pc.get_int("prefixPaddingMs", DEFAULT_PREFIX_PADDING_MS,
                                     minimum=0, maximum=10_000),
        interrupt_response=pc.get_bool("interruptResponse", True),
        input_transcription=pc.get_bool("inputTranscription", True),
        transcription_model=pc.get_str("transcriptionModel", DEFAULT_TRANSCRIPTION_MODEL)
        or DEFAULT_TRANSCRIPTION_MODEL,
        language=pc.get_str("language"),
        noise_reduction=noise,
        speed=speed,
        url=pc.url(DEFAULT_BASE_URL, REALTIME_PATH, (("model", model),)),
    )


if TYPE_CHECKING:      # the classes satisfy the contract's Protocols (checked by mypy)
    from voicecall.speech.realtime.base import RealtimeProvider, RealtimeSession

    def _provider(p: Provider) -> RealtimeProvider:
        return p

    def _session(s: OpenAIRealtimeSession) -> RealtimeSession:
        return s
