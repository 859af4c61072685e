"""The carriers' REST calls: one request, retried on transport errors and 429/5xx.

A transport error is retried after ``backoff_s * 2**attempt``; a retryable
status after its ``Retry-After`` (capped at ``MAX_RETRY_AFTER_S``), else the
same backoff. The last attempt's response is returned whatever its status;
the last attempt's transport error is a retryable ``CarrierError``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from voicecall.errors import CarrierError

__all__ = ["MAX_RETRY_AFTER_S", "RETRY_STATUSES", "request_with_retries"]

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_RETRY_AFTER_S = 5.0


async def request_with_retries(http: httpx.AsyncClient, method: str, url: str, *,
                               retries: int, backoff_s: float, carrier: str, target: str,
                               **kwargs: Any) -> httpx.Response:
    """``http.request(method, url, **kwargs)`` with retries (errors name ``target``)."""
    for attempt in range(retries + 1):
        try:
            resp = await http.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            if attempt >= retries:
                raise CarrierError(f"{carrier}: {type(exc).__name__} calling {target}",
                                   retryable=True) from None
            await asyncio.sleep(backoff_s * 2 ** attempt)
            continue
        if resp.status_code in RETRY_STATUSES and attempt < retries:
            await asyncio.sleep(_retry_delay(resp, backoff_s * 2 ** attempt))
            continue
        return resp
    raise AssertionError("unreachable")  # pragma: no cover


def _retry_delay(resp: httpx.Response, default: float) -> float:
    try:
        return min(MAX_RETRY_AFTER_S, max(0.0, float(resp.headers.get("retry-after", ""))))
    except ValueError:
        return default
