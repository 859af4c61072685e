"""Public-URL reconstruction, client IP and replay cache (reference §5.3, §4.1.4, §10)."""

from __future__ import annotations

import pytest
from twilio.request_validator import RequestValidator  # type: ignore[import-untyped]

from voicecall.carriers.twilio.signature import compute_signature, verify_signature
from voicecall.config.sections import WebhookSecurityConfig
from voicecall.errors import SignatureError
from voicecall.gateway.security import (
    NO_REMOTE,
    CachedResponse,
    ReplayCache,
    RequestView,
    client_ip,
    extract_hostname,
    forwarding_trusted,
    normalize_ip,
    port_variants,
    reconstruct_public_url,
)

TOKEN = "tok_0123456789abcdef"
PATH = "/voice/webhook"


def sec(*, hosts: list[str] | None = None, trust: bool = False,
        proxies: list[str] | None = None) -> WebhookSecurityConfig:
    return WebhookSecurityConfig(allowed_hosts=hosts or [], trust_forwarding_headers=trust,
                                 trusted_proxy_ips=proxies or [])


def req(headers: dict[str, str], *, remote: str | None = "203.0.113.10",
        path: str = PATH, query: str = "callId=c1&type=status") -> RequestView:
    return RequestView(method="POST", path=path, query_string=query,
                       headers={k.lower(): v for k, v in headers.items()}, remote_ip=remote)


def url(request: RequestView, cfg: WebhookSecurityConfig, public_url: str | None = None,
        **kw: bool) -> str:
    return reconstruct_public_url(request, public_url=public_url, security_cfg=cfg, **kw)


# --- forwarding_trusted ------------------------------------------------------------

@pytest.mark.parametrize(("cfg", "remote", "expected"), [
    (sec(), "10.0.0.1", False),
    (sec(trust=True), "10.0.0.1", True),
    (sec(trust=True), None, True),
    (sec(hosts=["voice.example.com"]), "10.0.0.1", True),
    (sec(trust=True, proxies=["10.0.0.1"]), "10.0.0.1", True),
    (sec(trust=True, proxies=["10.0.0.1"]), "10.0.0.2", False),
    (sec(trust=True, proxies=["10.0.0.0/8"]), "10.9.8.7", True),
    (sec(trust=True, proxies=["10.0.0.0/8"]), "::ffff:10.9.8.7", True),
    (sec(trust=True, proxies=["10.0.0.1"]), None, False),    # missing remote IP
    (sec(trust=True, proxies=["10.0.0.1"]), "garbage", False),
    (sec(proxies=["10.0.0.1"]), "10.0.0.1", False),           # not opted in
    (sec(trust=True, proxies=["2001:db8::/32"]), "[2001:DB8::5]", True),
])
def test_forwarding_trusted(cfg: WebhookSecurityConfig, remote: str | None,
                            expected: bool) -> None:
    assert forwarding_trusted(cfg, remote) is expected


# --- reconstruct_public_url ----------------------------------------------------------

def test_host_header_default_https_no_port_query_verbatim() -> None:
    r = req({"Host": "Voice.Example.com:3334"}, query="b=2&a=%20x+y")
    assert url(r, sec()) == "https://voice.example.com/voice/webhook?b=2&a=%20x+y"


def test_no_query_no_question_mark() -> None:
    assert url(req({"Host": "h.example.com"}, query=""), sec()) == \
        "https://h.example.com/voice/webhook"


def test_forwarded_host_injection_rejected_without_trust() -> None:
    r = req({"Host": "voice.example.com", "X-Forwarded-Host": "evil.example.net",
             "X-Forwarded-Proto": "http"})
    assert url(r, sec()) == "https://voice.example.com/voice/webhook?callId=c1&type=status"


def test_forwarded_host_injection_cannot_pass_signature() -> None:
    # The attacker signs for its own host with a token it knows; we check our URL.
    attacker_url = "https://evil.example.net/voice/webhook?callId=c1&type=status"
    params = {"CallSid": ["CA1"]}
    sig = compute_signature("attacker-token", attacker_url, params)
    r = req({"Host": "voice.example.com", "X-Forwarded-Host": "evil.example.net"})
    assert not verify_signature(TOKEN, url(r, sec()), params, sig)


def test_trusted_forwarding_uses_forwarded_host_and_proto() -> None:
    r = req({"Host": "127.0.0.1:3334", "X-Forwarded-Host": "Voice.Example.com, proxy.internal",
             "X-Forwarded-Proto": "http, https"})
    assert url(r, sec(trust=True)) == \
        "http://voice.example.com/voice/webhook?callId=c1&type=status"


def test_forwarded_proto_other_values_ignored() -> None:
    r = req({"Host": "h.example.com", "X-Forwarded-Proto": "javascript"})
    assert url(r, sec(trust=True)).startswith("https://h.example.com/")


@pytest.mark.parametrize(("headers", "host"), [
    ({"X-Original-Host": "orig.example.com", "Ngrok-Forwarded-Host": "ng.example.com"},
     "orig.example.com"),
    ({"Ngrok-Forwarded-Host": "ng.example.com"}, "ng.example.com"),
    ({"X-Forwarded-Host": "bad host", "X-Original-Host": "orig.example.com"},
     "orig.example.com"),
    ({"X-Forwarded-Host": "user@evil.example.net", "Ngrok-Forwarded-Host": "ng.example.com"},
     "ng.example.com"),
    ({"X-Forwarded-Host": "a" * 254}, "local.example.com"),
])
def test_forwarded_host_header_order_and_validation(headers: dict[str, str], host: str) -> None:
    r = req({"Host": "local.example.com", **headers})
    assert url(r, sec(trust=True)) == f"https://{host}/voice/webhook?callId=c1&type=status"


def test_allowed_hosts_accepts_listed_forwarded_host() -> None:
    r = req({"Host": "127.0.0.1:3334", "X-Forwarded-Host": "voice.example.com"})
    cfg = sec(hosts=["voice.example.com", "127.0.0.1"])
    assert url(r, cfg).startswith("https://voice.example.com/")


def test_allowed_hosts_skips_unlisted_forwarded_host() -> None:
    r = req({"Host": "voice.example.com",
             "X-Forwarded-Host": "evil.example.net",
             "X-Original-Host": "Voice.Example.com"})
    assert url(r, sec(hosts=["VOICE.example.com"])).startswith("https://voice.example.com/")
    r2 = req({"Host": "voice.example.com", "X-Forwarded-Host": "evil.example.net"})
    assert url(r2, sec(hosts=["voice.example.com"])).startswith("https://voice.example.com/")


def test_allowed_hosts_also_bind_the_host_header() -> None:
    r = req({"Host": "evil.example.net", "X-Forwarded-Host": "evil.example.net"})
    with pytest.raises(SignatureError, match="allowedHosts"):
        url(r, sec(hosts=["voice.example.com"]))


def test_trusted_proxy_ips_gate_forwarded_headers() -> None:
    headers = {"Host": "127.0.0.1:3334", "X-Forwarded-Host": "voice.example.com"}
    cfg = sec(trust=True, proxies=["198.51.100.0/24"])
    assert url(req(headers, remote="198.51.100.20"), cfg).startswith("https://voice.example.com/")
    assert url(req(headers, remote="203.0.113.5"), cfg).startswith("https://127.0.0.1/")


def test_missing_remote_ip_with_trusted_proxies_not_trusted() -> None:
    headers = {"Host": "h.example.com", "X-Forwarded-Host": "voice.example.com"}
    cfg = sec(trust=True, proxies=["198.51.100.20"])
    assert url(req(headers, remote=None), cfg).startswith("https://h.example.com/")


def test_ngrok_loopback_bypass_only_from_loopback() -> None:
    headers = {"Host": "127.0.0.1:3334", "X-Forwarded-Host": "abc.ngrok-free.app"}
    assert url(req(headers, remote="127.0.0.1"), sec(), ngrok_loopback_bypass=True) \
        .startswith("https://abc.ngrok-free.app/")
    assert url(req(headers, remote="::1"), sec(), ngrok_loopback_bypass=True) \
        .startswith("https://abc.ngrok-free.app/")
    assert url(req(headers, remote="203.0.113.1"), sec(), ngrok_loopback_bypass=True) \
        .startswith("https://127.0.0.1/")
    assert url(req(headers, remote="127.0.0.1"), sec()).startswith("https://127.0.0.1/")


def test_ngrok_loopback_bypass_still_rejects_invalid_signatures() -> None:
    headers = {"Host": "127.0.0.1:3334", "X-Forwarded-Host": "abc.ngrok-free.app"}
    u = url(req(headers, remote="127.0.0.1"), sec(), ngrok_loopback_bypass=True)
    params = {"CallSid": ["CA1"]}
    good = compute_signature(TOKEN, u, params)
    assert verify_signature(TOKEN, u, params, good)
    assert not verify_signature(TOKEN, u, params, compute_signature("other", u, params))


def test_cloudflare_tunnel_public_url() -> None:
    # cloudflared connects from loopback with its own Host; publicUrl wins regardless.
    public = "https://voice.example.com/voice/webhook"
    r = req({"Host": "localhost:3334", "X-Forwarded-Host": "evil.example.net",
             "Cf-Connecting-Ip": "198.51.100.9"}, remote="127.0.0.1")
    u = url(r, sec(), public_url=public)
    assert u == "https://voice.example.com/voice/webhook?callId=c1&type=status"
    params = {"CallSid": ["CA1"], "CallStatus": ["ringing"]}
    sig = RequestValidator(TOKEN).compute_signature(
        "https://voice.example.com/voice/webhook?callId=c1&type=status",
        {"CallSid": "CA1", "CallStatus": "ringing"})
    assert verify_signature(TOKEN, u, params, sig)


def test_public_url_keeps_port_and_drops_credentials() -> None:
    r = req({"Host": "localhost:3334"})
    assert url(r, sec(), public_url="https://user:pw@Voice.Example.com:8443/ignored") == \
        "https://voice.example.com:8443/voice/webhook?callId=c1&type=status"
    assert url(r, sec(), public_url="http://h.example.com") == \
        "http://h.example.com/voice/webhook?callId=c1&type=status"


def test_port_stripping_and_variants() -> None:
    r = req({"Host": "voice.example.com:8443"}, query="")
    u = url(r, sec())
    assert u == "https://voice.example.com/voice/webhook"
    variants = port_variants(u, None, "voice.example.com:8443")
    assert variants == ["https://voice.example.com:8443/voice/webhook"]
    signed = "https://voice.example.com:8443/voice/webhook"
    sig = compute_signature(TOKEN, signed, {"A": "1"})
    assert not verify_signature(TOKEN, u, {"A": "1"}, sig)
    assert verify_signature(TOKEN, u, {"A": "1"}, sig, extra_urls=variants)


def test_port_variants_public_url_and_host() -> None:
    u = "https://h.example.com/p?x=1"
    assert port_variants(u, "https://h.example.com:10000/base", "h.example.com:8443") == [
        "https://h.example.com:10000/p?x=1", "https://h.example.com:8443/p?x=1"]
    assert port_variants(u, "https://h.example.com/base", "h.example.com") == []
    assert port_variants(u, None, None) == []
    assert port_variants(u, None, "h.example.com:bad") == []
    assert port_variants("https://[2001:db8::1]/p", None, "[2001:db8::1]:8443") == [
        "https://[2001:db8::1]:8443/p"]
    # Same port twice: one variant.
    assert port_variants(u, "https://h.example.com:8443", "h.example.com:8443") == [
        "https://h.example.com:8443/p?x=1"]


@pytest.mark.parametrize("host", ["evil.example.net@voice.example.com",
                                  "voice.example.com@evil.example.net", "@"])
def test_userinfo_injection_in_host_rejected(host: str) -> None:
    with pytest.raises(SignatureError):
        url(req({"Host": host}), sec())


def test_missing_host_rejected() -> None:
    with pytest.raises(SignatureError):
        url(req({}), sec())


def test_ipv6_host() -> None:
    r = req({"Host": "[2001:DB8::1]:8443"}, query="")
    assert url(r, sec()) == "https://[2001:db8::1]/voice/webhook"


@pytest.mark.parametrize(("value", "expected"), [
    ("Example.COM", "example.com"),
    ("example.com:443", "example.com"),
    ("example.com.", "example.com"),
    ("203.0.113.5:80", "203.0.113.5"),
    ("[::1]", "[::1]"),
    ("[2001:db8:0:0::1]:443", "[2001:db8::1]"),
    ("xn--bcher-kva.example", "xn--bcher-kva.example"),
    ("a" * 63 + ".com", "a" * 63 + ".com"),
    ("a" * 64 + ".com", None),
    (".".join(["a" * 50] * 5), None),  # 254 chars
    ("-bad.example", None),
    ("bad-.example", None),
    ("under_score.example", None),
    ("exa mple.com", None),
    ("example.com:99x", None),
    ("example.com:", None),
    ("[::1", None),
    ("[::1]x", None),
    ("[nothex]", None),
    ("a@b", None),
    ("", None),
    (None, None),
    ("bücher.example", None),
    ("example.com/evil", None),
])
def test_extract_hostname(value: str | None, expected: str | None) -> None:
    assert extract_hostname(value) == expected


def test_path_is_used_verbatim() -> None:
    r = req({"Host": "h.example.com"}, path="/voice/webhook%2Fx", query="")
    assert url(r, sec()) == "https://h.example.com/voice/webhook%2Fx"


# --- client_ip -------------------------------------------------------------------

def test_client_ip_ignores_forwarding_without_trust() -> None:
    r = req({"X-Forwarded-For": "1.2.3.4", "X-Real-IP": "5.6.7.8"}, remote="203.0.113.10")
    assert client_ip(r, sec()) == "203.0.113.10"
    assert client_ip(r, sec(hosts=["voice.example.com"])) == "203.0.113.10"
    # trustForwardingHeaders alone (no trusted proxies) is not enough either.
    assert client_ip(r, sec(trust=True)) == "203.0.113.10"
    # Proxies listed but flag off.
    assert client_ip(r, sec(proxies=["203.0.113.10"])) == "203.0.113.10"


def test_client_ip_spoofing_from_untrusted_peer() -> None:
    r = req({"X-Forwarded-For": "10.0.0.1"}, remote="198.51.100.66")
    assert client_ip(r, sec(trust=True, proxies=["10.0.0.0/8"])) == "198.51.100.66"


def test_client_ip_right_to_left_chain() -> None:
    cfg = sec(trust=True, proxies=["10.0.0.0/8", "192.0.2.1"])
    r = req({"X-Forwarded-For": "6.6.6.6, 198.51.100.7, 192.0.2.1, 10.1.1.1"},
            remote="10.0.0.2")
    assert client_ip(r, cfg) == "198.51.100.7"


def test_client_ip_chain_all_trusted_falls_back_to_real_ip_then_remote() -> None:
    cfg = sec(trust=True, proxies=["10.0.0.0/8"])
    r = req({"X-Forwarded-For": "10.0.0.5", "X-Real-IP": "198.51.100.8"}, remote="10.0.0.2")
    assert client_ip(r, cfg) == "198.51.100.8"
    r2 = req({"X-Forwarded-For": "10.0.0.5"}, remote="10.0.0.2")
    assert client_ip(r2, cfg) == "10.0.0.2"


def test_client_ip_garbage_in_chain_stops_walk() -> None:
    cfg = sec(trust=True, proxies=["10.0.0.0/8"])
    r = req({"X-Forwarded-For": "198.51.100.1, garbage, 10.0.0.9"}, remote="10.0.0.2")
    assert client_ip(r, cfg) == "10.0.0.2"


def test_client_ip_normalisation() -> None:
    cfg = sec(trust=True, proxies=["10.0.0.0/8"])
    r = req({"X-Forwarded-For": "[2001:DB8::7]:443, ::ffff:10.0.0.3"}, remote="::ffff:10.0.0.2")
    assert client_ip(r, cfg) == "2001:db8::7"
    r2 = req({"X-Forwarded-For": "::FFFF:198.51.100.4, 203.0.113.9:5060"}, remote="10.0.0.2")
    assert client_ip(r2, cfg) == "203.0.113.9"
    assert client_ip(req({}, remote="::ffff:198.51.100.4"), sec()) == "198.51.100.4"
    assert client_ip(req({}, remote="[2001:DB8::1]"), sec()) == "2001:db8::1"


def test_client_ip_missing_remote() -> None:
    assert client_ip(req({}, remote=None), sec()) == NO_REMOTE
    assert client_ip(req({}, remote=""), sec()) == NO_REMOTE
    assert client_ip(req({"X-Forwarded-For": "1.2.3.4"}, remote=None),
                     sec(trust=True, proxies=["10.0.0.0/8"])) == NO_REMOTE


@pytest.mark.parametrize(("raw", "norm"), [
    ("1.2.3.4", "1.2.3.4"), (" 1.2.3.4 ", "1.2.3.4"), ("1.2.3.4:80", "1.2.3.4"),
    ("::FFFF:1.2.3.4", "1.2.3.4"), ("[::1]:8080", "::1"), ("fe80::1%eth0", "fe80::1"),
    ("nonsense", None), ("", None), (None, None), ("[::1", None),
])
def test_normalize_ip(raw: str | None, norm: str | None) -> None:
    assert normalize_ip(raw) == norm


# --- ReplayCache -------------------------------------------------------------------

def test_replay_seen_and_ttl() -> None:
    cache = ReplayCache()
    assert cache.seen("k", 1000.0) is False
    assert cache.seen("k", 1000.0 + 599) is True
    # The window is not extended by replays: it expires 600 s after the first sighting.
    assert cache.seen("k", 1000.0 + 600) is False
    assert cache.seen("k", 1000.0 + 601) is True


def test_replay_cap_evicts_oldest() -> None:
    cache = ReplayCache(max_entries=3, prune_every=10_000)
    for i in range(4):
        assert cache.seen(f"k{i}", float(i)) is False
    assert len(cache) == 3
    assert "k0" not in cache
    assert cache.seen("k1", 5.0) is True
    assert cache.seen("k0", 5.0) is False  # evicted, so new again


def test_replay_default_cap_is_10000() -> None:
    cache = ReplayCache(prune_every=1_000_000)
    for i in range(10_050):
        cache.seen(f"k{i}", 0.0)
    assert len(cache) == 10_000
    assert "k49" not in cache and "k50" in cache


def test_replay_prunes_expired_every_64_calls() -> None:
    cache = ReplayCache(ttl_s=10)
    for i in range(10):
        cache.seen(f"old{i}", 0.0)
    for i in range(52):
        cache.seen(f"new{i}", 100.0)
    assert len(cache) == 62  # 62 calls so far: no prune yet
    cache.seen("new52", 100.0)
    assert len(cache) == 63
    cache.seen("new53", 100.0)  # 64th call prunes the 10 expired keys
    assert len(cache) == 54
    assert "old0" not in cache


def test_replay_cached_responses() -> None:
    cache = ReplayCache(ttl_s=60)
    resp = CachedResponse(200, b"<Response/>", "text/xml")
    assert cache.seen("k", 0.0) is False
    assert cache.get_response("k", 1.0) is None
    cache.put_response("k", resp, 1.0)
    assert cache.get_response("k", 30.0) == resp
    assert cache.get_response("k", 61.0) is None
    # put_response records an unseen key too, so the next sighting is a replay.
    cache.put_response("fresh", resp, 100.0)
    assert cache.seen("fresh", 101.0) is True
    assert cache.get_response("fresh") == resp


def test_replay_eviction_drops_response() -> None:
    cache = ReplayCache(max_entries=1)
    cache.seen("a", 0.0)
    cache.put_response("a", CachedResponse(200, b"x"), 0.0)
    cache.seen("b", 0.0)
    assert cache.get_response("a", 0.0) is None
