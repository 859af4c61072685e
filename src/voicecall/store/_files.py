"""File plumbing for the store: private files, an inter-process lock, the durable mirror.

``EventMirror`` owns the writer side of ``calls.jsonl``. Every append is one
``write`` of whole lines followed by ``fsync``; a torn last line (power loss,
full disk) is cut off before the next append, so readers never see a line
glued to garbage.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from voicecall.store import _jsonl

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: single-process use only
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def fsync_dir(directory: Path) -> None:
    """Make a new directory entry durable (a fresh file is lost on power cut otherwise)."""
    with contextlib.suppress(OSError):  # not every platform/filesystem allows it
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def ensure_private_dir(directory: Path) -> None:
    """Create ``directory`` (and parents) with mode 0700; an existing one is left as it is."""
    if not directory.is_dir():
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(directory, 0o700)  # mkdir's mode is filtered by the umask
        fsync_dir(directory.parent)


def open_private(path: Path, flags: int) -> int:
    """Open (creating if needed) a file that must be 0600: it holds numbers and transcripts."""
    existed = path.exists()
    fd = os.open(path, flags | os.O_CREAT | _O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
    except OSError:
        os.close(fd)
        raise
    if not existed:
        fsync_dir(path.parent)
    return fd


class InterProcessLock:
    """An exclusive ``flock`` on a lock file.

    It spans "commit to SQLite, then append to calls.jsonl" and the mirror
    repair, so a second process opening the store (the CLI next to a running
    gateway) never sees a committed event that is not mirrored yet and treats
    it as lost, nor cuts off a line another process is writing.
    """

    def __init__(self, path: Path) -> None:
        self._fd: int | None = open_private(path, os.O_RDWR)

    def __enter__(self) -> None:
        if fcntl is not None and self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        if fcntl is not None and self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class EventMirror:
    """The append side of ``calls.jsonl``. Callers hold the locks; this class does not lock."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = -1
        # (device, inode, size) the cached last seq belongs to, so a save normally
        # needs an fstat, not a read, to know where the log ends.
        self._known: tuple[int, int, int] | None = None
        self._last_seq: int | None = None
        self._open()

    def _open(self) -> None:
        self._fd = open_private(self.path, os.O_RDWR | os.O_APPEND)
        self._known = None

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _reopen_if_moved(self) -> None:
        """Follow a rename/delete rotation: new lines go to a new file at ``path``."""
        mine = os.fstat(self._fd)
        try:
            there = os.stat(self.path)
        except FileNotFoundError:
            there = None
        if there is None or (there.st_dev, there.st_ino) != (mine.st_dev, mine.st_ino):
            log.info("store.mirror.reopen path=%s", self.path)
            os.close(self._fd)
            self._fd = -1
            self._open()

    def last_seq(self) -> int | None:
        """The highest ``seq`` in the log, or None if it holds no event record.

        Cuts off a torn last line first. Lines are appended in ``seq`` order, so
        the last parseable record carries the highest one.
        """
        self._reopen_if_moved()
        st = os.fstat(self._fd)
        if self._known == (st.st_dev, st.st_ino, st.st_size):
            return self._last_seq
        read_at = _jsonl.fd_reader(self._fd)
        end = _jsonl.complete_end(read_at, st.st_size)
        if end < st.st_size:
            log.warning("store.mirror.torn-tail path=%s bytes=%d", self.path, st.st_size - end)
            os.ftruncate(self._fd, end)
            os.fsync(self._fd)
        last: int | None = None
        for line in _jsonl.reverse_lines(read_at, end):
            record = _jsonl.decode(line)
            seq = record.get("seq") if record is not None else None
            if isinstance(seq, int) and not isinstance(seq, bool):
                last = seq
                break
        self._known, self._last_seq = (st.st_dev, st.st_ino, end), last
        return last

    def append(self, records: Iterable[Mapping[str, Any]]) -> int | None:
        """Append whole lines, then fsync. Returns the last ``seq`` written (None if none)."""
        data = bytearray()
        last: int | None = None
        for record in records:
            data += _jsonl.encode(record)
            last = int(record["seq"])
        if not data:
            return None
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        os.fsync(self._fd)
        st = os.fstat(self._fd)
        self._known, self._last_seq = (st.st_dev, st.st_ino, st.st_size), last
        return last

