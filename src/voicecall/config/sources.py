"""Finding, reading and layering the config: defaults < file < env < SecretRefs.

Two file shapes are accepted, as the seed writes them:

- the plugin config object itself (``{provider: "twilio", fromNumber: ...}``);
  ``enabled`` defaults to true, since writing the file is the intent;
- a whole OpenClaw config (recognised by a top-level ``plugins`` key) holding
  it at ``plugins.entries.voice-call.config``; ``enabled`` then comes from
  ``plugins.entries.voice-call.enabled`` (default false; a ``config.enabled``
  must agree) and ``messages.tts`` is the core TTS config.

With no file at all the embedded defaults run the offline mock carrier.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from voicecall.errors import ConfigError

from .document import PLUGIN_ID, WHOLE_PREFIX, read_document
from .envfallback import apply_env_fallbacks
from .errors import ConfigValidationError, format_errors
from .migrate import migrate_plugin_object
from .model import VoiceCallConfig
from .routing import effective_tts
from .secret import wrap_secrets
from .secretrefs import PLUGIN_SECRET_PATHS, TTS_SECRET_PATHS, resolve_secret_refs

CONFIG_FILE_NAME = "config.json5"
EMBEDDED_DEFAULTS: dict[str, Any] = {"enabled": True, "provider": "mock"}


@dataclass(frozen=True)
class LoadedConfig:
    """A validated config plus where it came from.

    ``raw`` is the plugin config object exactly as the file has it (SecretRefs
    unresolved, legacy keys not rewritten); it may hold plain-text secrets, so
    it is left out of ``repr``, like ``core_tts``.
    """

    config: VoiceCallConfig
    path: Path | None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)
    core_tts: dict[str, Any] = field(default_factory=dict, repr=False)
    legacy_keys: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    prefix: str = ""  # "plugins.entries.voice-call.config" for a whole OpenClaw file

    def tts_for(self, route_key: str | None = None) -> dict[str, Any]:
        """Effective TTS settings: core ``messages.tts`` < plugin ``tts`` < route ``tts``."""
        return effective_tts(self.config, route_key, self.core_tts)


def _environ(env: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if env is None else env


def home_dir(env: Mapping[str, str] | None = None) -> Path:
    """State directory: ``$VOICECALL_HOME``, else ``~/.voicecall``."""
    value = _environ(env).get("VOICECALL_HOME", "").strip()
    return Path(value).expanduser() if value else Path("~/.voicecall").expanduser()


def _existing_file(path: Path, origin: str) -> Path:
    if path.is_dir():
        raise ConfigError(f"config path {path} ({origin}) is a directory, not a file")
    if not path.is_file():
        raise ConfigError(f"config file {path} ({origin}) does not exist")
    return path


def find_config_path(
    explicit: str | Path | None, env: Mapping[str, str] | None = None
) -> Path | None:
    """``--config PATH``, else ``$VOICECALL_CONFIG``, else ``$VOICECALL_HOME/config.json5``.

    An explicit or env path that does not exist is an error; the home file is
    optional (None means: use the embedded defaults).
    """
    environ = _environ(env)
    if explicit is not None and str(explicit).strip():
        return _existing_file(Path(explicit).expanduser(), "from --config")
    from_env = environ.get("VOICECALL_CONFIG", "").strip()
    if from_env:
        return _existing_file(Path(from_env).expanduser(), "from $VOICECALL_CONFIG")
    candidate = home_dir(environ) / CONFIG_FILE_NAME
    return candidate if candidate.is_file() else None


@dataclass
class _Shape:
    plugin: dict[str, Any]
    enabled: bool | None  # None: plugin shape, decided by the plugin object itself
    core_tts: dict[str, Any]
    prefix: str
    warnings: list[str]


def _object(value: Any, path: str, source: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigValidationError([f"{path}: expected an object"], source)
    return value


def split_document(doc: Any, source: str = "<config>") -> _Shape:
    """Find the plugin config (and the core TTS config) in either file shape."""
    if not isinstance(doc, dict):
        raise ConfigValidationError(["(top level): expected an object"], source)
    if "plugins" not in doc:
        return _Shape(doc, None, {}, "", [])
    plugins = _object(doc["plugins"], "plugins", source)
    entries = _object(plugins.get("entries"), "plugins.entries", source)
    messages = _object(doc.get("messages"), "messages", source)
    core_tts = _object(messages.get("tts"), "messages.tts", source)
    entry_path = f"plugins.entries.{PLUGIN_ID}"
    if PLUGIN_ID not in entries:
        note = f"{entry_path} is not in {source}; voice-call is disabled"
        return _Shape({}, False, core_tts, WHOLE_PREFIX, [note])
    entry = _object(entries[PLUGIN_ID], entry_path, source)
    plugin = _object(entry.get("config"), WHOLE_PREFIX, source)
    flags = [entry.get("enabled"), plugin.get("enabled")]
    for flag, where in zip(flags, (entry_path, WHOLE_PREFIX), strict=True):
        if not isinstance(flag, bool | None):
            raise ConfigValidationError([f"{where}.enabled: Input should be a valid boolean"],
                                        source)
    # Both switches must agree; a missing entry switch means off (reference default).
    enabled = flags[0] is True and flags[1] is not False
    return _Shape(plugin, enabled, core_tts, WHOLE_PREFIX, [])


def load_config_data(
    doc: Any,
    env: Mapping[str, str] | None = None,
    source: Path | None = None,
) -> LoadedConfig:
    """Validate an already-parsed document (either shape) into a ``LoadedConfig``."""
    environ = _environ(env)
    where = str(source) if source else "<config>"
    shape = split_document(doc, where)
    prefix, p = shape.prefix, f"{shape.prefix}." if shape.prefix else ""
    warnings = list(shape.warnings)
    base_dir = source.parent if source else None

    # Runtime compat shim: legacy keys are rewritten in memory, never on disk.
    plugin, _, legacy = migrate_plugin_object(shape.plugin)
    if legacy:
        warnings.append(
            f"legacy config keys detected: {', '.join(p + k for k in legacy)}. "
            'Run "voicecall doctor --fix".'
        )
    if shape.enabled is not None:
        plugin["enabled"] = shape.enabled
    else:
        plugin.setdefault("enabled", True)

    core_tts = migrate_plugin_object({"tts": shape.core_tts})[0]["tts"]
    core_tts = resolve_secret_refs(
        core_tts, TTS_SECRET_PATHS, environ, prefix="messages.tts", base_dir=base_dir
    )
    plugin = apply_env_fallbacks(plugin, environ, core_tts)
    plugin = resolve_secret_refs(
        plugin, PLUGIN_SECRET_PATHS, environ, prefix=prefix, base_dir=base_dir
    )
    try:
        cfg = VoiceCallConfig.model_validate(plugin)
    except ValidationError as exc:
        raise ConfigValidationError(format_errors(exc, prefix), where) from None

    if cfg.realtime.enabled and cfg.streaming.enabled:
        raise ConfigValidationError(
            [f"{p}realtime.enabled: realtime.enabled and streaming.enabled cannot both be "
             "true; choose one audio mode per call"],
            where,
        )
    if cfg.skip_signature_verification:
        warnings.append(
            f"{p}skipSignatureVerification is true: carrier webhook signatures are NOT "
            "verified; use it for local testing only"
        )
    return LoadedConfig(
        config=cfg,
        path=source,
        raw=copy.deepcopy(shape.plugin),
        core_tts=wrap_secrets(core_tts),
        legacy_keys=legacy,
        warnings=warnings,
        prefix=prefix,
    )


def load_config(
    path: str | Path | None = None, env: Mapping[str, str] | None = None
) -> LoadedConfig:
    """Find (see ``find_config_path``), read and validate the config.

    No file anywhere → embedded defaults ``{enabled: true, provider: "mock"}``.
    Raises ``ConfigError`` (``ConfigValidationError`` for rule violations).
    """
    environ = _environ(env)
    file = find_config_path(path, environ)
    if file is None:
        return load_config_data(copy.deepcopy(EMBEDDED_DEFAULTS), environ, None)
    return load_config_data(read_document(file), environ, file)
