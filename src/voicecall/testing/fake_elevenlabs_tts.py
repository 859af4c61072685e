"""A fake ElevenLabs streaming TTS endpoint on a real loopback socket.

``POST /v1/text-to-speech/{voice_id}/stream?output_format=...`` (and the
non-``/stream`` twin) with the ``xi-api-key`` header, answering in the
genuine shapes: ``{"detail": {"status", "message"}}`` for auth and business
errors, FastAPI-style ``{"detail": [{"type", "loc", "msg"}]}`` 422s for
malformed bodies and query parameters, and a chunked 200 body of raw audio:
``ulaw_8000`` (G.711 mu-law, 8000 bytes a second) or ``pcm_<rate>`` (16-bit
LE, no header). The audio is a deterministic 440 Hz tone lasting
``ms_per_char`` per character of ``text`` (divided by
``voice_settings.speed``)::

    async with FakeElevenLabsTTS(api_key="xi-test") as srv:
        tts = elevenlabs.create({"apiKey": "xi-test", "baseUrl": srv.base_url})
        ...
        assert srv.requests[0].query["output_format"] == "ulaw_8000"

Pacing (``first_byte_delay``, ``chunk_ms``, ``chunk_delay``), faults
(``fail_next``, ``cut_next``) and request records with timings work as in
``fake_openai_tts``, whose loopback machinery this module shares.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from starlette.requests import Request
from starlette.routing import Route

from voicecall.audio.g711 import pcm16_to_mulaw
from voicecall.testing.fake_openai_tts import FakeAudioServer, RecordedRequest, tone_pcm16

__all__ = ["ELEVENLABS_MODELS", "ELEVENLABS_OUTPUT_FORMATS", "FakeElevenLabsTTS"]

# Model id -> maximum characters per request.
ELEVENLABS_MODELS = {
    "eleven_flash_v2_5": 40000, "eleven_flash_v2": 30000, "eleven_turbo_v2_5": 40000,
    "eleven_turbo_v2": 30000, "eleven_multilingual_v2": 10000, "eleven_v3": 5000,
    "eleven_monolingual_v1": 10000, "eleven_multilingual_v1": 10000,
}
ELEVENLABS_OUTPUT_FORMATS = (
    "mp3_22050_32", "mp3_24000_48", "mp3_44100_32", "mp3_44100_64", "mp3_44100_96",
    "mp3_44100_128", "mp3_44100_192", "pcm_8000", "pcm_16000", "pcm_22050", "pcm_24000",
    "pcm_32000", "pcm_44100", "pcm_48000", "ulaw_8000", "alaw_8000", "opus_48000_32",
    "opus_48000_64", "opus_48000_96", "opus_48000_128", "opus_48000_192",
)
_VOICE_ID = re.compile(r"^[A-Za-z0-9]{20}$")
_SETTINGS_RANGES = {"stability": (0.0, 1.0), "similarity_boost": (0.0, 1.0),
                    "style": (0.0, 1.0), "speed": (0.7, 1.2)}
_FAULT_STATUS = {400: "invalid_request", 401: "invalid_api_key", 404: "not_found",
                 422: "invalid_request", 429: "too_many_concurrent_requests",
                 500: "internal_server_error", 503: "service_unavailable"}


def _detail(status: str, message: str) -> dict[str, Any]:
    return {"detail": {"status": status, "message": message}}


def _invalid(kind: str, loc: list[str], msg: str, value: Any = None) -> dict[str, Any]:
    return {"detail": [{"type": kind, "loc": loc, "msg": msg, "input": value}]}


class FakeElevenLabsTTS(FakeAudioServer):
    thread_name = "fake-elevenlabs-tts"

    def __init__(self, *, api_key: str | None = "xi-fake-elevenlabs",
                 voices: set[str] | None = None, ms_per_char: float = 50.0,
                 chunk_ms: float = 100.0, first_byte_delay: float = 0.0,
                 chunk_delay: float = 0.0) -> None:
        routes = [Route("/v1/text-to-speech/{voice_id}/stream", self._speech, methods=["POST"]),
                  Route("/v1/text-to-speech/{voice_id}", self._speech, methods=["POST"])]
        self.voices = voices
        super().__init__(routes, api_key=api_key, ms_per_char=ms_per_char, chunk_ms=chunk_ms,
                         first_byte_delay=first_byte_delay, chunk_delay=chunk_delay)

    def reset(self, *, api_key: str | None = "xi-fake-elevenlabs", voices: set[str] | None = None,
              ms_per_char: float = 50.0, chunk_ms: float = 100.0,
              first_byte_delay: float = 0.0, chunk_delay: float = 0.0) -> FakeElevenLabsTTS:
        """Forget faults and recorded requests; configure afresh (server keeps running)."""
        self.voices = voices
        self._configure(api_key=api_key, ms_per_char=ms_per_char, chunk_ms=chunk_ms,
                        first_byte_delay=first_byte_delay, chunk_delay=chunk_delay)
        return self

    @property
    def base_url(self) -> str:
        """What a client uses as ``baseUrl`` (ElevenLabs' has no ``/v1``)."""
        return f"http://127.0.0.1:{self.port}"

    def expected_bytes(self, text: str, output_format: str = "ulaw_8000",
                       speed: float = 1.0) -> int:
        rate = int(output_format.split("_")[1])
        samples = int(round(rate * self.audio_ms(text, speed) / 1000.0))
        return samples if output_format == "ulaw_8000" else samples * 2

    async def _speech(self, request: Request) -> Any:
        record = await self._record(request)
        voice_id = request.path_params["voice_id"]
        denied = self._check_auth(record)
        if denied is not None:
            return self._error(record, 401, denied)
        invalid = self._validate(record, voice_id)
        if invalid is not None:
            return self._error(record, *invalid)
        fault = self._take_fault()
        if fault is not None and fault.kind == "status":
            status = _FAULT_STATUS.get(fault.status, "error")
            message = fault.message or {
                429: "Too many concurrent requests for your subscription.",
            }.get(fault.status, "An internal error occurred while generating audio.")
            headers = {"retry-after": f"{fault.retry_after:g}"} if fault.retry_after else None
            return self._error(record, fault.status, _detail(status, message), headers)
        body: dict[str, Any] = record.json
        if self.first_byte_delay:
            await asyncio.sleep(self.first_byte_delay)
        fmt = record.query.get("output_format", "mp3_44100_128")
        rate = int(fmt.split("_")[1])
        settings = body.get("voice_settings") or {}
        speed = float(settings.get("speed") or 1.0)
        pcm = tone_pcm16(self.audio_ms(body["text"], speed), rate)
        if fmt == "ulaw_8000":
            audio, per_ms, media, width = pcm16_to_mulaw(pcm), rate / 1000, "audio/basic", 1
        else:
            audio, per_ms, media, width = (pcm.astype("<i2").tobytes(), rate * 2 / 1000,
                                           "application/octet-stream", 2)
        cut_after = int(fault.after_ms * rate / 1000) * width if fault is not None else None
        headers = {"character-cost": str(len(body["text"])),
                   "request-id": f"req_fake{len(self.requests)}"}
        return self._paced(record, self._chunked(audio, per_ms, width), media,
                           cut_after=cut_after, headers=headers)

    def _check_auth(self, record: RecordedRequest) -> dict[str, Any] | None:
        if self.api_key is None:
            return None
        key = record.headers.get("xi-api-key")
        if not key:
            return _detail("needs_authorization",
                           "Neither authorization header nor xi-api-key received, please "
                           "provide one.")
        if key != self.api_key:
            return _detail("invalid_api_key", "Invalid API key")
        return None

    def _validate(self, record: RecordedRequest,
                  voice_id: str) -> tuple[int, dict[str, Any]] | None:
        query = record.query
        fmt = query.get("output_format", "mp3_44100_128")
        if fmt not in ELEVENLABS_OUTPUT_FORMATS:
            return 422, _invalid("enum", ["query", "output_format"],
                                 "Input should be one of " + ", ".join(ELEVENLABS_OUTPUT_FORMATS),
                                 fmt)
        latency = query.get("optimize_streaming_latency")
        if latency is not None and latency not in ("0", "1", "2", "3", "4"):
            return 422, _invalid("int_parsing", ["query", "optimize_streaming_latency"],
                                 "Input should be an integer between 0 and 4", latency)
        logging_flag = query.get("enable_logging")
        if logging_flag is not None and logging_flag not in ("true", "false"):
            return 422, _invalid("bool_parsing", ["query", "enable_logging"],
                                 "Input should be a valid boolean", logging_flag)
        body = record.json
        if not isinstance(body, dict):
            return 422, _invalid("model_attributes_type", ["body"],
                                 "Input should be a valid dictionary or object", None)
        text = body.get("text")
        if not isinstance(text, str):
            return 422, _invalid("missing" if text is None else "string_type", ["body", "text"],
                                 "Field required" if text is None else
                                 "Input should be a valid string", text)
        if not text.strip():
            return 400, _detail("invalid_text", "Text must not be empty.")
        model = body.get("model_id", "eleven_multilingual_v2")
        if model not in ELEVENLABS_MODELS:
            return 400, _detail("model_not_found", f"A model with model ID {model} does not exist.")
        if len(text) > ELEVENLABS_MODELS[model]:
            return 400, _detail("max_character_limit_exceeded",
                                f"Text is too long for {model}: {len(text)} characters, maximum "
                                f"{ELEVENLABS_MODELS[model]}.")
        if model == "eleven_v3" and ("previous_text" in body or "next_text" in body):
            return 400, _detail("invalid_request",
                                "previous_text and next_text are not supported by eleven_v3.")
        settings = body.get("voice_settings")
        if settings is not None:
            if not isinstance(settings, dict):
                return 422, _invalid("model_type", ["body", "voice_settings"],
                                     "Input should be a valid dictionary", settings)
            for name, (low, high) in _SETTINGS_RANGES.items():
                value = settings.get(name)
                if value is None:
                    continue
                if isinstance(value, bool) or not isinstance(value, int | float) \
                        or not low <= value <= high:
                    return 422, _invalid("value_error", ["body", "voice_settings", name],
                                         f"Value must be between {low} and {high}", value)
            boost = settings.get("use_speaker_boost")
            if boost is not None and not isinstance(boost, bool):
                return 422, _invalid("bool_type", ["body", "voice_settings", "use_speaker_boost"],
                                     "Input should be a valid boolean", boost)
        seed = body.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)
                                 or not 0 <= seed <= 4294967295):
            return 422, _invalid("value_error", ["body", "seed"],
                                 "Input should be between 0 and 4294967295", seed)
        normalization = body.get("apply_text_normalization")
        if normalization is not None and normalization not in ("auto", "on", "off"):
            return 422, _invalid("enum", ["body", "apply_text_normalization"],
                                 "Input should be 'auto', 'on' or 'off'", normalization)
        known = self.voices
        if (known is not None and voice_id not in known) or \
                (known is None and not _VOICE_ID.match(voice_id)):
            return 404, _detail("voice_not_found",
                                f"A voice with voice_id {voice_id} was not found.")
        if not (fmt == "ulaw_8000" or fmt.startswith("pcm_")):
            return 400, _detail("unsupported_by_fake",
                                f"The fake serves only ulaw_8000 and pcm_* audio, not {fmt}.")
        return None
