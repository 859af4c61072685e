"""Shared helpers for the TTS providers: config reading, HTTP error mapping, text splitting.

Provider config blocks are the camelCase dicts under ``tts.providers.<id>``
(API keys may be ``voicecall.config.Secret`` values). Every error raised here
names the config key path and never contains a credential.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

import httpx

from voicecall.errors import ConfigError, ProviderError

MAX_ERROR_TEXT = 300
# Idle gap allowed between two body chunks once a response has started.
DEFAULT_READ_TIMEOUT_S = 20.0
CONNECT_TIMEOUT_S = 5.0

_SENTENCE_END = re.compile(r"(?<=[.!?;:。！？；])\s+")


def path_of(provider_id: str, key: str) -> str:
    return f"tts.providers.{provider_id}.{key}"


def reveal(value: object) -> str | None:
    """A plain string from a ``str`` or a ``Secret`` (anything with ``reveal()``)."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    reveal_fn = getattr(value, "reveal", None)
    if callable(reveal_fn):
        revealed = reveal_fn()
        return revealed if isinstance(revealed, str) else None
    return None


def api_key(cfg: Mapping[str, Any], provider_id: str) -> str:
    """``apiKey`` (``api_key`` accepted) as a string; ConfigError naming the path if absent."""
    raw = cfg.get("apiKey", cfg.get("api_key"))
    if isinstance(raw, Mapping):
        raise ConfigError("unresolved secret reference", path=path_of(provider_id, "apiKey"))
    key = reveal(raw)
    if not key or not key.strip():
        raise ConfigError(f"an API key is required for the {provider_id} TTS provider",
                          path=path_of(provider_id, "apiKey"))
    return key.strip()


def opt_str(cfg: Mapping[str, Any], provider_id: str, *keys: str) -> str | None:
    """The first of ``keys`` that is set, as a stripped non-empty string (else None)."""
    for key in keys:
        value = cfg.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise ConfigError("must be a string", path=path_of(provider_id, key))
        if value.strip():
            return value.strip()
    return None


def opt_number(cfg: Mapping[str, Any], provider_id: str, key: str, *,
               low: float | None = None, high: float | None = None) -> float | None:
    value = cfg.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError("must be a number", path=path_of(provider_id, key))
    if (low is not None and value < low) or (high is not None and value > high):
        raise ConfigError(f"must be between {low:g} and {high:g}",
                          path=path_of(provider_id, key))
    return float(value)


def base_url(cfg: Mapping[str, Any], provider_id: str, default: str) -> str:
    url = opt_str(cfg, provider_id, "baseUrl", "base_url") or default
    if not url.startswith(("http://", "https://")):
        raise ConfigError("must be an http(s) URL", path=path_of(provider_id, "baseUrl"))
    return url.rstrip("/")


def read_timeout_s(cfg: Mapping[str, Any], provider_id: str) -> float:
    ms = opt_number(cfg, provider_id, "timeoutMs", low=1, high=600_000)
    return DEFAULT_READ_TIMEOUT_S if ms is None else ms / 1000.0


def http_client(read_timeout: float) -> httpx.AsyncClient:
    """One pooled client per provider instance: keeps TLS warm between sentences."""
    timeout = httpx.Timeout(connect=CONNECT_TIMEOUT_S, read=read_timeout, write=10.0,
                            pool=CONNECT_TIMEOUT_S)
    return httpx.AsyncClient(timeout=timeout, follow_redirects=False)


def redact(text: str, secret: str | None) -> str:
    if secret:
        text = text.replace(secret, "***")
    return text


def retryable_status(status: int) -> bool:
    return status == 429 or status >= 500


def status_error(label: str, status: int, body: bytes, secret: str | None) -> ProviderError:
    """``ProviderError`` for a non-2xx answer, with the vendor's message (key redacted)."""
    message = error_message(body)
    text = f"{label} HTTP {status}" + (f": {message}" if message else "")
    return ProviderError(redact(text, secret), retryable=retryable_status(status),
                         status_code=status)


def network_error(label: str, exc: httpx.HTTPError, secret: str | None,
                  *, started: bool) -> ProviderError:
    detail = str(exc) or type(exc).__name__
    where = "mid-stream" if started else "before audio"
    return ProviderError(redact(f"{label} failed {where}: {detail}", secret)[:MAX_ERROR_TEXT],
                         retryable=True)


def error_message(body: bytes) -> str:
    """The human part of an OpenAI (``{"error":{...}}``) or ElevenLabs (``{"detail":...}``) error."""
    try:
        data: Any = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace").strip()[:MAX_ERROR_TEXT]
    if not isinstance(data, dict):
        return json.dumps(data)[:MAX_ERROR_TEXT]
    error = data.get("error")
    if isinstance(error, dict):
        message = str(error.get("message") or "unknown error")
        code = error.get("code") or error.get("type")
        return (f"{message} ({code})" if isinstance(code, str) else message)[:MAX_ERROR_TEXT]
    detail = data.get("detail")
    if isinstance(detail, dict):
        message = str(detail.get("message") or "unknown error")
        status = detail.get("status") or detail.get("code")
        return (f"{message} ({status})" if isinstance(status, str) else message)[:MAX_ERROR_TEXT]
    if isinstance(detail, list):
        parts = []
        for item in detail[:3]:
            if isinstance(item, dict):
                loc = ".".join(str(p) for p in item.get("loc", []) if p != "body")
                parts.append(f"{loc}: {item.get('msg', 'invalid')}" if loc else
                             str(item.get("msg", "invalid")))
        return "; ".join(parts)[:MAX_ERROR_TEXT] or "validation error"
    if isinstance(detail, str):
        return detail[:MAX_ERROR_TEXT]
    if isinstance(error, str):
        return error[:MAX_ERROR_TEXT]
    return json.dumps(data)[:MAX_ERROR_TEXT]


def split_sentences(text: str) -> list[str]:
    """Sentences (terminal punctuation kept), blank pieces dropped."""
    return [s.strip() for s in _SENTENCE_END.split(text.strip()) if s.strip()]


def split_for_limit(text: str, limit: int) -> list[str]:
    """Pieces of at most ``limit`` characters, cut at sentence ends, else at spaces."""
    text = text.strip()
    if len(text) <= limit:
        return [text] if text else []
    pieces: list[str] = []
    current = ""
    for sentence in split_sentences(text):
        while len(sentence) > limit:
            cut = sentence.rfind(" ", 0, limit)
            cut = cut if cut > 0 else limit
            if current:
                pieces.append(current)
                current = ""
            pieces.append(sentence[:cut].strip())
            sentence = sentence[cut:].strip()
        if current and len(current) + 1 + len(sentence) > limit:
            pieces.append(current)
            current = ""
        current = f"{current} {sentence}" if current else sentence
    if current:
        pieces.append(current)
    return [p for p in pieces if p]
