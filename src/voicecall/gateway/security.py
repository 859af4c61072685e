"""Carrier-neutral webhook security helpers. Pure: no sockets, no clock, no framework.

* ``reconstruct_public_url``: the URL the carrier signed, rebuilt from ``publicUrl`` or
  from the request, trusting forwarded headers only under ``webhookSecurity``.
* ``port_variants``: further URLs worth one more signature check.
* ``client_ip``: the key for per-IP limits, immune to ``X-Forwarded-For`` spoofing
  unless the socket peer is a trusted proxy.
* ``ReplayCache``: remembers verified request keys (and optionally the response sent).

The shell (ASGI app) builds a ``RequestView`` from the raw request: ``path`` must be the
raw path as received and ``query_string`` the raw query, because carriers sign them
verbatim and any re-encoding breaks the signature.
"""

from __future__ import annotations

import ipaddress
import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

from voicecall.errors import SignatureError

NO_REMOTE = "__no_remote__"
REPLAY_TTL_S = 600.0
REPLAY_MAX_ENTRIES = 10_000
REPLAY_PRUNE_EVERY = 64

_FORWARDED_HOST_HEADERS = ("x-forwarded-host", "x-original-host", "ngrok-forwarded-host")
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class SecuritySettings(Protocol):
    """The ``webhookSecurity`` section (``WebhookSecurityConfig`` satisfies it)."""

    @property
    def allowed_hosts(self) -> Sequence[str]: ...

    @property
    def trust_forwarding_headers(self) -> bool: ...

    @property
    def trusted_proxy_ips(self) -> Sequence[str]: ...


@dataclass(frozen=True)
class RequestView:
    """What the security helpers may see of a request. ``headers`` keys are lower-case.

    ``scheme`` is the socket's scheme, kept for logs: URL reconstruction deliberately
    defaults to ``https`` instead, because carriers reach us through TLS-terminating
    proxies and the socket scheme is then ``http`` (reference §5.3).
    """

    method: str
    path: str
    query_string: str
    headers: Mapping[str, str]
    remote_ip: str | None
    scheme: str = "http"


# --- IP handling ----------------------------------------------------------------

def parse_ip(value: str | None) -> IpAddress | None:
    """An address from a socket peer or header item: brackets, ports, zone ids and
    ``::ffff:a.b.c.d`` handled; IPv4-mapped IPv6 becomes plain IPv4. ``None`` if junk."""
    if not value:
        return None
    text = value.strip().lower()
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return None
        text = text[1:end]
    elif text.count(":") == 1:  # "a.b.c.d:port"
        text = text.split(":", 1)[0]
    text = text.split("%", 1)[0]  # zone id ("fe80::1%eth0") is not part of the address
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def normalize_ip(value: str | None) -> str | None:
    ip = parse_ip(value)
    return str(ip) if ip is not None else None


def _networks(entries: Sequence[str]) -> list[IpNetwork]:
    nets: list[IpNetwork] = []
    for entry in entries:
        try:
            net = ipaddress.ip_network(entry.strip(), strict=False)
        except ValueError:
            continue  # config validation already rejects these; be safe anyway
        nets.append(net)
    return nets


def ip_in(value: str | None, entries: Sequence[str]) -> bool:
    """Whether ``value`` falls in any address or CIDR of ``entries``."""
    ip = parse_ip(value)
    if ip is None:
        return False
    for net in _networks(entries):
        if ip.version == net.version and ip in net:
            return True
        # A mapped-IPv4 entry ("::ffff:10.0.0.0/104") still covers the plain IPv4 peer.
        if isinstance(net, ipaddress.IPv6Network) and isinstance(ip, ipaddress.IPv4Address):
            if ipaddress.IPv6Address(f"::ffff:{ip}") in net:
                return True
    return False


def _is_loopback(value: str | None) -> bool:
    ip = parse_ip(value)
    return ip is not None and ip.is_loopback


# --- forwarded-header trust and URL reconstruction --------------------------------

def forwarding_trusted(security_cfg: SecuritySettings, remote_ip: str | None, *,
                       trust_forwarding_headers: bool | None = None) -> bool:
    """Whether ``X-Forwarded-*`` may shape the reconstructed URL (reference §5.3).

    Both must hold: forwarding is opted into (``allowedHosts`` non-empty or
    ``trustForwardingHeaders``), and the peer is a trusted proxy when
    ``trustedProxyIPs`` is set (an unknown peer is then not trusted).
    """
    trust = (security_cfg.trust_forwarding_headers if trust_forwarding_headers is None
             else trust_forwarding_headers)
    if not (security_cfg.allowed_hosts or trust):
        return False
    if not security_cfg.trusted_proxy_ips:
        return True
    return remote_ip is not None and ip_in(remote_ip, security_cfg.trusted_proxy_ips)


def extract_hostname(value: str | None) -> str | None:
    """The lower-case host of a ``Host``-style value without its port, or ``None``.

    Refuses userinfo (``evil@good``), empty or over-long names and anything that is not
    an RFC-1123 hostname, an IPv4 address or a bracketed IPv6 address (kept bracketed,
    ready for a URL).
    """
    if not value:
        return None
    text = value.strip().lower()
    if not text or "@" in text or len(text) > 253 + 8:
        return None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return None
        rest = text[end + 1:]
        if rest and not re.fullmatch(r":\d{1,5}", rest):
            return None
        try:
            ip6 = ipaddress.IPv6Address(text[1:end])
        except ValueError:
            return None
        return f"[{ip6.compressed}]"
    host, sep, port = text.partition(":")
    if sep and not re.fullmatch(r"\d{1,5}", port):
        return None
    host = host.rstrip(".")
    if not host or len(host) > 253:
        return None
    if all(_LABEL.match(label) for label in host.split(".")):
        return host
    return None


def _first_item(value: str | None) -> str | None:
    if value is None:
        return None
    return value.split(",", 1)[0].strip() or None


def _host_allowed(host: str, allowed: Sequence[str]) -> bool:
    return host in {extract_hostname(h) for h in allowed}


def _public_origin(public_url: str) -> tuple[str, str]:
    parts = urlsplit(public_url.strip())
    host = parts.netloc.rpartition("@")[2]  # never sign with credentials
    if not parts.scheme or not host:
        raise SignatureError(f"publicUrl is not an absolute URL: {public_url!r}")
    return parts.scheme.lower(), host.lower()


def _join(scheme: str, host: str, path: str, query: str) -> str:
    return f"{scheme}://{host}{path or '/'}" + (f"?{query}" if query else "")


def reconstruct_public_url(
    req: RequestView,
    *,
    public_url: str | None,
    security_cfg: SecuritySettings,
    ngrok_loopback_bypass: bool = False,
) -> str:
    """The URL the carrier most likely signed: ``scheme://host[:port]`` + raw path + raw query.

    With ``public_url`` set its scheme, host and port are used (plus the request's path
    and query), whatever the headers say. Otherwise the scheme defaults to ``https``
    (carriers reach us through TLS-terminating proxies) and the host comes from trusted
    forwarded headers, else ``Host``; no port -- ``port_variants`` covers that.

    ``ngrok_loopback_bypass`` (the caller has checked ``tunnel.provider == "ngrok"`` and a
    loopback ``serve.bind``) trusts forwarding headers for requests from loopback only; it
    never relaxes the signature check itself.

    Stricter than the reference: when ``allowedHosts`` is set, the ``Host`` fallback must
    be listed too, so a signature captured for another host cannot be replayed at us by
    pointing ``Host`` at it. Raises ``SignatureError`` when no acceptable host exists.
    """
    cfg = security_cfg
    if public_url:
        pub_scheme, pub_host = _public_origin(public_url)
        return _join(pub_scheme, pub_host, req.path, req.query_string)

    bypass = ngrok_loopback_bypass and _is_loopback(req.remote_ip)
    trusted = forwarding_trusted(cfg, req.remote_ip,
                                 trust_forwarding_headers=cfg.trust_forwarding_headers or bypass)
    scheme = "https"
    host: str | None = None
    if trusted:
        proto = (_first_item(req.headers.get("x-forwarded-proto")) or "").lower()
        if proto in ("http", "https"):
            scheme = proto
        for name in _FORWARDED_HOST_HEADERS:
            candidate = extract_hostname(_first_item(req.headers.get(name)))
            if candidate and (not cfg.allowed_hosts or _host_allowed(candidate,
                                                                     cfg.allowed_hosts)):
                host = candidate
                break
    if host is None:
        host = extract_hostname(req.headers.get("host"))
        if host is None:
            raise SignatureError("request has no valid Host header")
        if cfg.allowed_hosts and not _host_allowed(host, cfg.allowed_hosts):
            raise SignatureError(f"host {host!r} is not in webhookSecurity.allowedHosts")
    return _join(scheme, host, req.path, req.query_string)


def _with_port(url: str, port: int) -> str:
    parts = urlsplit(url)
    hostport = parts.netloc.rpartition("@")[2]
    if hostport.startswith("["):
        bare = hostport[: hostport.index("]") + 1]
    else:
        bare = hostport.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{bare}:{port}"))


def _port_of(value: str | None, *, is_url: bool) -> int | None:
    if not value:
        return None
    try:
        return urlsplit(value if is_url else f"//{value.strip()}").port
    except ValueError:
        return None


def port_variants(url: str, public_url: str | None, host_header: str | None) -> list[str]:
    """Extra URLs to try after ``url``: with ``publicUrl``'s port, with the ``Host`` port.

    ``url`` itself (and the port-stripped / default-port forms) are tried by the
    signature checker; only explicit ports produce variants here.
    """
    out: list[str] = []
    for port in (_port_of(public_url, is_url=True), _port_of(host_header, is_url=False)):
        if port:
            try:
                variant = _with_port(url, port)
            except ValueError:
                continue
            if variant != url and variant not in out:
                out.append(variant)
    return out


# --- client IP ------------------------------------------------------------------

def client_ip(req: RequestView, security_cfg: SecuritySettings) -> str:
    """The address per-IP limits should count, normalised.

    Forwarded headers count only when ``trustForwardingHeaders`` is on *and* the socket
    peer is in ``trustedProxyIPs`` (``allowedHosts`` alone is not enough). Then
    ``X-Forwarded-For`` is walked from the right, skipping our own proxies, so a client
    cannot choose its bucket by prepending entries; ``X-Real-IP`` is the fallback.
    """
    remote = normalize_ip(req.remote_ip)
    proxies = security_cfg.trusted_proxy_ips
    if security_cfg.trust_forwarding_headers and remote and ip_in(remote, proxies):
        chain = (req.headers.get("x-forwarded-for") or "").split(",")
        for item in reversed(chain):
            hop = normalize_ip(item)
            if hop is None:
                break  # garbage in the chain: nothing left of it can be trusted
            if not ip_in(hop, proxies):
                return hop
        real = normalize_ip(req.headers.get("x-real-ip"))
        if real:
            return real
    if remote:
        return remote
    raw = (req.remote_ip or "").strip().lower()
    return raw or NO_REMOTE


# --- replay cache -----------------------------------------------------------------

@dataclass(frozen=True)
class CachedResponse:
    """A response stored for replays (carriers whose retries expect the same answer)."""

    status_code: int
    body: bytes
    media_type: str = "text/plain"


class ReplayCache:
    """Verified request keys seen in the last ``ttl_s`` seconds; bounded and self-pruning.

    Pure and clock-free: every call gets ``now``. Expired keys are pruned every
    ``prune_every`` calls to ``seen`` and the oldest are evicted beyond ``max_entries``,
    so a flood of distinct keys costs bounded memory.
    """

    def __init__(self, *, ttl_s: float = REPLAY_TTL_S, max_entries: int = REPLAY_MAX_ENTRIES,
                 prune_every: int = REPLAY_PRUNE_EVERY) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.prune_every = prune_every
        self._expiry: OrderedDict[str, float] = OrderedDict()
        self._responses: dict[str, CachedResponse] = {}
        self._calls = 0
        self._now = 0.0

    def __len__(self) -> int:
        return len(self._expiry)

    def __contains__(self, key: object) -> bool:
        return key in self._expiry

    def seen(self, key: str, now: float) -> bool:
        """Record ``key``; True if it was already recorded and has not expired."""
        self._now = max(self._now, now)
        self._calls += 1
        if self._calls % self.prune_every == 0:
            self.prune(now)
        expiry = self._expiry.get(key)
        if expiry is not None:
            if expiry > now:
                return True  # a replay does not extend the window
            self._drop(key)
        self._expiry[key] = now + self.ttl_s
        while len(self._expiry) > self.max_entries:
            oldest, _ = self._expiry.popitem(last=False)
            self._responses.pop(oldest, None)
        return False

    def prune(self, now: float) -> int:
        """Drop expired keys; returns how many went."""
        # Entries are kept in insertion order with a fixed TTL, so expiry times ascend.
        dropped = 0
        while self._expiry:
            key, expiry = next(iter(self._expiry.items()))
            if expiry > now:
                break
            self._drop(key)
            dropped += 1
        return dropped

    def put_response(self, key: str, response: CachedResponse,
                     now: float | None = None) -> None:
        """Attach the response sent for ``key`` (recording ``key`` if it is new)."""
        when = self._now if now is None else now
        if key not in self._expiry:
            self.seen(key, when)
        if key in self._expiry:
            self._responses[key] = response

    def get_response(self, key: str, now: float | None = None) -> CachedResponse | None:
        when = self._now if now is None else now
        expiry = self._expiry.get(key)
        if expiry is None or expiry <= when:
            return None
        return self._responses.get(key)

    def _drop(self, key: str) -> None:
        self._expiry.pop(key, None)
        self._responses.pop(key, None)
