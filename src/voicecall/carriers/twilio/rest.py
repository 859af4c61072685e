"""Thin async shell over Twilio's REST API (Programmable Voice, 2010-04-01).

Only moves bytes: requests are built here, decisions are made by the carrier.
Retries 429/5xx with exponential backoff (honouring ``Retry-After``), and
Twilio error 21220 ("call not in progress yet") on live updates, which a call
that has only just been answered returns for a few hundred milliseconds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

import httpx

from voicecall.carriers.http import RETRY_STATUSES, request_with_retries
from voicecall.errors import CarrierError

log = logging.getLogger("voicecall.twilio")

REGION_HOSTS = {
    "us1": "https://api.twilio.com",
    "ie1": "https://api.dublin.ie1.twilio.com",
    "au1": "https://api.sydney.au1.twilio.com",
}
TIMEOUT_S = 30.0
NOT_IN_PROGRESS = 21220
UPDATE_RETRY_DELAYS_S = (0.25, 0.75)

FormValue = str | Sequence[str]


class TwilioRest:
    def __init__(self, account_sid: str, auth_token: str, *, base_url: str | None = None,
                 region: str = "us1", transport: httpx.AsyncBaseTransport | None = None,
                 retries: int = 2, backoff_s: float = 0.2) -> None:
        root = (base_url or REGION_HOSTS.get(region, REGION_HOSTS["us1"])).rstrip("/")
        if not root.endswith("/2010-04-01"):
            root += "/2010-04-01"
        self.account_sid = account_sid
        self._base = f"{root}/Accounts/{account_sid}"
        self._retries = retries
        self._backoff_s = backoff_s
        self._http = httpx.AsyncClient(
            auth=(account_sid, auth_token), timeout=TIMEOUT_S, transport=transport,
            headers={"Accept": "application/json"}, trust_env=False)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _request(self, method: str, path: str,
                       form: Mapping[str, FormValue] | None = None) -> httpx.Response:
        url = self._base + path
        data = _encode_form(form) if form is not None else None
        return await request_with_retries(
            self._http, method, url, retries=self._retries, backoff_s=self._backoff_s,
            carrier="twilio", target=f"{method} {path}", content=data,
            headers={"Content-Type": "application/x-www-form-urlencoded"}
            if data is not None else None)

    async def create_call(self, form: Mapping[str, FormValue]) -> dict[str, Any]:
        resp = await self._request("POST", "/Calls.json", form)
        return _json_or_raise(resp, "create call")

    async def update_call(self, call_sid: str, form: Mapping[str, FormValue]) -> dict[str, Any]:
        """POST new TwiML / status to a live call, retrying 21220 while it connects."""
        for delay in (*UPDATE_RETRY_DELAYS_S, None):
            resp = await self._request("POST", f"/Calls/{call_sid}.json", form)
            if resp.status_code == 400 and _error_code(resp) == NOT_IN_PROGRESS \
                    and delay is not None:
                await asyncio.sleep(delay)
                continue
            return _json_or_raise(resp, "update call")
        raise AssertionError("unreachable")  # pragma: no cover

    async def hangup(self, call_sid: str) -> None:
        resp = await self._request("POST", f"/Calls/{call_sid}.json", {"Status": "completed"})
        if resp.status_code == 404:
            return  # already gone: hanging up is idempotent
        _json_or_raise(resp, "hang up")

    async def fetch_call(self, call_sid: str) -> dict[str, Any] | None:
        """The call resource, or None when Twilio does not know the call (404)."""
        resp = await self._request("GET", f"/Calls/{call_sid}.json")
        if resp.status_code == 404:
            return None
        return _json_or_raise(resp, "fetch call")


def _encode_form(form: Mapping[str, FormValue]) -> bytes:
    # Repeated keys (StatusCallbackEvent) are sent once per value, as Twilio expects.
    pairs: list[tuple[str, str]] = []
    for key, value in form.items():
        if isinstance(value, str):
            pairs.append((key, value))
        else:
            pairs.extend((key, v) for v in value)
    return urlencode(pairs).encode()


def _error_code(resp: httpx.Response) -> int | None:
    try:
        code = resp.json().get("code")
    except ValueError:
        return None
    return code if isinstance(code, int) else None


def _json_or_raise(resp: httpx.Response, what: str) -> dict[str, Any]:
    if resp.status_code < 300:
        try:
            body = resp.json()
        except ValueError:
            raise CarrierError(f"twilio {what}: response is not JSON",
                               status_code=resp.status_code) from None
        if not isinstance(body, dict):
            raise CarrierError(f"twilio {what}: unexpected response shape")
        return body
    message = ""
    try:
        doc = resp.json()
        message = f" {doc.get('code')}: {doc.get('message')}"
    except ValueError:
        pass
    raise CarrierError(f"twilio {what} failed: HTTP {resp.status_code}{message}",
                       status_code=resp.status_code,
                       retryable=resp.status_code in RETRY_STATUSES)
