"""Turn pydantic's validation errors into one readable ``ConfigError``."""

from __future__ import annotations

import re
from collections.abc import Sequence

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from voicecall.errors import ConfigError

from .fields import CROSS_FIELD


class ConfigValidationError(ConfigError):
    """The config file broke one or more rules; ``errors`` has one line per problem,
    each ``<dotted.json.path>: <message>``."""

    def __init__(self, errors: Sequence[str], source: str | None = None) -> None:
        self.errors = list(errors)
        where = f" in {source}" if source else ""
        head = f"invalid voice-call config{where} ({len(self.errors)} problem"
        head += "s)" if len(self.errors) != 1 else ")"
        ConfigError.__init__(self, head + ":\n" + "\n".join(f"  - {e}" for e in self.errors))


def json_path(loc: Sequence[int | str], prefix: str = "") -> str:
    """``("numbers", "+1555", "tts")`` → ``numbers.+1555.tts``; list indexes as ``[i]``."""
    out = prefix.rstrip(".")
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out = f"{out}.{part}" if out else part
    return out


def _line(err: ErrorDetails, prefix: str) -> str:
    loc = list(err["loc"])
    ctx = err.get("ctx") or {}
    if loc and loc[-1] == "[key]":
        loc.pop()  # an invalid dict key: the key itself is the last path part
    if err["type"] == CROSS_FIELD:
        loc.extend(str(ctx["field"]).split("."))
    path = json_path(loc, prefix) or "(top level)"
    if err["type"] == "extra_forbidden":
        return f"{path}: unknown key"
    msg = err["msg"]
    if err["type"] in ("literal_error", "enum") and "expected" in ctx:
        allowed = re.findall(r"'([^']*)'", str(ctx["expected"]))
        msg += f" (allowed: {', '.join(allowed)})"
    elif err["type"] == "missing":
        msg = "required"
    return f"{path}: {msg}"


def format_errors(exc: ValidationError, prefix: str = "") -> list[str]:
    """One ``path: message`` line per pydantic error, camelCase paths as written."""
    lines: list[str] = []
    for err in exc.errors(include_url=False):
        line = _line(err, prefix)
        if line not in lines:
            lines.append(line)
    return lines
