"""The fake's REST API: Twilio's ``/2010-04-01`` Calls resource, errors and all.

Request shapes, status codes and error bodies follow Twilio (carriers.md §1.1):
form-encoded bodies with repeated keys, Basic auth ``AccountSid:AuthToken``, JSON
answers, errors as ``{code, message, more_info, status}``.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from email.utils import formatdate
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from voicecall.testing.fake_carrier._rest import basic_auth_matches
from voicecall.testing.fake_twilio._model import FakeCall, RestRequest

if TYPE_CHECKING:
    from voicecall.testing.fake_twilio._fake import FakeTwilio

API_VERSION = "2010-04-01"
TWIML_LIMIT = 4000  # characters, for Twiml= on create/update (error 32018)

_E164 = re.compile(r"^\+[1-9]\d{1,14}$")
_CLIENT = re.compile(r"^(client:[A-Za-z0-9_.@-]+|sip:.+)$")
_SEND_DIGITS = re.compile(r"^[0-9A-D*#wW]{1,32}$")
_CALLS = re.compile(r"^/2010-04-01/Accounts/(?P<account>[^/]+)/Calls\.json$")
_CALL = re.compile(r"^/2010-04-01/Accounts/(?P<account>[^/]+)/Calls/(?P<sid>[^/]+)\.json$")
_EVENTS = ("initiated", "ringing", "answered", "completed")
_DEFAULT_FAULT_CODES = {429: 20429, 500: 20500, 502: 20502, 503: 20503}
_DEFAULT_FAULT_MESSAGES = {429: "Too Many Requests", 500: "Internal Server Error",
                           502: "Bad Gateway", 503: "Service Unavailable"}


class TwilioApiError(Exception):
    """An error answer in Twilio's JSON shape."""

    def __init__(self, status: int, code: int, message: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message,
                "more_info": f"https://www.twilio.com/docs/errors/{self.code}",
                "status": self.status}


@dataclass
class Fault:
    status: int
    code: int
    message: str
    retry_after: float | None
    remaining: int


def rfc2822(ts: float | None) -> str | None:
    return None if ts is None else formatdate(ts, usegmt=False).replace("-0000", "+0000")


def call_resource(call: FakeCall) -> dict[str, Any]:
    """The Call resource JSON as Twilio returns it (fields the SDK models)."""
    base = f"/{API_VERSION}/Accounts/{call.account_sid}/Calls/{call.sid}"
    terminal = call.is_terminal
    return {
        "account_sid": call.account_sid,
        "annotation": None,
        "answered_by": None,
        "api_version": API_VERSION,
        "caller_name": None,
        "date_created": rfc2822(call.created),
        "date_updated": rfc2822(time.time()),
        "direction": call.direction,
        "duration": str(call.duration) if terminal else None,
        "end_time": rfc2822(call.ended),
        "forwarded_from": None,
        "from": call.from_,
        "from_formatted": call.from_,
        "group_sid": None,
        "parent_call_sid": None,
        "phone_number_sid": None,
        "price": None,
        "price_unit": "USD",
        "queue_time": "0",
        "sid": call.sid,
        "start_time": rfc2822(call.answered),
        "status": call.status,
        "subresource_uris": {
            name: f"{base}/{path}.json" for name, path in (
                ("notifications", "Notifications"), ("recordings", "Recordings"),
                ("payments", "Payments"), ("events", "Events"), ("siprec", "Siprec"),
                ("streams", "Streams"),
                ("user_defined_message_subscriptions", "UserDefinedMessageSubscriptions"),
                ("user_defined_messages", "UserDefinedMessages"))
        },
        "to": call.to,
        "to_formatted": call.to,
        "trunk_sid": None,
        "uri": f"{base}.json",
    }


def _bad(code: int, message: str) -> TwilioApiError:
    return TwilioApiError(400, code, message)


def _is_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _method(form: dict[str, str], name: str) -> str:
    value = form.get(name, "POST").upper()
    if value not in ("GET", "POST"):
        raise _bad(21200, f"{name} must be GET or POST")
    return value


@dataclass(frozen=True)
class CreateCall:
    """A validated create-call request."""

    to: str
    from_: str
    url: str | None
    method: str
    twiml: str | None
    status_callback: str | None
    status_callback_method: str
    status_callback_events: tuple[str, ...]
    timeout: int
    send_digits: str | None
    fallback_url: str | None
    fallback_method: str
    params: dict[str, list[str]]


def validate_create(params: list[tuple[str, str]]) -> CreateCall:
    multi: dict[str, list[str]] = {}
    for name, value in params:
        multi.setdefault(name, []).append(value)
    form = {name: values[0] for name, values in multi.items()}
    to, from_ = form.get("To", ""), form.get("From", "")
    if not to:
        raise _bad(21201, "No 'To' number is specified")
    if not from_:
        raise _bad(21213, "No 'From' number is specified")
    if not (_E164.match(to) or _CLIENT.match(to)):
        raise _bad(21211, f"Invalid 'To' Phone Number: {to}")
    if not (_E164.match(from_) or from_.startswith("client:")):
        raise _bad(21212, f"Invalid 'From' Phone Number: {from_}")
    url, twiml = form.get("Url") or None, form.get("Twiml") or None
    if "ApplicationSid" in form and not url and not twiml:
        raise _bad(21218, "ApplicationSid is not simulated by the fake; use Url or Twiml")
    if url is None and twiml is None:
        raise _bad(21205, "Url parameter is required")
    if url is not None:
        if not _is_url(url):
            raise _bad(21205, f"Url is not a valid URL: {url}")
        twiml = None  # SDK docs: with both, Twiml is ignored
    if twiml is not None and len(twiml) > TWIML_LIMIT:
        raise _bad(32018, "Twiml size exceeded maximum allowed value of 4000 characters")
    status_callback = form.get("StatusCallback") or None
    if status_callback is not None and not _is_url(status_callback):
        raise _bad(21205, f"StatusCallback is not a valid URL: {status_callback}")
    events = tuple(e for raw in multi.get("StatusCallbackEvent", []) for e in raw.split())
    if any(e not in _EVENTS for e in events):
        raise _bad(21626, "Invalid 'StatusCallbackEvent'")
    fallback = form.get("FallbackUrl") or None
    if fallback is not None and not _is_url(fallback):
        raise _bad(21205, f"FallbackUrl is not a valid URL: {fallback}")
    try:
        timeout = int(form.get("Timeout", "60"))
    except ValueError:
        raise _bad(21200, "Timeout must be an integer") from None
    if timeout < 1:
        raise _bad(21200, "Timeout must be at least 1")
    send_digits = form.get("SendDigits") or None
    if send_digits is not None and not _SEND_DIGITS.match(send_digits):
        raise _bad(21206, "Invalid SendDigits")
    return CreateCall(
        to=to, from_=from_, url=url, method=_method(form, "Method"), twiml=twiml,
        status_callback=status_callback,
        status_callback_method=_method(form, "StatusCallbackMethod"),
        # Twilio's default: only the completed event unless events are listed.
        status_callback_events=events or ("completed",),
        timeout=min(timeout, 600), send_digits=send_digits, fallback_url=fallback,
        fallback_method=_method(form, "FallbackMethod"), params=multi)


class RestApi:
    """Starlette app serving the fake's REST endpoints; state lives in the fake."""

    def __init__(self, fake: FakeTwilio) -> None:
        self.fake = fake
        self.faults: list[Fault] = []
        self.app = Starlette(routes=[Route("/{path:path}", self._handle,
                                           methods=["GET", "POST", "DELETE", "PUT", "PATCH"])])

    def fail_next(self, status: int, count: int, code: int | None, message: str | None,
                  retry_after: float | None) -> None:
        self.faults.append(Fault(status, code or _DEFAULT_FAULT_CODES.get(status, 20500),
                                 message or _DEFAULT_FAULT_MESSAGES.get(status, "Error"),
                                 retry_after, count))

    def _fault(self) -> TwilioApiError | None:
        while self.faults and self.faults[0].remaining <= 0:
            self.faults.pop(0)
        if not self.faults:
            return None
        fault = self.faults[0]
        fault.remaining -= 1
        headers = {}
        if fault.retry_after is not None:
            headers["Retry-After"] = f"{fault.retry_after:g}"
        return TwilioApiError(fault.status, fault.code, fault.message, headers)

    def _authorized(self, request: Request) -> bool:
        return basic_auth_matches(request, self.fake.account_sid, self.fake.auth_token)

    async def _handle(self, request: Request) -> Response:
        raw = await request.body()
        path = request.url.path
        try:
            text = raw.decode("utf-8") if request.method != "GET" else request.url.query
            params = parse_qsl(text, keep_blank_values=True)
        except UnicodeDecodeError:
            params = []
        call: FakeCall | None = None
        try:
            fault = self._fault()
            if fault is not None:
                raise fault
            if not self._authorized(request):
                raise TwilioApiError(401, 20003, "Authenticate",
                                     {"WWW-Authenticate": 'Basic realm="Twilio API"'})
            status, body, call = await self._route(request.method, path, params)
            response: Response = (Response(status_code=204) if body is None
                                  else JSONResponse(body, status_code=status))
        except TwilioApiError as exc:
            status, body = exc.status, exc.body()
            response = JSONResponse(body, status_code=status, headers=exc.headers)
        record = RestRequest(request.method, path, params,
                             {k.lower(): v for k, v in request.headers.items()}, status, body)
        self.fake.requests.append(record)
        if call is None:
            match = _CALL.match(path)
            call = self.fake.calls.get(match["sid"]) if match else None
        if call is not None:
            call.requests.append(record)
        self.fake._log(call.sid if call else None, "rest", method=request.method, path=path,
                       status=status)
        return response

    async def _route(self, method: str, path: str, params: list[tuple[str, str]],
                     ) -> tuple[int, dict[str, Any] | None, FakeCall | None]:
        not_found = TwilioApiError(404, 20404, f"The requested resource {path} was not found")
        match = _CALLS.match(path) or _CALL.match(path)
        if match is None or match["account"] != self.fake.account_sid:
            raise not_found
        sid = match.groupdict().get("sid")
        call = self.fake.calls.get(sid) if sid else None
        if sid is not None and (call is None or call.deleted):
            raise not_found
        if sid is None:
            if method != "POST":
                raise TwilioApiError(405, 20004, "Method not allowed")
            created = validate_create(params)
            call = self.fake._create_outbound(created)
            return 201, call_resource(call), call
        assert call is not None
        if method == "GET":
            return 200, call_resource(call), call
        if method == "DELETE":
            # Deletes the record only; the call itself carries on (it is not a hang-up).
            call.deleted = True
            return 204, None, call
        if method != "POST":
            raise TwilioApiError(405, 20004, "Method not allowed")
        await self._update(call, params)
        return 200, call_resource(call), call

    async def _update(self, call: FakeCall, params: list[tuple[str, str]]) -> None:
        form = dict(reversed(params))  # first value wins, like the create handler
        status = form.get("Status")
        twiml, url = form.get("Twiml") or None, form.get("Url") or None
        if status is not None:
            if status not in ("canceled", "completed"):
                raise _bad(20001, f"Invalid Status: {status}")
            await self.fake._api_hangup(call, status)
            return
        if twiml is None and url is None:
            return  # e.g. only StatusCallback changed; nothing to execute
        if twiml is not None and url is not None:
            raise _bad(20001, "Url and Twiml are mutually exclusive")
        if call.status != "in-progress":
            raise _bad(21220, "Call is not in-progress. Cannot redirect.")
        if url is not None and not _is_url(url):
            raise _bad(21205, f"Url is not a valid URL: {url}")
        if twiml is not None and len(twiml) > TWIML_LIMIT:
            raise _bad(32018, "Twiml size exceeded maximum allowed value of 4000 characters")
        self.fake._replace_twiml(call, twiml=twiml, url=url, method=_method(form, "Method"))
