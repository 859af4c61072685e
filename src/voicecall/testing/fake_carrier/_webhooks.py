"""Carrier -> gateway HTTP, the carrier-neutral part: loopback routing and recorded delivery.

The gateway signs and verifies against its *public* URL (``https://voice.example.com/...``)
while tests serve it on ``127.0.0.1:PORT``. A fake therefore signs the public URL (or
body), as the carrier would, and delivers to the local listener, as a tunnel would. It
refuses to contact anything that is not loopback, so a misrouted test can never reach
the internet. How a request is signed and shaped stays with each carrier's sender.
"""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterable, Callable, Mapping
from dataclasses import dataclass
from typing import ClassVar, Generic, Protocol, TypeVar
from urllib.parse import urlencode, urlsplit, urlunsplit

import httpx

_DOWNGRADE = {"https": "http", "wss": "ws"}


class FakeRoutingError(Exception):
    """A URL the fake will not contact (not loopback after rewriting)."""


@dataclass(frozen=True)
class Target:
    public: str  # the URL as the gateway wrote it (what gets signed)
    local: str  # where the fake actually connects
    host_header: str | None  # Host to present, when it differs from the local one


def _is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _netloc(value: str) -> str:
    # public_to_local values may be "127.0.0.1:8080" or "http://127.0.0.1:8080".
    return urlsplit(value).netloc if "//" in value else value


class Router:
    """Maps public gateway URLs to the loopback listener that serves them."""

    hint: ClassVar[str] = "public_to_local or url_rewrite"  # named in the refusal

    def __init__(self, *, public_to_local: Mapping[str, str] | None = None,
                 url_rewrite: Callable[[str], str] | None = None,
                 ws_url_rewrite: Callable[[str], str] | None = None,
                 preserve_host: bool = True) -> None:
        self.public_to_local = dict(public_to_local or {})
        self.url_rewrite = url_rewrite
        self.ws_url_rewrite = ws_url_rewrite
        self.preserve_host = preserve_host

    def resolve(self, url: str) -> Target:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https", "ws", "wss") or not parts.hostname:
            raise FakeRoutingError(f"not an absolute http(s)/ws(s) URL: {url!r}")
        rewrite = self.url_rewrite
        if parts.scheme in ("ws", "wss") and self.ws_url_rewrite is not None:
            rewrite = self.ws_url_rewrite
        if rewrite is not None:
            local = rewrite(url)
        else:
            mapped = self.public_to_local.get(parts.netloc) or self.public_to_local.get(
                parts.hostname)
            local = urlunsplit(parts._replace(netloc=_netloc(mapped))) if mapped else url
        lparts = urlsplit(local)
        if not _is_loopback(lparts.hostname):
            raise FakeRoutingError(
                f"refusing to contact non-loopback host {lparts.hostname!r} for {url!r}; "
                f"map it with {self.hint}")
        # The gateway serves plain HTTP/WS locally; TLS ends at the (imaginary) tunnel.
        lparts = lparts._replace(scheme=_DOWNGRADE.get(lparts.scheme, lparts.scheme))
        host = parts.netloc.rpartition("@")[2]
        host_header = host if self.preserve_host and host != lparts.netloc else None
        return Target(url, urlunsplit(lparts), host_header)


def with_query(url: str, params: Mapping[str, str]) -> str:
    """GET webhooks: params appended to the query (and signed as part of the URL)."""
    if not params:
        return url
    return url + ("&" if urlsplit(url).query else "?") + urlencode(params)


def tamper(signature: str) -> str:
    """A same-length (still base64) signature that is certainly wrong."""
    if not signature:
        return "AAAA"
    return ("B" if signature[0] != "B" else "C") + signature[1:]


class SentRecord(Protocol):
    """The outcome fields of a carrier's ``SentWebhook``."""

    status_code: int | None
    response_body: str
    response_headers: dict[str, str]
    error: str | None


class WebhookTimings(Protocol):
    @property
    def webhook_timeout(self) -> float: ...


SentT = TypeVar("SentT", bound=SentRecord)
CallT = TypeVar("CallT")


class HttpSender(Generic[SentT, CallT]):
    """The HTTP client of a carrier's webhook sender: one request, recorded either way."""

    fake_name: ClassVar[str] = "the fake"  # for "... is not running"

    def __init__(self, timings: WebhookTimings,
                 record: Callable[[SentT, CallT | None], None]) -> None:
        self.timings = timings
        self._record = record
        self._client: httpx.AsyncClient | None = None

    async def start(self) -> None:
        # trust_env=False: a developer's HTTP(S)_PROXY must not capture loopback traffic.
        self._client = httpx.AsyncClient(trust_env=False, follow_redirects=False,
                                         timeout=self.timings.webhook_timeout)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _running(self) -> httpx.AsyncClient:
        if self._client is None:
            raise RuntimeError(f"{self.fake_name} is not running")
        return self._client

    async def _exchange(self, sent: SentT, call: CallT | None, method: str, url: str,
                        headers: Mapping[str, str],
                        content: bytes | AsyncIterable[bytes] | None, *,
                        raise_errors: bool) -> tuple[SentT, httpx.Response | None]:
        """Send and record ``sent``. Transport failures are recorded (or raised if asked)."""
        client = self._running()
        try:
            response = await client.request(method, url, headers=headers, content=content)
        except httpx.HTTPError as exc:
            sent.error = f"{type(exc).__name__}: {exc}"
            self._record(sent, call)
            if raise_errors:
                raise
            return sent, None
        sent.status_code = response.status_code
        sent.response_body = response.text
        sent.response_headers = dict(response.headers)
        self._record(sent, call)
        return sent, response
