"""The fake's REST API: Plivo's ``/v1/Account/{auth_id}/`` Call resources, errors and all.

Request shapes, status codes and error bodies follow Plivo (carriers.md §3.1): JSON
bodies (what the official SDK sends), a trailing ``/`` on every path, Basic auth
``auth_id:auth_token``, errors as ``{"api_id", "error"}``. Strict: unknown body keys,
wrong types, missing trailing slashes and non-JSON bodies are refused with 400/404,
so a gateway bug shows up here rather than on a real account.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from voicecall.testing.fake_carrier._rest import basic_auth_matches
from voicecall.testing.fake_plivo._model import FakeCall, RestRequest

if TYPE_CHECKING:
    from voicecall.testing.fake_plivo._fake import FakePlivo

_NUMBER = re.compile(r"^\+?[1-9]\d{6,14}$")
_SIP = re.compile(r"^sip:[^@\s]+@[^@\s]+$")
_DIGITS = re.compile(r"^[0-9A-D*#wW]{1,64}$")
_ACCOUNT = r"/v1/Account/(?P<account>[^/]+)"
_ROUTES: list[tuple[str, re.Pattern[str]]] = [
    ("calls", re.compile(_ACCOUNT + r"/Call/$")),
    ("call", re.compile(_ACCOUNT + r"/Call/(?P<id>[^/]+)/$")),
    ("speak", re.compile(_ACCOUNT + r"/Call/(?P<id>[^/]+)/Speak/$")),
    ("dtmf", re.compile(_ACCOUNT + r"/Call/(?P<id>[^/]+)/DTMF/$")),
    ("streams", re.compile(_ACCOUNT + r"/Call/(?P<id>[^/]+)/Stream/$")),
    ("stream", re.compile(_ACCOUNT + r"/Call/(?P<id>[^/]+)/Stream/(?P<sid>[^/]+)/$")),
    ("request", re.compile(_ACCOUNT + r"/Request/(?P<id>[^/]+)/$")),
]
_CONTENT_TYPES = ("audio/x-mulaw;rate=8000", "audio/x-l16;rate=8000", "audio/x-l16;rate=16000")

_CREATE_KEYS = {
    "from", "to", "answer_url", "answer_method", "ring_url", "ring_method", "hangup_url",
    "hangup_method", "fallback_url", "fallback_method", "caller_name", "send_digits",
    "send_on_preanswer", "time_limit", "hangup_on_ring", "machine_detection",
    "machine_detection_time", "machine_detection_url", "machine_detection_method",
    "sip_headers", "ring_timeout", "parent_call_uuid", "error_if_parent_not_found",
    "callback_url", "callback_method",
}
# Every per-call request may repeat call_uuid in its body (an SDK quirk) and callbacks.
_CALL_EXTRA = {"call_uuid", "callback_url", "callback_method"}


class PlivoApiError(Exception):
    """An error answer in Plivo's JSON shape."""

    def __init__(self, status: int, error: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"api_id": str(uuid.uuid4()), "error": self.error}


@dataclass
class Fault:
    status: int
    error: str
    retry_after: float | None
    remaining: int


def _bad(message: str) -> PlivoApiError:
    return PlivoApiError(400, message)


def _is_url(value: object) -> bool:
    if not isinstance(value, str):
        return False
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _method(body: dict[str, Any], name: str) -> str:
    value = body.get(name, "POST")
    if not isinstance(value, str) or value.upper() not in ("GET", "POST"):
        raise _bad(f"{name} must be GET or POST")
    return value.upper()


def _url(body: dict[str, Any], name: str, *, required: bool = False) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise _bad(f"{name} is required")
        return None
    if not _is_url(value):
        raise _bad(f"{name} is not a valid URL: {value!r}")
    return str(value)


def _int(body: dict[str, Any], name: str, *, minimum: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).isdigit():
        raise _bad(f"{name} must be an integer")
    if int(value) < minimum:
        raise _bad(f"{name} must be >= {minimum}")
    return int(value)


def _only(body: dict[str, Any], allowed: set[str]) -> None:
    extra = sorted(set(body) - allowed)
    if extra:
        raise _bad(f"unexpected parameter(s): {', '.join(extra)}")


def _when(ts: float | None) -> str | None:
    return None if ts is None else time.strftime("%Y-%m-%d %H:%M:%S+00:00", time.gmtime(ts))


def live_resource(call: FakeCall) -> dict[str, Any]:
    """``GET Call/{uuid}/?status=live`` (fields of plivo-python's liveCallGetResponse)."""
    return {"api_id": str(uuid.uuid4()), "call_status": call.status,
            "call_uuid": call.call_uuid, "caller_name": "", "direction": call.direction,
            "from": call.from_, "request_uuid": call.request_uuid or call.call_uuid,
            "session_start": _when(call.created), "to": call.to}


def queued_resource(call: FakeCall) -> dict[str, Any]:
    return {"api_id": str(uuid.uuid4()), "call_status": "queued", "direction": call.direction,
            "from": call.from_, "request_uuid": call.request_uuid, "to": call.to}


def cdr_resource(call: FakeCall, auth_id: str) -> dict[str, Any]:
    """``GET Call/{uuid}/`` of an ended call (fields of plivo-python's callGetResponse)."""
    return {
        "answer_time": _when(call.answered), "api_id": str(uuid.uuid4()),
        "bill_duration": call.duration, "billed_duration": call.duration,
        "call_direction": call.direction, "call_duration": call.duration,
        "call_uuid": call.call_uuid, "end_time": _when(call.ended),
        "from_number": call.from_, "initiation_time": _when(call.created),
        "parent_call_uuid": None, "hangup_cause_name": call.hangup_cause,
        "hangup_source": call.hangup_source, "call_state": call.status,
        "resource_uri": f"/v1/Account/{auth_id}/Call/{call.call_uuid}/",
        "to_number": call.to, "total_amount": "0.00000", "total_rate": "0.00850",
    }


def _number(value: object, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise _bad(f"{name} is required")
    if "<" in value:
        raise _bad(f"{name}: bulk calls ('<') are not simulated by the fake")
    if not (_NUMBER.match(value) or _SIP.match(value)):
        raise _bad(f"invalid {name} number: {value!r}")
    return value.lstrip("+")


class RestApi:
    """Starlette app serving the fake's REST endpoints; state lives in the fake."""

    def __init__(self, fake: FakePlivo) -> None:
        self.fake = fake
        self.faults: list[Fault] = []
        self.app = Starlette(routes=[Route("/{path:path}", self._handle,
                                           methods=["GET", "POST", "DELETE", "PUT", "PATCH"])])

    def fail_next(self, status: int, count: int, error: str | None,
                  retry_after: float | None) -> None:
        self.faults.append(Fault(status, error or f"simulated HTTP {status}", retry_after,
                                 count))

    def _fault(self) -> PlivoApiError | None:
        while self.faults and self.faults[0].remaining <= 0:
            self.faults.pop(0)
        if not self.faults:
            return None
        fault = self.faults[0]
        fault.remaining -= 1
        headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None \
            else {}
        return PlivoApiError(fault.status, fault.error, headers)

    def _authorized(self, request: Request) -> bool:
        return basic_auth_matches(request, self.fake.auth_id, self.fake.auth_token)

    async def _handle(self, request: Request) -> Response:
        raw = await request.body()
        path = request.url.path
        query = dict(request.query_params)
        body: dict[str, Any] = {}
        call: FakeCall | None = None
        status = 500
        try:
            fault = self._fault()
            if fault is not None:
                raise fault
            if not self._authorized(request):
                raise PlivoApiError(401, "Authentication credentials invalid.",
                                    {"WWW-Authenticate": 'Basic realm="Plivo API"'})
            if raw:
                ctype = request.headers.get("content-type", "").split(";", 1)[0].strip()
                if ctype != "application/json":
                    raise _bad(f"expected an application/json body, got {ctype or 'none'!r}")
                try:
                    parsed = json.loads(raw)
                except ValueError:
                    raise _bad("request body is not valid JSON") from None
                if not isinstance(parsed, dict):
                    raise _bad("request body must be a JSON object")
                body = parsed
            status, payload, call = await self._route(request.method, path, query, body)
            response: Response = (Response(status_code=status) if payload is None
                                  else JSONResponse(payload, status_code=status))
        except PlivoApiError as exc:
            status, payload = exc.status, exc.body()
            response = JSONResponse(payload, status_code=status, headers=exc.headers)
        record = RestRequest(request.method, path, body, query,
                             {k.lower(): v for k, v in request.headers.items()}, status, payload)
        self.fake.requests.append(record)
        if call is not None:
            call.requests.append(record)
        self.fake._log(call.call_uuid if call else None, "rest", method=request.method,
                       path=path, status=status)
        return response

    async def _route(self, method: str, path: str, query: dict[str, str],
                     body: dict[str, Any]) -> tuple[int, dict[str, Any] | None, FakeCall | None]:
        found = next(((n, m) for n, p in _ROUTES if (m := p.match(path)) is not None), None)
        if found is None:
            hint = " (Plivo paths end with '/')" if not path.endswith("/") else ""
            raise PlivoApiError(404, f"resource not found: {path}{hint}")
        name, match = found
        if match["account"] != self.fake.auth_id:
            raise PlivoApiError(404, "account not found")
        allowed = {
            "calls": {"POST"}, "call": {"GET", "POST", "DELETE"}, "speak": {"POST", "DELETE"},
            "dtmf": {"POST"}, "streams": {"POST", "DELETE", "GET"},
            "stream": {"DELETE", "GET"}, "request": {"DELETE"},
        }[name]
        if method not in allowed:
            raise PlivoApiError(405, f"method {method} not allowed on {path}")
        fake = self.fake
        if name == "calls":
            _only(body, _CREATE_KEYS)
            created = fake._create_outbound(self.validate_create(body))
            return 201, {"api_id": str(uuid.uuid4()), "message": "call fired",
                         "request_uuid": created.request_uuid}, created
        ident = match["id"]
        if name == "request":
            call = fake.by_request(ident)
            if call is None or call.status not in ("queued", "ringing"):
                raise PlivoApiError(404, "request not found")
            await fake._cancel(call)
            return 204, None, call
        if name == "call" and method == "GET":
            return self._get(ident, query.get("status"))
        call = fake.calls.get(ident)
        if call is None or call.is_terminal:
            raise PlivoApiError(404, "call not found")
        _only(body, self._keys(name, method))
        if name == "call" and method == "DELETE":
            await fake._api_hangup(call)
            return 204, None, call
        if call.status != "in-progress":
            raise PlivoApiError(400, f"call is not in progress ({call.status})")
        if name == "call":
            legs = body.get("legs")
            if legs not in ("aleg", "bleg", "both"):
                raise _bad("legs must be aleg, bleg or both")
            aleg = _url(body, "aleg_url", required=legs in ("aleg", "both"))
            if legs == "bleg":
                raise _bad("bleg transfers are not simulated by the fake (no B leg)")
            assert aleg is not None
            fake._transfer(call, aleg, _method(body, "aleg_method"))
            return 202, {"api_id": str(uuid.uuid4()), "message": "call transfered"}, call
        if name == "speak":
            if method == "DELETE":
                return 204, None, call
            text = body.get("text")
            if not isinstance(text, str) or not text.strip():
                raise _bad("text is required")
            fake._api_speak(call, text)
            return 202, {"api_id": str(uuid.uuid4()), "message": "speak started"}, call
        if name == "dtmf":
            digits = body.get("digits")
            if not isinstance(digits, str) or not _DIGITS.match(digits):
                raise _bad(f"invalid digits: {digits!r}")
            if body.get("leg", "aleg") not in ("aleg", "bleg"):
                raise _bad("leg must be aleg or bleg")
            fake._api_dtmf(call, digits)
            return 202, {"api_id": str(uuid.uuid4()), "message": "digits sent"}, call
        if name == "streams" and method == "POST":
            service = body.get("service_url")
            if not isinstance(service, str) or urlsplit(service).scheme != "wss":
                raise _bad("service_url must be a wss:// URL")
            ctype = body.get("content_type")
            if ctype is not None and ctype not in _CONTENT_TYPES:
                raise _bad(f"content_type must be one of {_CONTENT_TYPES}")
            bidi = body.get("bidirectional", False)
            if not isinstance(bidi, bool):
                raise _bad("bidirectional must be a boolean")
            stream_id = await fake._api_stream(call, service, ctype, bidi,
                                               str(body.get("extra_headers") or ""))
            return 201, {"api_id": str(uuid.uuid4()), "message": "audio streaming started",
                         "stream_id": stream_id}, call
        if method == "DELETE":
            await fake._api_stop_streams(call)
            return 204, None, call
        return 200, {"api_id": str(uuid.uuid4()),
                     "objects": [{"stream_id": s.stream_id} for s in call.streams]}, call

    @staticmethod
    def _keys(name: str, method: str) -> set[str]:
        if method == "DELETE":
            return set(_CALL_EXTRA)
        return _CALL_EXTRA | {
            "call": {"legs", "aleg_url", "aleg_method", "bleg_url", "bleg_method"},
            "speak": {"text", "voice", "language", "legs", "loop", "mix", "type"},
            "dtmf": {"digits", "leg"},
            "streams": {"service_url", "bidirectional", "audio_track", "stream_timeout",
                        "status_callback_url", "status_callback_method", "content_type",
                        "extra_headers", "cx_bot"},
        }.get(name, set())

    def _get(self, ident: str, status: str | None
             ) -> tuple[int, dict[str, Any], FakeCall | None]:
        fake = self.fake
        if status == "live":
            live = fake.calls.get(ident)
            if live is None or live.is_terminal or live.status == "queued":
                raise PlivoApiError(404, "call not found")
            return 200, live_resource(live), live
        if status == "queued":
            queued = fake.by_request(ident)
            if queued is None or queued.status != "queued":
                raise PlivoApiError(404, "call not found")
            return 200, queued_resource(queued), queued
        if status is not None:
            raise _bad("status must be live or queued")
        ended = fake.calls.get(ident)
        if ended is None or not ended.is_terminal:
            raise PlivoApiError(404, "call not found")
        return 200, cdr_resource(ended, fake.auth_id), ended

    @staticmethod
    def validate_create(body: dict[str, Any]) -> CreateCall:
        from_ = _number(body.get("from"), "from")
        to = _number(body.get("to"), "to")
        if from_ == to:
            raise _bad("src and destination cannot overlap")
        answer_url = _url(body, "answer_url", required=True)
        assert answer_url is not None
        machine = body.get("machine_detection")
        if machine is not None and machine not in ("true", "hangup"):
            raise _bad("machine_detection must be true or hangup")
        send_digits = body.get("send_digits")
        if send_digits is not None and (not isinstance(send_digits, str)
                                        or not _DIGITS.match(send_digits)):
            raise _bad("invalid send_digits")
        ring_timeout = _int(body, "ring_timeout", minimum=0)
        return CreateCall(
            from_=from_, to=to, answer_url=answer_url,
            answer_method=_method(body, "answer_method"),
            ring_url=_url(body, "ring_url"), ring_method=_method(body, "ring_method"),
            hangup_url=_url(body, "hangup_url"), hangup_method=_method(body, "hangup_method"),
            fallback_url=_url(body, "fallback_url"),
            fallback_method=_method(body, "fallback_method"),
            ring_timeout=120 if ring_timeout is None else ring_timeout,
            hangup_on_ring=_int(body, "hangup_on_ring", minimum=0),
            time_limit=_int(body, "time_limit", minimum=1),
            send_digits=send_digits, body=dict(body))


@dataclass(frozen=True)
class CreateCall:
    from_: str
    to: str
    answer_url: str
    answer_method: str
    ring_url: str | None
    ring_method: str
    hangup_url: str | None
    hangup_method: str
    fallback_url: str | None
    fallback_method: str
    ring_timeout: int
    hangup_on_ring: int | None
    time_limit: int | None
    send_digits: str | None
    body: dict[str, Any]
