"""Is the webhook reachable by a carrier? (the ``webhook-exposure`` check)

Exposure priority: ``publicUrl``, then ``tunnel``, then the legacy
``tailscale.mode``, then the local listen address (the serve fallback). For
Twilio, Telnyx and Plivo the result must be a public host.

The host check looks at the host *string* only: IP literals (including
IPv4-mapped IPv6 and legacy numeric forms such as ``127.1``) and the
local-only names below. It never does a DNS lookup, so a public-looking name
that resolves to a private address is not caught here.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from .model import VoiceCallConfig

_LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "metadata.google.internal"})
_LOCAL_SUFFIXES = (".localhost", ".local", ".internal")
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_FIX = "Set publicUrl to a public https URL or enable tunnel/tailscale exposure."

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _parse_ip(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])  # drop an IPv6 zone id
    except ValueError:
        pass
    # inet_aton also accepts forms browsers and resolvers take: 127.1, 0x7f.1, 2130706433.
    if host and all(c in "0123456789abcdefxABCDEFX." for c in host) and host[0].isdigit():
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def _ip_reason(ip: IPAddress) -> str | None:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        inner = _ip_reason(ip.ipv4_mapped)
        return f"IPv4-mapped {inner}" if inner else None
    if ip.is_unspecified:
        return "unspecified address"
    if ip.is_loopback:
        return "loopback address"
    if ip.is_link_local:
        return "link-local address"
    if isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT:
        return "carrier-grade NAT / tailnet address (100.64.0.0/10)"
    if ip.is_private:
        return "private network address"
    if ip.is_multicast or ip.is_reserved or not ip.is_global:
        return "special-use address"
    return None


def private_host_reason(host: str) -> str | None:
    """Why ``host`` is local-only (loopback, private, special-use), or None if public."""
    name = host.strip().strip("[]").rstrip(".").lower()
    if not name:
        return "empty host"
    if name in _LOCAL_NAMES or name.endswith(_LOCAL_SUFFIXES):
        return "local-only host name"
    ip = _parse_ip(name)
    return _ip_reason(ip) if ip is not None else None


def is_private_host(host: str) -> bool:
    """True for loopback/private/special-use IP literals and local-only names.

    Pure: hostnames are never resolved (see the module docstring).
    """
    return private_host_reason(host) is not None


def _url_check(url: str, what: str) -> tuple[bool, str]:
    host = urlsplit(url).hostname or ""
    reason = private_host_reason(host)
    if reason:
        return False, (
            f"{what} {url} is local-only ({host}: {reason}); carriers cannot reach it. {_FIX}"
        )
    return True, f"{what} {url}"


def webhook_exposure(cfg: VoiceCallConfig) -> tuple[bool, str]:
    """(ok, message) for whether the selected carrier can reach the webhook."""
    if cfg.provider == "mock":
        return True, "Mock provider does not need a public webhook"
    if cfg.provider is None:
        return False, "No provider selected; set provider to twilio, telnyx, plivo or mock"
    if cfg.public_url:
        return _url_check(cfg.public_url, "publicUrl")
    tunnel = cfg.tunnel.provider
    if tunnel == "ngrok":
        if cfg.tunnel.ngrok_domain:
            return _url_check(f"https://{cfg.tunnel.ngrok_domain}{cfg.webhook_path}", "ngrok URL")
        return True, "ngrok tunnel configured (public URL assigned when the tunnel starts)"
    if tunnel == "tailscale-funnel" or (tunnel == "none" and cfg.tailscale.mode == "funnel"):
        return True, "Tailscale Funnel configured (public HTTPS on the tailnet host name)"
    if tunnel == "tailscale-serve" or (tunnel == "none" and cfg.tailscale.mode == "serve"):
        return False, (
            "Tailscale Serve is reachable only inside your tailnet (100.64.0.0/10); carriers "
            'cannot reach it. Use tunnel.provider "tailscale-funnel", ngrok or a public publicUrl.'
        )
    return _url_check(cfg.local_webhook_url, "serve fallback URL")
