"""The fake's REST API: Telnyx Call Control v2 (``/v2/calls``), strictly validated.

Request shapes follow the official SDK (telnyx 4.189): JSON bodies, snake_case,
``Authorization: Bearer <API key>``. Unknown parameters are refused (the real API
may ignore them; refusing catches typos in the gateway), as are bad enums, invalid
base64 ``client_state`` and commands on calls in the wrong state. Errors use Telnyx's
shape ``{"errors": [{"code", "title", "detail"}]}``; ``90018`` "Call has already ended"
is documented, the other codes are the fake's own [guessed]. A repeated ``command_id``
on the same call is acknowledged and not executed, as Telnyx documents.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from voicecall.testing.fake_telnyx._model import FakeCall, RestRequest

if TYPE_CHECKING:
    from voicecall.testing.fake_telnyx._fake import FakeTelnyx

_E164 = re.compile(r"^\+[1-9]\d{1,14}$")
_SIP = re.compile(r"^sips?:.+")
_DTMF = re.compile(r"^[0-9A-D*#wW]+$")
_CALLS = re.compile(r"^/v2/calls/?$")
_CALL = re.compile(r"^/v2/calls/(?P<id>[^/]+)$")
_ACTION = re.compile(r"^/v2/calls/(?P<id>[^/]+)/actions/(?P<action>[a-z_]+)$")

CALL_ENDED = ("90018", "Call has already ended",
              "This call is no longer active and can't receive commands.")

# Parameters each command accepts (the SDK's TypedDict keys, ``from_`` spelled ``from``).
ALLOWED: dict[str, frozenset[str]] = {
    "dial": frozenset({
        "answering_machine_detection", "answering_machine_detection_config", "assistant",
        "audio_url", "billing_group_id", "bridge_intent", "bridge_on_answer", "client_state",
        "command_id", "conference_config", "connection_id", "conversation_relay_config",
        "custom_headers", "deepfake_detection", "dialogflow_config", "diversion",
        "enable_dialogflow", "from", "from_display_name", "link_to", "media_encryption",
        "media_name", "park_after_unbridge", "preferred_codecs", "prevent_double_bridge",
        "privacy", "record", "record_channels", "record_custom_file_name", "record_format",
        "record_max_length", "record_timeout_secs", "record_track", "record_trim",
        "retry_on_timeout", "route_to_mobile", "send_digits_on_answer",
        "send_silence_when_idle", "sip_auth_password", "sip_auth_username", "sip_headers",
        "sip_region", "sip_transport_protocol", "sound_modifications", "stream_auth_token",
        "stream_bidirectional_codec", "stream_bidirectional_mode",
        "stream_bidirectional_sampling_rate", "stream_bidirectional_target_legs",
        "stream_codec", "stream_establish_before_call_originate", "stream_track",
        "stream_url", "supervise_call_control_id", "supervisor_role", "time_limit_secs",
        "timeout_secs", "to", "transcription", "transcription_config",
        "webhook_retries_policies", "webhook_url", "webhook_url_method", "webhook_urls",
        "webhook_urls_method"}),
    "answer": frozenset({
        "assistant", "billing_group_id", "client_state", "command_id",
        "conversation_relay_config", "custom_headers", "deepfake_detection",
        "preferred_codecs", "record", "record_channels", "record_custom_file_name",
        "record_format", "record_max_length", "record_timeout_secs", "record_track",
        "record_trim", "send_silence_when_idle", "sip_headers", "sound_modifications",
        "stream_bidirectional_codec", "stream_bidirectional_mode",
        "stream_bidirectional_target_legs", "stream_codec", "stream_track", "stream_url",
        "transcription", "transcription_config", "webhook_retries_policies", "webhook_url",
        "webhook_url_method", "webhook_urls", "webhook_urls_method"}),
    "reject": frozenset({"cause", "client_state", "command_id"}),
    "speak": frozenset({"client_state", "command_id", "language", "loop", "payload",
                        "payload_type", "service_level", "stop", "target_legs", "voice",
                        "voice_settings"}),
    "transcription_start": frozenset({"client_state", "command_id", "transcription_engine",
                                      "transcription_engine_config", "transcription_tracks"}),
    "transcription_stop": frozenset({"client_state", "command_id"}),
    "send_dtmf": frozenset({"client_state", "command_id", "digits", "duration_millis"}),
    "streaming_start": frozenset({
        "client_state", "command_id", "custom_parameters", "dialogflow_config",
        "enable_dialogflow", "stream_auth_token", "stream_bidirectional_codec",
        "stream_bidirectional_mode", "stream_bidirectional_sampling_rate",
        "stream_bidirectional_target_legs", "stream_codec", "stream_track", "stream_url"}),
    "streaming_stop": frozenset({"client_state", "command_id", "stream_id"}),
    "hangup": frozenset({"client_state", "command_id", "custom_headers", "reason"}),
    "client_state_update": frozenset({"client_state"}),
}
METHODS = {"client_state_update": "PUT"}  # every other command is a POST
REQUIRED: dict[str, tuple[str, ...]] = {
    "dial": ("connection_id", "to", "from"), "reject": ("cause",),
    "speak": ("payload", "voice"), "send_dtmf": ("digits",),
    "client_state_update": ("client_state",), "streaming_start": ("stream_url",),
}
ENUMS: dict[str, frozenset[Any]] = {
    "webhook_url_method": frozenset({"POST", "GET"}),
    "stream_track": frozenset({"inbound_track", "outbound_track", "both_tracks"}),
    "stream_codec": frozenset({"PCMU", "PCMA", "G722", "OPUS", "AMR-WB", "L16", "default"}),
    "stream_bidirectional_mode": frozenset({"mp3", "rtp"}),
    "stream_bidirectional_codec": frozenset({"PCMU", "PCMA", "G722", "OPUS", "AMR-WB", "L16"}),
    "stream_bidirectional_sampling_rate": frozenset({8000, 16000, 22050, 24000, 48000}),
    "stream_bidirectional_target_legs": frozenset({"both", "self", "opposite"}),
    "cause": frozenset({"CALL_REJECTED", "NOT_FOUND", "TEMPORARILY_UNAVAILABLE", "USER_BUSY"}),
    "payload_type": frozenset({"text", "ssml"}),
    "service_level": frozenset({"basic", "premium"}),
    "language": frozenset({
        "arb", "cmn-CN", "cy-GB", "da-DK", "de-DE", "en-AU", "en-GB", "en-GB-WLS", "en-IN",
        "en-US", "es-ES", "es-MX", "es-US", "fr-CA", "fr-FR", "hi-IN", "is-IS", "it-IT",
        "ja-JP", "ko-KR", "nb-NO", "nl-NL", "pl-PL", "pt-BR", "pt-PT", "ro-RO", "ru-RU",
        "sv-SE", "tr-TR"}),
    "transcription_engine": frozenset({
        "Google", "Telnyx", "Deepgram", "Azure", "xAI", "AssemblyAI", "Speechmatics",
        "Soniox", "Parakeet", "Humain", "Reson8", "Cohere", "A", "B"}),
    "transcription_tracks": frozenset({"inbound", "outbound", "both"}),
}
_DEFAULT_FAULT_CODES = {429: "10011", 500: "10007", 502: "10007", 503: "10008", 504: "10007"}
_DEFAULT_FAULT_TITLES = {429: "Too many requests", 500: "Unexpected error",
                         502: "Bad gateway", 503: "Service unavailable", 504: "Gateway timeout"}


class TelnyxApiError(Exception):
    """An error answer in Telnyx's JSON shape."""

    def __init__(self, status: int, code: str, title: str, detail: str = "",
                 headers: dict[str, str] | None = None, source: str | None = None) -> None:
        super().__init__(f"{code} {title}: {detail}")
        self.status = status
        self.code = code
        self.title = title
        self.detail = detail
        self.headers = headers or {}
        self.source = source

    def body(self) -> dict[str, Any]:
        err: dict[str, Any] = {"code": self.code, "title": self.title, "detail": self.detail}
        if self.source:
            err["source"] = {"pointer": f"/{self.source}"}
        return {"errors": [err]}


def invalid(param: str, detail: str) -> TelnyxApiError:
    return TelnyxApiError(422, "10015", "Invalid parameter", detail, source=param)


def call_ended() -> TelnyxApiError:
    return TelnyxApiError(422, *CALL_ENDED)


def wrong_state(detail: str) -> TelnyxApiError:
    return TelnyxApiError(422, "90034", "Invalid call state", detail)


@dataclass
class Fault:
    status: int
    code: str
    title: str
    retry_after: float | None
    remaining: int
    action: str | None


def is_base64(value: object) -> bool:
    if not isinstance(value, str) or not value:
        return False
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def validate(action: str, body: object) -> dict[str, Any]:
    """The body of a known command, or a 422 naming the first problem."""
    if not isinstance(body, dict):
        raise TelnyxApiError(422, "10015", "Invalid request", "body must be a JSON object")
    unknown = sorted(set(body) - ALLOWED[action])
    if unknown:
        raise invalid(unknown[0], f"unknown parameter {unknown[0]!r} for {action}")
    for name in REQUIRED.get(action, ()):
        if body.get(name) in (None, ""):
            raise invalid(name, f"{name} is required")
    for name, allowed in ENUMS.items():
        if name in body and body[name] not in allowed:
            raise invalid(name, f"{name} must be one of {sorted(map(str, allowed))}")
    if "client_state" in body and not is_base64(body["client_state"]):
        raise invalid("client_state", "client_state must be a valid Base-64 encoded string")
    if "command_id" in body and not (isinstance(body["command_id"], str)
                                     and body["command_id"]):
        raise invalid("command_id", "command_id must be a non-empty string")
    for name in ("stream_url",):
        if name in body:
            parts = urlsplit(str(body[name]))
            if parts.scheme not in ("ws", "wss") or not parts.hostname:
                raise invalid(name, f"{name} must be a ws:// or wss:// URL")
    if "stream_auth_token" in body and (not isinstance(body["stream_auth_token"], str)
                                        or len(body["stream_auth_token"]) > 4000):
        raise invalid("stream_auth_token", "stream_auth_token must be a string of <= 4000")
    if "webhook_url" in body:
        parts = urlsplit(str(body["webhook_url"]))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise invalid("webhook_url", "webhook_url must be an http(s) URL")
    if action == "dial":
        for name in ("to", "from"):
            value = body[name]
            if not isinstance(value, str) or not (_E164.match(value) or _SIP.match(value)):
                raise invalid(name, f"{name} must be an E.164 number or SIP URI")
        if "timeout_secs" in body and not (isinstance(body["timeout_secs"], int)
                                           and 5 <= body["timeout_secs"] <= 600):
            raise invalid("timeout_secs", "timeout_secs must be an integer in 5..600")
    elif action == "speak":
        payload = body["payload"]
        if not isinstance(payload, str) or len(payload) > 3000:
            raise invalid("payload", "payload must be text of at most 3000 characters")
        if not isinstance(body["voice"], str):
            raise invalid("voice", "voice must be a string")
    elif action == "send_dtmf":
        if not isinstance(body["digits"], str) or not _DTMF.match(body["digits"]):
            raise invalid("digits", "digits may contain 0-9, A-D, *, # and w/W")
        if "duration_millis" in body and not (isinstance(body["duration_millis"], int)
                                              and 100 <= body["duration_millis"] <= 500):
            raise invalid("duration_millis", "duration_millis must be 100..500")
    elif action == "transcription_start":
        config = body.get("transcription_engine_config")
        if config is not None and not isinstance(config, dict):
            raise invalid("transcription_engine_config", "must be an object")
    elif action == "streaming_start":
        params = body.get("custom_parameters")
        if params is not None and not (isinstance(params, list) and all(
                isinstance(p, dict) and set(p) <= {"name", "value"} for p in params)):
            raise invalid("custom_parameters", "custom_parameters must be [{name, value}]")
    return body


class RestApi:
    """Starlette app serving the fake's REST endpoints; state lives in the fake."""

    def __init__(self, fake: FakeTelnyx) -> None:
        self.fake = fake
        self.faults: list[Fault] = []
        self.app = Starlette(routes=[Route("/{path:path}", self._handle,
                                           methods=["GET", "POST", "DELETE", "PUT", "PATCH"])])

    def fail_next(self, status: int, count: int, code: str | None, title: str | None,
                  retry_after: float | None, action: str | None) -> None:
        self.faults.append(Fault(status, code or _DEFAULT_FAULT_CODES.get(status, "10007"),
                                 title or _DEFAULT_FAULT_TITLES.get(status, "Error"),
                                 retry_after, count, action))

    def _fault(self, action: str | None) -> TelnyxApiError | None:
        self.faults = [f for f in self.faults if f.remaining > 0]
        for fault in self.faults:
            if fault.action is None or fault.action == action:
                fault.remaining -= 1
                headers = {}
                if fault.retry_after is not None:
                    headers["Retry-After"] = f"{fault.retry_after:g}"
                return TelnyxApiError(fault.status, fault.code, fault.title,
                                      "injected by the fake", headers)
        return None

    def _authorized(self, request: Request) -> bool:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            token.strip().encode(), self.fake.api_key.encode())

    async def _handle(self, request: Request) -> Response:
        raw = await request.body()
        path = request.url.path
        body: Any = None
        if raw:
            try:
                body = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                body = None
        action, ccid = self._classify(request.method, path)
        call: FakeCall | None = self.fake.calls.get(ccid) if ccid else None
        duplicate = False
        try:
            fault = self._fault(action)
            if fault is not None:
                raise fault
            if not self._authorized(request):
                raise TelnyxApiError(401, "10009", "Authentication failed",
                                     "The API key is missing or invalid.")
            if raw and body is None:
                raise TelnyxApiError(400, "10015", "Invalid request", "body is not JSON")
            status, payload, call, duplicate = await self._route(request.method, path, action,
                                                                 ccid, body)
            response: Response = JSONResponse(payload, status_code=status)
        except TelnyxApiError as exc:
            status, payload = exc.status, exc.body()
            response = JSONResponse(payload, status_code=status, headers=exc.headers)
        record = RestRequest(request.method, path, action, body,
                             {k.lower(): v for k, v in request.headers.items()}, status,
                             payload, duplicate)
        self.fake.requests.append(record)
        if call is not None:
            call.requests.append(record)
        self.fake._log(call.call_control_id if call else None, "rest", method=request.method,
                       path=path, action=action, status=status)
        return response

    @staticmethod
    def _classify(method: str, path: str) -> tuple[str | None, str | None]:
        if _CALLS.match(path):
            return ("dial" if method == "POST" else None), None
        match = _ACTION.match(path)
        if match:
            return match["action"], unquote(match["id"])
        match = _CALL.match(path)
        if match:
            return None, unquote(match["id"])
        return None, None

    async def _route(self, method: str, path: str, action: str | None, ccid: str | None,
                     body: Any) -> tuple[int, dict[str, Any], FakeCall | None, bool]:
        not_found = TelnyxApiError(404, "10005", "Resource not found",
                                   f"The requested resource {path} was not found")
        if _CALLS.match(path):
            if method != "POST":
                raise TelnyxApiError(405, "10006", "Method not allowed", method)
            request = validate("dial", body)
            if request["connection_id"] != self.fake.connection_id:
                raise TelnyxApiError(422, "10010", "Invalid connection_id",
                                     "connection_id does not name a Call Control App")
            created = self.fake._create_outbound(request)
            # Dialling is asynchronous: ``is_alive`` is always false in this answer.
            return 200, {"data": dict(self.fake.call_status(created), is_alive=False)}, \
                created, False
        if ccid is None:
            raise not_found
        call = self.fake.calls.get(ccid)
        if call is None:
            raise not_found
        if action is None:
            if method != "GET":
                raise TelnyxApiError(405, "10006", "Method not allowed", method)
            return 200, {"data": self.fake.call_status(call)}, call, False
        if method != METHODS.get(action, "POST"):
            raise TelnyxApiError(405, "10006", "Method not allowed",
                                 f"{method} actions/{action}")
        if action not in ALLOWED:
            raise TelnyxApiError(422, "10015", "Unsupported command",
                                 f"actions/{action} is not simulated by the fake")
        request = validate(action, body if body is not None else {})
        command_id = request.get("command_id")
        if isinstance(command_id, str):
            if command_id in call.command_ids:
                return 200, {"data": {"result": "ok"}}, call, True
            call.command_ids.add(command_id)
        try:
            await self.fake._command(call, action, request)
        except TelnyxApiError:
            if isinstance(command_id, str):
                call.command_ids.discard(command_id)  # a refused command can be retried
            raise
        return 200, {"data": {"result": "ok"}}, call, False
