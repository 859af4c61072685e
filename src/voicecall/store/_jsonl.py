"""The ``calls.jsonl`` line format, shared by the durable writer and the readers.

Lines are bytes split on ``b"\\n"`` only. JSON escapes every newline inside a
string, but ``json.dumps(ensure_ascii=False)`` leaves U+2028 and friends raw,
and ``str.splitlines`` would split on those; so nothing here decodes before
splitting.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Generator, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

from voicecall.errors import StoreError

#: Version of the event record written to ``calls.jsonl`` (the ``v`` key).
EVENT_VERSION = 1
#: Keys the store owns in every record; callers' fields never override them.
RESERVED_KEYS = frozenset({"v", "seq", "ts", "type", "callId"})
#: Readers treat a longer line as malformed instead of buffering it without bound.
MAX_LINE_BYTES = 4 * 1024 * 1024
_CHUNK = 64 * 1024

ReadAt = Callable[[int, int], bytes]  # (offset, size) -> bytes


def dumps(obj: Any) -> str:
    """Compact JSON; NaN/Infinity are refused because they are not JSON."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def encode(record: Mapping[str, Any]) -> bytes:
    return dumps(record).encode("utf-8") + b"\n"


def decode(line: bytes) -> dict[str, Any] | None:
    """The JSON object on ``line``, or None when it is not one."""
    try:
        value = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


def make_record(seq: int, ts: float, type_: str, call_id: str | None,
                fields: Mapping[str, Any]) -> dict[str, Any]:
    """One event record, keys in a fixed order so a repaired line equals the original."""
    record: dict[str, Any] = {"v": EVENT_VERSION, "seq": seq, "ts": ts, "type": type_,
                              "callId": call_id}
    record.update(fields)
    return record


def fd_reader(fd: int) -> ReadAt:
    return lambda offset, size: os.pread(fd, size, offset)


def complete_end(read_at: ReadAt, size: int) -> int:
    """Offset just past the last newline: where the complete lines end (0 if none)."""
    pos = size
    while pos > 0:
        start = max(0, pos - _CHUNK)
        chunk = read_at(start, pos - start)
        cut = chunk.rfind(b"\n")
        if cut >= 0:
            return start + cut + 1
        pos = start
    return 0


def reverse_lines(read_at: ReadAt, end: int) -> Iterator[bytes]:
    """Non-empty lines before ``end`` (which follows a newline, or is 0), last line first."""
    pos = end
    tail = b""
    while pos > 0:
        start = max(0, pos - _CHUNK)
        parts = (read_at(start, pos - start) + tail).split(b"\n")
        pos = start
        tail = parts[0]  # may continue before ``start``
        if len(tail) > MAX_LINE_BYTES:
            tail = b"\x00"  # an overlong line: keep a malformed stub, not the bytes
        for line in reversed(parts[1:]):
            if line:
                yield line
    if tail:
        yield tail


def iter_lines(f: BinaryIO) -> Iterator[bytes | None]:
    """Complete lines of ``f`` from its current position; None for an overlong line.

    A last line without its newline is still being written (or was torn by a
    crash) and is not yielded.
    """
    while True:
        line = f.readline(MAX_LINE_BYTES + 1)
        if not line.endswith(b"\n"):
            if len(line) <= MAX_LINE_BYTES:
                return  # EOF, possibly after a partial line
            while line and not line.endswith(b"\n"):  # skip the rest of an overlong line
                line = f.readline(_CHUNK)
            if not line:
                return
            yield None
            continue
        if line.strip():
            yield line


def require_file(path: Path) -> None:
    if not path.is_file():
        raise StoreError(f"event log not found: {path}")


def reverse_records(path: Path) -> Generator[dict[str, Any], None, None]:
    """The JSON objects of a log, last first; malformed lines and a partial tail are skipped."""
    require_file(path)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        read_at = fd_reader(fd)
        for line in reverse_lines(read_at, complete_end(read_at, os.fstat(fd).st_size)):
            record = decode(line)
            if record is not None:
                yield record
    finally:
        os.close(fd)
