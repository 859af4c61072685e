"""``build_tts``: the call's TTS from the merged TTS config.

Input is the effective TTS dict (core ``messages.tts`` < plugin ``tts`` <
number route ``tts``, already deep-merged, camelCase)::

    {"provider": "openai", "timeoutMs": 8000,
     "providers": {"openai": {"apiKey": Secret(...), "voice": "marin"},
                   "local": {"voice": "slt"}}}

The chain is ``provider`` first, then every other configured provider in
config order (legacy blocks placed directly under ``tts``, as an unmigrated
core config may have, count as configured too). Microsoft/Edge entries are
skipped with a warning; unknown ids are skipped with a warning. A
misconfigured ``provider`` raises ``ConfigError`` (it was chosen explicitly);
any other misconfigured provider is skipped with a warning. ``timeoutMs`` (default
8000) bounds each provider's wait for its first audio.

Factories come from ``voicecall.speech.registry`` when one is registered
under the id, else from the built-ins here (``openai``, ``elevenlabs``,
``local``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

from voicecall.errors import ConfigError
from voicecall.speech import registry
from voicecall.speech.tts import elevenlabs, local, openai
from voicecall.speech.tts.base import TTS
from voicecall.speech.tts.fallback import (
    DEFAULT_FIRST_AUDIO_TIMEOUT_MS,
    FallbackTTS,
    is_microsoft,
    warn_microsoft,
)

__all__ = ["BUILTIN_TTS", "TIMEOUT_MS_MAX", "build_tts", "create", "provider_order",
           "timeout_ms"]

log = logging.getLogger("voicecall.speech.tts")

BUILTIN_TTS: dict[str, Callable[[Mapping[str, Any]], TTS]] = {
    "openai": openai.create,
    "elevenlabs": elevenlabs.create,
    "local": local.create,
}
_LEGACY_BLOCKS = ("openai", "elevenlabs", "microsoft", "edge")
TIMEOUT_MS_MAX = 600_000


def _norm(provider_id: object) -> str:
    return provider_id.strip().lower() if isinstance(provider_id, str) else ""


def _provider_blocks(tts_cfg: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    blocks: dict[str, Mapping[str, Any]] = {}
    providers = tts_cfg.get("providers")
    if isinstance(providers, Mapping):
        for key, value in providers.items():
            pid = _norm(key)
            if pid and isinstance(value, Mapping):
                blocks.setdefault(pid, value)
    for key in _LEGACY_BLOCKS:
        value = tts_cfg.get(key)
        if isinstance(value, Mapping):
            blocks.setdefault(key, value)
    return blocks


def provider_order(tts_cfg: Mapping[str, Any]) -> list[str]:
    """Provider ids in the order they are tried: ``provider`` first, then the rest."""
    primary = _norm(tts_cfg.get("provider"))
    order = [primary] if primary else []
    order += [pid for pid in _provider_blocks(tts_cfg) if pid != primary]
    return order


def timeout_ms(tts_cfg: Mapping[str, Any]) -> float:
    """``timeoutMs`` as a positive finite number, clamped; the default when unusable."""
    value = tts_cfg.get("timeoutMs")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or value <= 0:
        return DEFAULT_FIRST_AUDIO_TIMEOUT_MS
    return float(min(value, TIMEOUT_MS_MAX))


def _factory(pid: str) -> Callable[[Mapping[str, Any]], TTS] | None:
    if pid in registry.tts_names():
        def from_registry(cfg: Mapping[str, Any]) -> TTS:
            tts = registry.resolve_tts(pid, {pid: cfg})
            if tts is None:  # pragma: no cover - resolve only returns None when unregistered
                raise ConfigError("provider vanished from the registry", path="tts.provider")
            return tts
        return from_registry
    return BUILTIN_TTS.get(pid)


def build_tts(tts_cfg: Mapping[str, Any]) -> TTS | None:
    """The telephony TTS for a call, or ``None`` (with a warning) when none is usable."""
    blocks = _provider_blocks(tts_cfg)
    order = provider_order(tts_cfg)
    chain: list[TTS] = []
    primary = _norm(tts_cfg.get("provider"))
    for pid in order:
        if is_microsoft(pid):
            warn_microsoft(pid)
            continue
        factory = _factory(pid)
        if factory is None:
            log.warning("Telephony TTS provider %s is not available (known: %s); skipping it",
                        pid, ", ".join(sorted({*BUILTIN_TTS, *registry.tts_names()})))
            continue
        try:
            chain.append(factory(blocks.get(pid, {})))
        except ConfigError as exc:
            if pid == primary:  # tried first, so nothing has been built yet
                raise
            log.warning("Telephony TTS fallback provider %s skipped: %s", pid, exc)
    if not chain:
        log.warning("no usable telephony TTS provider configured (tts.provider=%s); "
                    "calls will not speak through TTS", primary or "unset")
        return None
    return FallbackTTS(chain, first_audio_timeout_ms=timeout_ms(tts_cfg))


def create(cfg: Mapping[str, Any]) -> TTS:
    """``build_tts`` that insists on a result: ConfigError when nothing is usable."""
    tts = build_tts(cfg)
    if tts is None:
        raise ConfigError("no usable telephony TTS provider is configured", path="tts.provider")
    return tts
