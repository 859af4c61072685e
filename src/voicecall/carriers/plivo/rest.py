"""Thin async shell over Plivo's Voice REST API (``/v1/Account/{auth_id}/``).

Only moves bytes: requests are built here, decisions are made by the carrier.
JSON bodies and a trailing ``/`` on every path, as the official SDK sends them
(carriers.md §3.1); Basic auth ``auth_id:auth_token``; errors come back as
``{"api_id", "error"}``. Retries 429/5xx and transport errors with exponential
backoff (honouring ``Retry-After``, capped).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import httpx

from voicecall.carriers.http import RETRY_STATUSES, request_with_retries
from voicecall.errors import CarrierError

log = logging.getLogger("voicecall.plivo")

DEFAULT_BASE_URL = "https://api.plivo.com"
TIMEOUT_S = 30.0

Json = Mapping[str, Any]


class PlivoRest:
    def __init__(self, auth_id: str, auth_token: str, *, base_url: str | None = None,
                 transport: httpx.AsyncBaseTransport | None = None,
                 retries: int = 2, backoff_s: float = 0.2) -> None:
        root = (base_url or DEFAULT_BASE_URL).rstrip("/")
        if not root.endswith("/v1"):
            root += "/v1"
        self.auth_id = auth_id
        self._base = f"{root}/Account/{auth_id}"
        self._retries = retries
        self._backoff_s = backoff_s
        self._http = httpx.AsyncClient(
            auth=(auth_id, auth_token), timeout=TIMEOUT_S, transport=transport,
            headers={"Accept": "application/json"}, trust_env=False)

    async def aclose(self) -> None:
        await self._http.aclose()

    def url(self, *parts: str) -> str:
        """``{base}/Account/{auth_id}/A/B/`` -- Plivo wants the trailing slash everywhere."""
        return "/".join([self._base, *parts]) + "/"

    async def _request(self, method: str, parts: tuple[str, ...], body: Json | None = None,
                       params: Mapping[str, str] | None = None) -> httpx.Response:
        url = self.url(*parts)
        return await request_with_retries(
            self._http, method, url, retries=self._retries, backoff_s=self._backoff_s,
            carrier="plivo", target=f"{method} /{'/'.join(parts)}/", json=body, params=params)

    # -- calls -------------------------------------------------------------------

    async def create_call(self, body: Json) -> dict[str, Any]:
        """``POST Call/``: returns ``{api_id, message, request_uuid}`` (not yet a CallUUID)."""
        return _json_or_raise(await self._request("POST", ("Call",), body), "create call")

    async def hangup(self, call_uuid: str) -> bool:
        """``DELETE Call/{uuid}/``; False when Plivo no longer knows the call (404)."""
        resp = await self._request("DELETE", ("Call", call_uuid))
        if resp.status_code == 404:
            return False
        _json_or_raise(resp, "hang up")
        return True

    async def cancel_request(self, request_uuid: str) -> bool:
        """``DELETE Request/{request_uuid}/``: cancel a call not answered yet (404: gone)."""
        resp = await self._request("DELETE", ("Request", request_uuid))
        if resp.status_code == 404:
            return False
        _json_or_raise(resp, "cancel call")
        return True

    async def transfer(self, call_uuid: str, aleg_url: str, *,
                       method: str = "POST") -> dict[str, Any]:
        """``POST Call/{uuid}/``: the A leg fetches ``aleg_url`` and runs that XML now."""
        return _json_or_raise(await self._request("POST", ("Call", call_uuid), {
            "legs": "aleg", "aleg_url": aleg_url, "aleg_method": method}), "transfer call")

    async def speak(self, call_uuid: str, text: str, *, voice: str | None = None,
                    language: str | None = None, legs: str = "aleg") -> dict[str, Any]:
        """``POST Call/{uuid}/Speak/``: speak over whatever the call is doing (async, 202)."""
        body: dict[str, Any] = {"text": text, "legs": legs}
        if voice:
            body["voice"] = voice
        if language:
            body["language"] = language
        return _json_or_raise(await self._request("POST", ("Call", call_uuid, "Speak"), body),
                              "speak")

    async def send_dtmf(self, call_uuid: str, digits: str, *,
                        leg: str = "aleg") -> dict[str, Any]:
        """``POST Call/{uuid}/DTMF/``: send digits without touching the running XML."""
        return _json_or_raise(await self._request(
            "POST", ("Call", call_uuid, "DTMF"), {"digits": digits, "leg": leg}), "send DTMF")

    async def start_stream(self, call_uuid: str, service_url: str, *,
                           content_type: str = "audio/x-mulaw;rate=8000",
                           extra_headers: str | None = None,
                           bidirectional: bool = True) -> dict[str, Any]:
        """``POST Call/{uuid}/Stream/``: returns ``{api_id, message, stream_id}``."""
        body: dict[str, Any] = {"service_url": service_url, "bidirectional": bidirectional,
                                "audio_track": "inbound", "content_type": content_type}
        if extra_headers:
            body["extra_headers"] = extra_headers
        return _json_or_raise(await self._request("POST", ("Call", call_uuid, "Stream"), body),
                              "start stream")

    async def stop_streams(self, call_uuid: str) -> None:
        resp = await self._request("DELETE", ("Call", call_uuid, "Stream"))
        if resp.status_code != 404:
            _json_or_raise(resp, "stop streams")

    async def get_live_call(self, call_uuid: str) -> dict[str, Any] | None:
        """``GET Call/{uuid}/?status=live``; None when the call is not live (404)."""
        return await self._get_or_none(("Call", call_uuid), {"status": "live"}, "get live call")

    async def get_queued_call(self, request_uuid: str) -> dict[str, Any] | None:
        """``GET Call/{uuid}/?status=queued``; None when no such queued call (404)."""
        return await self._get_or_none(("Call", request_uuid), {"status": "queued"},
                                       "get queued call")

    async def get_call(self, call_uuid: str) -> dict[str, Any] | None:
        """``GET Call/{uuid}/``: the call detail record of an ended call (None: 404)."""
        return await self._get_or_none(("Call", call_uuid), None, "get call")

    async def _get_or_none(self, parts: tuple[str, ...], params: Mapping[str, str] | None,
                           what: str) -> dict[str, Any] | None:
        resp = await self._request("GET", parts, params=params)
        if resp.status_code == 404:
            return None
        return _json_or_raise(resp, what)


def _json_or_raise(resp: httpx.Response, what: str) -> dict[str, Any]:
    if resp.status_code < 300:
        if resp.status_code == 204 or not resp.content:
            return {}
        try:
            body = resp.json()
        except ValueError:
            raise CarrierError(f"plivo {what}: response is not JSON",
                               status_code=resp.status_code) from None
        if not isinstance(body, dict):
            raise CarrierError(f"plivo {what}: unexpected response shape")
        return body
    message = ""
    try:
        doc = resp.json()
        if isinstance(doc, dict) and doc.get("error"):
            message = f": {doc.get('error')}"
    except ValueError:
        pass
    raise CarrierError(f"plivo {what} failed: HTTP {resp.status_code}{message}",
                       status_code=resp.status_code,
                       retryable=resp.status_code in RETRY_STATUSES)
