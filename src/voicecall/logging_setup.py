"""Log setup: key=value events on stderr; caller data never goes into log records.

The runtime logs call ids, states and reasons only. Records that carry
personal data put it under ``pii_*`` extra keys, which this formatter drops
unless ``log.includePii`` is on. Values with spaces, quotes or ``=`` are
JSON-quoted (logfmt style) so one event stays one parsable line.
"""

from __future__ import annotations

import json
import logging

_STD = set(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}
_NEEDS_QUOTES = frozenset(' "=\n\r\t')


def _value(value: object) -> str:
    text = str(value)
    if not text or any(c in _NEEDS_QUOTES for c in text):
        return json.dumps(text, ensure_ascii=False)
    return text


class KeyValueFormatter(logging.Formatter):
    def __init__(self, include_pii: bool = False) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")
        self.include_pii = include_pii

    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        extras = []
        for key, value in vars(record).items():
            if key in _STD or key.startswith("_"):
                continue
            if key.startswith("pii_") and not self.include_pii:
                continue
            extras.append(f"{key}={_value(value)}")
        return base + (" " + " ".join(extras) if extras else "")


def configure(level: str = "info", include_pii: bool = False) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(KeyValueFormatter(include_pii))
    root = logging.getLogger("voicecall")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
