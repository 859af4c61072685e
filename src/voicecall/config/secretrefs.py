"""Resolve SecretRefs in the raw config before validation.

Accepted forms, at credential keys only (see ``PLUGIN_SECRET_PATHS``):

- ``"${NAME}"`` (also ``"${env:NAME}"``): the whole string names an env var;
- ``{source: "env", id: "NAME"}``;
- ``{source: "file", path: "/run/secrets/x"}`` (or ``id``): file contents, trailing
  newlines stripped; a relative path is relative to the config file;
- ``{source: "exec", command: ["vault", "read", ...]}`` (or ``argv``, or ``id`` /
  ``command`` as one string split like a shell would, but run without a shell):
  stripped stdout; 10 s timeout.

``provider`` (OpenClaw's provider alias) is accepted and ignored. A ref that
cannot be resolved is a ``ConfigError`` naming the key path; messages never
include a resolved value or command output.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic.alias_generators import to_snake

from voicecall.errors import ConfigError

from .secret import SECRET_KEY_NAMES

EXEC_TIMEOUT_S = 10.0
_ENV_REF = re.compile(r"^\$\{(?:env:)?([A-Za-z_][A-Za-z0-9_]*)\}$")
SECRET = "<secret>"  # path element: any key in SECRET_KEY_NAMES

PluginPath = tuple[str, ...]
PLUGIN_SECRET_PATHS: tuple[PluginPath, ...] = (
    ("twilio", "accountSid"),
    ("twilio", "authToken"),
    ("telnyx", "apiKey"),
    ("telnyx", "connectionId"),
    ("telnyx", "publicKey"),
    ("plivo", "authId"),
    ("plivo", "authToken"),
    ("responder", "apiKey"),
    ("tunnel", "ngrokAuthToken"),
    ("tunnel", "ngrokDomain"),
    ("realtime", "providers", "*", SECRET),
    ("streaming", "providers", "*", SECRET),
    ("tts", "providers", "*", SECRET),
    ("numbers", "*", "tts", "providers", "*", SECRET),
)
TTS_SECRET_PATHS: tuple[PluginPath, ...] = (("providers", "*", SECRET),)


def is_secret_ref(value: object) -> bool:
    if isinstance(value, str):
        return bool(_ENV_REF.match(value))
    return isinstance(value, dict) and "source" in value


def _key_matches(key: str, pattern: str) -> bool:
    if pattern == "*":
        return True
    if pattern == SECRET:
        return key in SECRET_KEY_NAMES
    return key in (pattern, to_snake(pattern))


def resolve_secret_refs(
    tree: Mapping[str, Any],
    paths: Sequence[PluginPath],
    env: Mapping[str, str],
    *,
    prefix: str = "",
    base_dir: Path | None = None,
) -> dict[str, Any]:
    """Copy of ``tree`` with every SecretRef found at one of ``paths`` resolved."""

    def walk(node: Any, pattern: PluginPath, where: str) -> Any:
        if not pattern or not isinstance(node, dict):
            return node
        out = dict(node)
        for key, value in node.items():
            if not isinstance(key, str) or not _key_matches(key, pattern[0]):
                continue
            path = f"{where}.{key}" if where else key
            if len(pattern) == 1:
                if is_secret_ref(value):
                    out[key] = resolve_ref(value, path, env, base_dir)
            else:
                out[key] = walk(value, pattern[1:], path)
        return out

    result: dict[str, Any] = dict(tree)
    for pattern in paths:
        result = walk(result, pattern, prefix.rstrip("."))
    return result


def resolve_ref(ref: Any, path: str, env: Mapping[str, str], base_dir: Path | None) -> str:
    """The secret a single SecretRef points at."""
    if isinstance(ref, str):
        match = _ENV_REF.match(ref)
        assert match is not None  # callers check is_secret_ref first
        return _from_env(match.group(1), path, env)
    source = ref.get("source")
    if source == "env":
        return _from_env(_ref_id(ref, ("id", "name"), path), path, env)
    if source == "file":
        return _from_file(_ref_id(ref, ("path", "id"), path), path, base_dir)
    if source == "exec":
        return _from_exec(ref, path, env)
    raise ConfigError(
        f"unsupported SecretRef source {source!r}", path=path, allowed=["env", "file", "exec"]
    )


def _ref_id(ref: Mapping[str, Any], keys: tuple[str, ...], path: str) -> str:
    for key in keys:
        value = ref.get(key)
        if isinstance(value, str) and value:
            return value
    raise ConfigError(
        f"SecretRef {{source: {ref.get('source')!r}}} needs a non-empty "
        f"{' or '.join(keys)}",
        path=path,
    )


def _from_env(name: str, path: str, env: Mapping[str, str]) -> str:
    value = env.get(name)
    if not value:
        raise ConfigError(f"environment variable {name} is not set", path=path)
    return value


def _from_file(name: str, path: str, base_dir: Path | None) -> str:
    file = Path(name).expanduser()
    if not file.is_absolute() and base_dir is not None:
        file = base_dir / file
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"secret file {file} does not exist", path=path) from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise ConfigError(f"cannot read secret file {file}: {reason}", path=path) from None
    value = text.rstrip("\r\n")
    if not value:
        raise ConfigError(f"secret file {file} is empty", path=path)
    return value


def _exec_argv(ref: Mapping[str, Any], path: str) -> list[str]:
    for key in ("command", "argv", "id"):
        value = ref.get(key)
        if isinstance(value, str) and value.strip():
            return shlex.split(value)
        if isinstance(value, list) and value and all(isinstance(a, str) for a in value):
            return list(value)
    raise ConfigError(
        "SecretRef {source: 'exec'} needs command: [program, args...] (or id: \"program args\")",
        path=path,
    )


def _from_exec(ref: Mapping[str, Any], path: str, env: Mapping[str, str]) -> str:
    argv = _exec_argv(ref, path)
    try:
        proc = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=EXEC_TIMEOUT_S,
            env=dict(env),
            check=False,
        )
    except FileNotFoundError:
        raise ConfigError(f"secret command not found: {argv[0]}", path=path) from None
    except subprocess.TimeoutExpired:
        raise ConfigError(
            f"secret command {argv[0]} timed out after {EXEC_TIMEOUT_S:g} s", path=path
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"secret command {argv[0]} could not run: {exc.strerror}", path=path
        ) from None
    if proc.returncode != 0:
        # stderr is left out on purpose: a failing tool may echo what it read.
        raise ConfigError(
            f"secret command {argv[0]} exited with status {proc.returncode}", path=path
        )
    value = proc.stdout.decode("utf-8", errors="replace").strip()
    if not value:
        raise ConfigError(f"secret command {argv[0]} printed nothing", path=path)
    return value
