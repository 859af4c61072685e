"""Legacy config keys and their rewrite (``voicecall doctor --fix``).

Pure functions on the raw plugin config dict. The runtime applies the same
rewrite in memory (a compat shim) and warns; ``doctor --fix`` writes it back.

Rule when a legacy key and its replacement are both present: the current key
is kept, the legacy key is dropped, and the change line says so. Legacy values
only ever fill missing current fields.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

from .document import WHOLE_PREFIX, is_whole_document, plugin_entry, read_document

LEGACY_TTS_PROVIDERS = ("openai", "elevenlabs", "microsoft", "edge")
# streaming.<legacy> → streaming.providers.openai.<current>
STREAMING_OPENAI_KEYS = (
    ("openaiApiKey", "apiKey"),
    ("sttModel", "model"),
    ("silenceDurationMs", "silenceDurationMs"),
    ("vadThreshold", "vadThreshold"),
)
NUMERIC_KEYS = frozenset({"silenceDurationMs", "vadThreshold"})
# Old streaming.sttProvider values that are not provider ids today.
STT_PROVIDER_RENAMES = {"openai-realtime": "openai"}


def _is_finite_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class _Migration:
    def __init__(self, prefix: str) -> None:
        self.p = f"{prefix.rstrip('.')}." if prefix else ""
        self.changes: list[str] = []
        self.legacy: list[str] = []

    def moved(self, old: str, new: str) -> None:
        self.changes.append(f"Moved {self.p}{old} → {self.p}{new}.")

    def kept(self, current: str, old: str) -> None:
        self.changes.append(f"Kept {self.p}{current}; removed legacy {self.p}{old}.")

    def run(self, cfg: dict[str, Any]) -> None:
        if cfg.get("provider") == "log":
            self.legacy.append("provider")
            cfg["provider"] = "mock"
            self.changes.append(f'Moved {self.p}provider "log" → "mock".')
        self.twilio_from(cfg)
        streaming = cfg.get("streaming")
        if isinstance(streaming, dict):
            self.streaming(streaming)
        if isinstance(cfg.get("tts"), dict):
            self.tts(cfg["tts"], "tts")
        numbers = cfg.get("numbers")
        if isinstance(numbers, dict):
            for key, route in numbers.items():
                if isinstance(route, dict) and isinstance(route.get("tts"), dict):
                    self.tts(route["tts"], f"numbers.{key}.tts")

    def twilio_from(self, cfg: dict[str, Any]) -> None:
        twilio = cfg.get("twilio")
        if not isinstance(twilio, dict) or "from" not in twilio:
            return
        self.legacy.append("twilio.from")
        value = twilio.pop("from")
        if cfg.get("fromNumber") is None and cfg.get("from_number") is None:
            cfg.pop("from_number", None)
            cfg["fromNumber"] = value
            self.moved("twilio.from", "fromNumber")
        else:
            self.kept("fromNumber", "twilio.from")

    def streaming(self, streaming: dict[str, Any]) -> None:
        if "sttProvider" in streaming:
            self.legacy.append("streaming.sttProvider")
            value = streaming.pop("sttProvider")
            if streaming.get("provider") is None:
                streaming["provider"] = STT_PROVIDER_RENAMES.get(value, value)
                self.moved("streaming.sttProvider", "streaming.provider")
            else:
                self.kept("streaming.provider", "streaming.sttProvider")
        for old, new in STREAMING_OPENAI_KEYS:
            if old not in streaming:
                continue
            self.legacy.append(f"streaming.{old}")
            value = streaming.pop(old)
            if old in NUMERIC_KEYS and not _is_finite_number(value):
                self.changes.append(
                    f"Removed invalid {self.p}streaming.{old} (not a finite number)."
                )
                continue
            providers = streaming.get("providers")
            if providers is None:
                providers = streaming["providers"] = {}
            openai = providers.get("openai") if isinstance(providers, dict) else None
            if openai is None and isinstance(providers, dict):
                openai = providers["openai"] = {}
            target = f"streaming.providers.openai.{new}"
            if not isinstance(openai, dict):
                self.changes.append(
                    f"Removed legacy {self.p}streaming.{old}: {self.p}streaming.providers.openai "
                    "is not an object."
                )
            elif openai.get(new) is not None:
                self.kept(target, f"streaming.{old}")
            else:
                openai[new] = value
                self.moved(f"streaming.{old}", target)

    def tts(self, tts: dict[str, Any], path: str) -> None:
        for pid in LEGACY_TTS_PROVIDERS:
            if pid not in tts:
                continue
            self.legacy.append(f"{path}.{pid}")
            value = tts.pop(pid)
            old, new = f"{path}.{pid}", f"{path}.providers.{pid}"
            providers = tts.get("providers")
            if providers is None:
                providers = tts["providers"] = {}
            if not isinstance(value, dict) or not isinstance(providers, dict):
                self.changes.append(f"Removed invalid legacy {self.p}{old} (expected objects).")
                continue
            current = providers.get(pid)
            if current is None:
                providers[pid] = value
                self.moved(old, new)
                continue
            if not isinstance(current, dict):
                self.kept(new, old)
                continue
            kept = [k for k in value if current.get(k) is not None]
            for key, val in value.items():
                if current.get(key) is None:
                    current[key] = val
            if kept:
                self.changes.append(
                    f"Merged {self.p}{old} into {self.p}{new}; kept current "
                    f"{', '.join(kept)} and removed the legacy copies."
                )
            else:
                self.moved(old, new)


def migrate_plugin_object(
    raw: Mapping[str, Any], prefix: str = ""
) -> tuple[dict[str, Any], list[str], list[str]]:
    """(new plugin config, change lines, legacy key paths) for a plugin object only."""
    cfg = copy.deepcopy(dict(raw))
    migration = _Migration(prefix)
    migration.run(cfg)
    return cfg, migration.changes, migration.legacy


def migrate_legacy(raw: Mapping[str, Any], prefix: str = "") -> tuple[dict[str, Any], list[str]]:
    """Rewrite legacy keys; returns (new config, human-readable change lines).

    ``raw`` is the plugin config object, or a whole OpenClaw document (top-level
    ``plugins``), in which case only ``plugins.entries.voice-call.config`` is
    rewritten and the lines use that prefix. ``prefix`` overrides the prefix used
    in the lines. The input is never modified.
    """
    if not is_whole_document(raw):
        cfg, changes, _ = migrate_plugin_object(raw, prefix)
        return cfg, changes
    doc = copy.deepcopy(dict(raw))
    entry = plugin_entry(doc)
    plugin = entry.get("config") if entry else None
    if entry is None or not isinstance(plugin, dict):
        return doc, []
    migration = _Migration(prefix or WHOLE_PREFIX)
    migration.run(plugin)
    return doc, migration.changes


def detect_legacy_keys(raw: Mapping[str, Any]) -> list[str]:
    """Dotted paths of the legacy keys ([] when current); either shape, as above.

    For a whole document the paths carry the ``plugins.entries.voice-call.config.``
    prefix; for the plugin object they are relative to it.
    """
    if not is_whole_document(raw):
        return migrate_plugin_object(raw)[2]
    entry = plugin_entry(dict(raw))
    plugin = entry.get("config") if entry else None
    if not isinstance(plugin, dict):
        return []
    return [f"{WHOLE_PREFIX}.{path}" for path in migrate_plugin_object(plugin)[2]]


__all__ = ["detect_legacy_keys", "migrate_legacy", "migrate_plugin_object", "read_document"]
