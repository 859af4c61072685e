"""The control listener's bearer token: a file only the owner can read."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

TOKEN_FILE = "control.token"


def token_path(home: Path) -> Path:
    return home / TOKEN_FILE


def ensure_token(home: Path) -> str:
    """Read the token, creating it (mode 0600, never wider) on first start."""
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = token_path(home)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)  # e.g. copied in with a wider mode: close it again
        return read_token(home) or _rewrite(path)
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    return token


def _rewrite(path: Path) -> str:
    # An empty file (e.g. a crash mid-create) gets a fresh token, still 0600.
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    os.chmod(path, 0o600)
    return token


def read_token(home: Path) -> str | None:
    try:
        text = token_path(home).read_text().strip()
    except OSError:
        return None
    return text or None
