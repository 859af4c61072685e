"""Environment-variable fallbacks, applied to the raw plugin config.

A value from the environment fills a key only when the file leaves it out (or
sets it to null), and only for what is selected: the chosen carrier, the ngrok
tunnel when it is the tunnel, the speech providers the file configures or
selects. That keeps, say, a stray ``TWILIO_AUTH_TOKEN`` from leaking into a
Telnyx setup, and an ``OPENAI_API_KEY`` from being sent to a self-hosted
OpenAI-compatible server.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from pydantic.alias_generators import to_snake

CARRIER_ENV: dict[str, tuple[tuple[str, str], ...]] = {
    "twilio": (("accountSid", "TWILIO_ACCOUNT_SID"), ("authToken", "TWILIO_AUTH_TOKEN")),
    "telnyx": (
        ("apiKey", "TELNYX_API_KEY"),
        ("connectionId", "TELNYX_CONNECTION_ID"),
        ("publicKey", "TELNYX_PUBLIC_KEY"),
    ),
    "plivo": (("authId", "PLIVO_AUTH_ID"), ("authToken", "PLIVO_AUTH_TOKEN")),
}
# Speech provider id → env vars holding its API key, first set one wins.
PROVIDER_KEY_ENV: dict[str, tuple[str, ...]] = {
    "openai": ("OPENAI_API_KEY",),
    "google": ("GEMINI_API_KEY", "GOOGLE_GENERATIVE_AI_API_KEY", "GOOGLE_API_KEY"),
    "xai": ("XAI_API_KEY",),
    "deepgram": ("DEEPGRAM_API_KEY",),
    "elevenlabs": ("ELEVENLABS_API_KEY", "XI_API_KEY"),
    "mistral": ("MISTRAL_API_KEY",),
}
OPENAI_HOST = "api.openai.com"


def _get(obj: Mapping[str, Any], key: str) -> Any:
    """A key as written in either spelling (camelCase or snake_case)."""
    value = obj.get(key)
    return obj.get(to_snake(key)) if value is None else value


def _env(env: Mapping[str, str], *names: str) -> str | None:
    for name in names:
        value = env.get(name, "").strip()
        if value:
            return value
    return None


def _fill(obj: dict[str, Any], key: str, value: str | None) -> None:
    if value is None or _get(obj, key) is not None:
        return
    obj.pop(to_snake(key), None)  # a null snake_case spelling must not shadow the alias
    obj[key] = value


def _section(cfg: dict[str, Any], key: str) -> dict[str, Any] | None:
    """The dict at ``cfg[key]`` (created when absent); None when it is not a dict."""
    value = _get(cfg, key)
    if value is None:
        cfg.pop(to_snake(key), None)
        value = cfg[key] = {}
    return value if isinstance(value, dict) else None


def _selected_providers(*sections: Mapping[str, Any] | None) -> list[str]:
    ids: list[str] = []
    for section in sections:
        if not section:
            continue
        providers = section.get("providers")
        candidates = list(providers) if isinstance(providers, dict) else []
        if isinstance(section.get("provider"), str):
            candidates.append(section["provider"])
        ids.extend(c for c in candidates if c not in ids)
    return ids


def _has_key(section: Mapping[str, Any] | None, provider_id: str) -> bool:
    providers = section.get("providers") if section else None
    blob = providers.get(provider_id) if isinstance(providers, dict) else None
    return isinstance(blob, dict) and _get(blob, "apiKey") is not None


def _fill_provider_keys(
    section: dict[str, Any], env: Mapping[str, str], also: Mapping[str, Any] | None = None
) -> None:
    for provider_id in _selected_providers(section, also):
        names = PROVIDER_KEY_ENV.get(provider_id)
        value = _env(env, *names) if names else None
        if value is None or _has_key(section, provider_id) or _has_key(also, provider_id):
            continue
        providers = _section(section, "providers")
        blob = providers.setdefault(provider_id, {}) if providers is not None else None
        if isinstance(blob, dict):
            _fill(blob, "apiKey", value)


def apply_env_fallbacks(
    plugin: Mapping[str, Any], env: Mapping[str, str], core_tts: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Copy of the raw plugin config with env values filled in where the file is silent.

    ``core_tts`` is consulted so a key the core TTS config already has is not
    overridden by the environment.
    """
    cfg = copy.deepcopy(dict(plugin))
    provider = cfg.get("provider")
    if isinstance(provider, str) and provider in CARRIER_ENV:
        section = _section(cfg, provider)
        if section is not None:
            for key, name in CARRIER_ENV[provider]:
                _fill(section, key, _env(env, name))
    if provider == "twilio":
        _fill(cfg, "fromNumber", _env(env, "TWILIO_FROM_NUMBER"))

    tunnel = _get(cfg, "tunnel")
    if isinstance(tunnel, dict) and tunnel.get("provider") == "ngrok":
        _fill(tunnel, "ngrokAuthToken", _env(env, "NGROK_AUTHTOKEN"))
        _fill(tunnel, "ngrokDomain", _env(env, "NGROK_DOMAIN"))

    for name in ("streaming", "realtime"):
        section = _get(cfg, name)
        if isinstance(section, dict):
            _fill_provider_keys(section, env)
    tts = _get(cfg, "tts")
    if isinstance(tts, dict) or (core_tts and _selected_providers(core_tts)):
        tts_section = _section(cfg, "tts")
        if tts_section is not None:
            _fill_provider_keys(tts_section, env, also=core_tts)

    responder = _get(cfg, "responder")
    if isinstance(responder, dict) and responder.get("kind") == "openai":
        base_url = _get(responder, "baseUrl")
        # Only the real OpenAI endpoint gets OPENAI_API_KEY; a local server must not.
        if base_url is None or urlsplit(str(base_url)).hostname == OPENAI_HOST:
            _fill(responder, "apiKey", _env(env, "OPENAI_API_KEY"))
    return cfg
