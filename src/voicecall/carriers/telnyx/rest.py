"""Thin async shell over Telnyx Call Control v2 (``https://api.telnyx.com/v2``).

Only moves bytes: bodies come from ``commands``, decisions from the carrier.
``Authorization: Bearer <API key>``, JSON both ways. 429 and 5xx (and transport
errors) are retried with exponential backoff, honouring ``Retry-After``; every retry
resends the same body, so the same ``command_id``, which Telnyx de-duplicates.
Errors come back as ``{"errors": [{"code", "title", "detail"}]}``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import httpx

from voicecall.carriers.http import RETRY_STATUSES, request_with_retries
from voicecall.carriers.telnyx.commands import Command
from voicecall.errors import CarrierError

log = logging.getLogger("voicecall.telnyx")

DEFAULT_BASE_URL = "https://api.telnyx.com/v2"
TIMEOUT_S = 30.0
CALL_ENDED_CODE = "90018"  # "Call has already ended" (422)


def api_root(base_url: str | None) -> str:
    """The ``/v2`` root for a configured base (``https://api.telnyx.com`` gets ``/v2``)."""
    root = (base_url or DEFAULT_BASE_URL).rstrip("/")
    return root if root.endswith("/v2") else root + "/v2"


class TelnyxApiError(CarrierError):
    """A Telnyx error answer; ``codes`` are the ``errors[].code`` values."""

    def __init__(self, message: str, *, status_code: int, codes: tuple[str, ...] = (),
                 retryable: bool = False) -> None:
        super().__init__(message, status_code=status_code, retryable=retryable)
        self.codes = codes

    @property
    def call_ended(self) -> bool:
        return self.status_code == 404 or CALL_ENDED_CODE in self.codes


class TelnyxRest:
    def __init__(self, api_key: str, *, base_url: str | None = None,
                 transport: httpx.AsyncBaseTransport | None = None, retries: int = 2,
                 backoff_s: float = 0.2) -> None:
        self.base_url = api_root(base_url)
        self._retries = retries
        self._backoff_s = backoff_s
        self._http = httpx.AsyncClient(
            timeout=TIMEOUT_S, transport=transport, trust_env=False,
            headers={"Authorization": f"Bearer {api_key}", "Accept": "application/json"})

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _request(self, method: str, path: str,
                       body: Mapping[str, Any] | None = None) -> httpx.Response:
        url = self.base_url + path
        return await request_with_retries(
            self._http, method, url, retries=self._retries, backoff_s=self._backoff_s,
            carrier="telnyx", target=f"{method} {path}",
            json=dict(body) if body is not None else None)

    async def dial(self, command: Command) -> dict[str, Any]:
        """``POST /calls``; the ``data`` object (``call_control_id``, ``call_leg_id`` ...)."""
        if command.action is not None:
            raise CarrierError(f"not a dial command: {command.action}")
        resp = await self._request("POST", "/calls", command.body)
        return _data_or_raise(resp, "dial")

    async def action(self, call_control_id: str, command: Command) -> dict[str, Any]:
        """``POST /calls/{id}/actions/<action>`` (``PUT`` for ``client_state_update``);
        the ``data`` object (``{"result": "ok"}``)."""
        if command.action is None:
            raise CarrierError("dial is not a call action")
        path = f"/calls/{quote(call_control_id, safe=':')}/actions/{command.action}"
        resp = await self._request(command.method, path, command.body)
        return _data_or_raise(resp, command.action)

    async def fetch_call(self, call_control_id: str) -> dict[str, Any] | None:
        """``GET /calls/{id}`` (status); None when Telnyx does not know the call."""
        resp = await self._request("GET", f"/calls/{quote(call_control_id, safe=':')}")
        if resp.status_code == 404:
            return None
        return _data_or_raise(resp, "fetch call")


def _errors(resp: httpx.Response) -> list[dict[str, Any]]:
    try:
        doc = resp.json()
    except ValueError:
        return []
    errors = doc.get("errors") if isinstance(doc, dict) else None
    return [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []


def _data_or_raise(resp: httpx.Response, what: str) -> dict[str, Any]:
    if resp.status_code < 300:
        try:
            doc = resp.json()
        except ValueError:
            raise CarrierError(f"telnyx {what}: response is not JSON",
                               status_code=resp.status_code) from None
        data = doc.get("data") if isinstance(doc, dict) else None
        if not isinstance(data, dict):
            raise CarrierError(f"telnyx {what}: response has no data object",
                               status_code=resp.status_code)
        return data
    errors = _errors(resp)
    codes = tuple(str(e.get("code")) for e in errors if e.get("code") is not None)
    detail = "; ".join(f"{e.get('code')}: {e.get('title') or ''}"
                       + (f" ({e.get('detail')})" if e.get("detail") else "") for e in errors)
    raise TelnyxApiError(
        f"telnyx {what} failed: HTTP {resp.status_code}" + (f" {detail}" if detail else ""),
        status_code=resp.status_code, codes=codes,
        retryable=resp.status_code in RETRY_STATUSES)
