"""Reading config documents, and where the plugin object sits in each file shape."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import json5

from voicecall.errors import ConfigError

PLUGIN_ID = "voice-call"
WHOLE_PREFIX = f"plugins.entries.{PLUGIN_ID}.config"
_JSON5_ERROR = re.compile(r"^<string>:(\d+) (.*) at column (\d+)$")


def parse_json5(text: str, source: str | Path = "<config>") -> Any:
    """Parse JSON5; a syntax error becomes a ``ConfigError`` with line and column."""
    if not text.strip():
        raise ConfigError(f"{source}: invalid JSON5: the file is empty (write {{}} for defaults)")
    try:
        return json5.loads(text)
    except ValueError as exc:
        match = _JSON5_ERROR.match(str(exc))
        if match:
            line, what, col = match.groups()
            detail = f"line {line}, column {col}: {what}"
        else:
            detail = str(exc)
        raise ConfigError(f"{source}: invalid JSON5: {detail}") from None


def read_document(path: str | Path) -> Any:
    """Parse a JSON5 config file (either shape); errors are ``ConfigError``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ConfigError(f"cannot read config file {path}: {reason}") from None
    return parse_json5(text, path)


def is_whole_document(doc: object) -> bool:
    """A whole OpenClaw config (vs. the plugin object itself): it has ``plugins``."""
    return isinstance(doc, dict) and "plugins" in doc


def plugin_entry(doc: dict[str, Any]) -> dict[str, Any] | None:
    """``plugins.entries.voice-call`` of a whole document, if it is an object."""
    plugins = doc.get("plugins")
    entries = plugins.get("entries") if isinstance(plugins, dict) else None
    entry = entries.get(PLUGIN_ID) if isinstance(entries, dict) else None
    return entry if isinstance(entry, dict) else None
