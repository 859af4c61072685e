"""Per-number routing and the TTS merge.

Inbound calls pick a ``numbers`` route by the dialled ``To`` number (exact key,
then digits-only comparison); the route overrides the global config field by
field, except ``tts``, which is deep-merged. Outbound calls never use routes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .fields import E164_RE
from .model import VoiceCallConfig
from .sections import DEFAULT_TTS_TIMEOUT_MS, TtsConfig

# Keys that could poison prototype chains once the merged config reaches JS
# land (or confuse anything that copies it); never merged.
_UNSAFE_KEYS = frozenset({"__proto__", "constructor", "prototype"})
_PHONE_CHARS = re.compile(r"^\+?[0-9\s\-().\u00a0]+$")


def digits_only(value: str | None) -> str:
    """The ASCII digits of ``value``, in order."""
    return "".join(c for c in value or "" if "0" <= c <= "9")


def normalize_e164(value: str | None) -> str | None:
    """Best-effort E.164 form of a carrier-supplied number, or None.

    Accepts ``+1 (555) 000-1234``, ``tel:+15550001234``, ``sip:+1555...@host``,
    ``0044...`` (international prefix) and bare digits such as Plivo sends
    (``15550001234``: assumed to already include the country code).
    """
    if not value:
        return None
    text = value.strip()
    for scheme in ("tel:", "sips:", "sip:"):
        if text.lower().startswith(scheme):
            text = text[len(scheme):].split("@", 1)[0].split(";", 1)[0]
            break
    if not _PHONE_CHARS.match(text):
        return None
    digits = digits_only(text)
    if not text.startswith("+") and digits.startswith("00"):
        digits = digits[2:]
    candidate = "+" + digits
    return candidate if E164_RE.fullmatch(candidate) else None


def route_key_for(cfg: VoiceCallConfig, dialled_to: str | None) -> str | None:
    """The ``numbers`` key matching a dialled number: exact key first, then digits."""
    if not dialled_to:
        return None
    if dialled_to in cfg.numbers:
        return dialled_to
    wanted = digits_only(dialled_to)
    if not wanted:
        return None
    for key in cfg.numbers:
        if digits_only(key) == wanted:
            return key
    return None


def deep_merge(*layers: Mapping[str, Any] | None) -> dict[str, Any]:
    """Merge JSON-like dicts, later layers winning; dicts merge recursively.

    ``None`` values never override, and ``__proto__``/``constructor``/
    ``prototype`` keys are dropped. Inputs are not modified.
    """
    out: dict[str, Any] = {}
    for layer in layers:
        if not layer:
            continue
        for key, value in layer.items():
            if key in _UNSAFE_KEYS or value is None:
                continue
            if isinstance(value, Mapping):
                base = out.get(key)
                out[key] = deep_merge(base if isinstance(base, Mapping) else None, value)
            elif isinstance(value, list):
                out[key] = list(value)
            else:
                out[key] = value
    return out


def merge_tts(
    core: Mapping[str, Any] | None,
    plugin: Mapping[str, Any] | None,
    route: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Core ``messages.tts`` < plugin ``tts`` < number-route ``tts`` (camelCase dicts)."""
    return deep_merge(core, plugin, route)


def tts_overrides(tts: TtsConfig | None) -> dict[str, Any]:
    """Only what the config file set, as camelCase JSON keys (secrets stay ``Secret``)."""
    if tts is None:
        return {}
    return tts.model_dump(by_alias=True, exclude_unset=True)


def effective_config(cfg: VoiceCallConfig, route_key: str | None) -> VoiceCallConfig:
    """``{...global, ...route}`` for a matched route key, with ``tts`` deep-merged."""
    route = cfg.numbers.get(route_key) if route_key else None
    if route is None:
        return cfg
    update: dict[str, Any] = {
        name: getattr(route, name)
        for name in route.model_fields_set
        if name != "tts" and getattr(route, name) is not None
    }
    if route.tts is not None:
        merged = merge_tts(None, tts_overrides(cfg.tts), tts_overrides(route.tts))
        update["tts"] = TtsConfig.model_validate(merged)
    return cfg.model_copy(update=update)


def effective_tts(
    cfg: VoiceCallConfig,
    route_key: str | None = None,
    core_tts: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The TTS settings a call uses: core < plugin < route, plus the timeout default.

    Returns camelCase keys; API keys inside ``providers`` are ``Secret`` values.
    Pass ``LoadedConfig.core_tts`` as ``core_tts`` (or use ``LoadedConfig.tts_for``).
    """
    route = cfg.numbers.get(route_key) if route_key else None
    merged = merge_tts(
        core_tts, tts_overrides(cfg.tts), tts_overrides(route.tts if route else None)
    )
    merged.setdefault("timeoutMs", DEFAULT_TTS_TIMEOUT_MS)
    return merged


def agent_workspace(cfg: VoiceCallConfig, agent_id: str, default: Path | None) -> Path | None:
    """``agents.<id>.workspace``, else the gateway's default workspace."""
    profile = cfg.agents.get(agent_id)
    if profile is not None and profile.workspace:
        return Path(profile.workspace)
    return default
