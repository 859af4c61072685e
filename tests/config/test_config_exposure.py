"""Webhook exposure: public hosts only for real carriers (seed troubleshooting list)."""

from __future__ import annotations

from typing import Any

import pytest

from voicecall.config import (
    VoiceCallConfig,
    is_private_host,
    private_host_reason,
    webhook_exposure,
)

PRIVATE_HOSTS = [
    "localhost", "LOCALHOST", "localhost.", "app.localhost", "localhost.localdomain",
    "printer.local", "metadata.google.internal", "db.internal",
    "127.0.0.1", "127.8.9.10", "0.0.0.0", "10.0.0.1", "10.255.255.255",
    "172.16.0.1", "172.31.255.254", "192.168.1.20", "169.254.169.254",
    "100.64.0.1", "100.127.255.254",
    "::1", "[::1]", "::", "fc00::1", "fd12:3456::1", "fe80::1", "fe80::1%eth0",
    "::ffff:127.0.0.1", "::ffff:10.1.2.3", "[::ffff:192.168.0.1]",
    "127.1", "2130706433", "0x7f.0.0.1",
]
PUBLIC_HOSTS = ["voice.example.com", "8.8.8.8", "1.1.1.1", "172.32.0.1", "100.128.0.1",
                "2606:4700:4700::1111", "::ffff:8.8.8.8", "abc.ngrok.app"]


@pytest.mark.parametrize("host", PRIVATE_HOSTS)
def test_private_hosts(host: str) -> None:
    assert is_private_host(host), host
    assert private_host_reason(host)


@pytest.mark.parametrize("host", PUBLIC_HOSTS)
def test_public_hosts(host: str) -> None:
    assert not is_private_host(host), host


def cfg(**data: Any) -> VoiceCallConfig:
    return VoiceCallConfig.model_validate(data)


def test_mock_needs_no_public_webhook() -> None:
    assert webhook_exposure(cfg(provider="mock")) == (
        True, "Mock provider does not need a public webhook")


def test_no_provider() -> None:
    ok, message = webhook_exposure(cfg())
    assert not ok and "provider" in message


@pytest.mark.parametrize("url", [
    "http://localhost:3334/voice/webhook", "https://127.0.0.1/voice/webhook",
    "http://0.0.0.0/voice/webhook", "https://10.1.2.3/voice/webhook",
    "https://172.20.0.5/voice/webhook", "https://192.168.0.10/voice/webhook",
    "https://169.254.1.1/voice/webhook", "https://[fd00::5]/voice/webhook",
    "https://[fc00::5]/voice/webhook", "https://[::1]:8443/voice/webhook",
])
def test_private_public_url_fails(url: str) -> None:
    ok, message = webhook_exposure(cfg(provider="twilio", publicUrl=url))
    assert not ok
    assert url in message and "local-only" in message and "publicUrl" in message


def test_public_url_ok_and_takes_priority() -> None:
    url = "https://voice.example.com/voice/webhook"
    ok, message = webhook_exposure(cfg(provider="telnyx", publicUrl=url,
                                       tunnel={"provider": "tailscale-serve"}))
    assert ok and url in message


def test_ngrok_tunnel() -> None:
    assert webhook_exposure(cfg(provider="twilio", tunnel={"provider": "ngrok"}))[0]
    ok, message = webhook_exposure(cfg(provider="twilio", tunnel={
        "provider": "ngrok", "ngrokDomain": "voice.ngrok.app"}))
    assert ok and "https://voice.ngrok.app/voice/webhook" in message


@pytest.mark.parametrize("extra", [{"tunnel": {"provider": "tailscale-funnel"}},
                                   {"tailscale": {"mode": "funnel"}}])
def test_tailscale_funnel_is_public(extra: dict[str, Any]) -> None:
    assert webhook_exposure(cfg(provider="plivo", **extra))[0]


@pytest.mark.parametrize("extra", [{"tunnel": {"provider": "tailscale-serve"}},
                                   {"tailscale": {"mode": "serve"}}])
def test_tailscale_serve_is_tailnet_only(extra: dict[str, Any]) -> None:
    ok, message = webhook_exposure(cfg(provider="plivo", **extra))
    assert not ok and "tailnet" in message


def test_serve_fallback_on_loopback_fails() -> None:
    ok, message = webhook_exposure(cfg(provider="twilio"))
    assert not ok
    assert "http://127.0.0.1:3334/voice/webhook" in message
    assert "publicUrl" in message


def test_serve_fallback_on_all_interfaces_fails() -> None:
    assert not webhook_exposure(cfg(provider="twilio", serve={"bind": "0.0.0.0"}))[0]
    assert not webhook_exposure(cfg(provider="twilio", serve={"bind": "::"}))[0]


def test_serve_fallback_on_public_address_ok() -> None:
    ok, message = webhook_exposure(cfg(provider="twilio", serve={"bind": "203.0.113.1"}))
    # 203.0.113.0/24 is a documentation range: special-use, so not public.
    assert not ok
    ok, message = webhook_exposure(cfg(provider="twilio", serve={"bind": "8.8.4.4"}))
    assert ok and "http://8.8.4.4:3334/voice/webhook" in message
