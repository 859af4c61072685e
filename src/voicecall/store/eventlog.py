"""Readers of ``calls.jsonl``, usable without opening SQLite (``tail``, ``latency``).

Every reader handles a log that is being written: a last line without its
newline is incomplete and is not returned (``follow`` waits for the rest).
Malformed lines are skipped.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

from voicecall.store._jsonl import (
    MAX_LINE_BYTES,
    decode,
    iter_lines,
    require_file,
    reverse_records,
)
from voicecall.store.latency import latency_summary, percentile

__all__ = ["EventReader", "follow", "latency_summary", "percentile", "read_events",
           "tail_lines"]

_CHUNK = 64 * 1024


class EventReader(Iterator[dict[str, Any]]):
    """Records of a log in file order; ``malformed`` counts the lines skipped so far."""

    def __init__(self, path: Path, since_seq: int = 0) -> None:
        require_file(path)  # fail now, not at the first next()
        self.path = path
        self.since_seq = since_seq
        self.malformed = 0
        self._records = self._read()

    def _read(self) -> Generator[dict[str, Any], None, None]:
        with open(self.path, "rb") as f:
            for line in iter_lines(f):
                record = decode(line) if line is not None else None
                if record is None:
                    self.malformed += 1
                    continue
                seq = record.get("seq")
                if isinstance(seq, int) and seq <= self.since_seq:
                    continue
                if not isinstance(seq, int) and self.since_seq > 0:
                    continue  # a record without seq cannot be placed after since_seq
                yield record

    def __iter__(self) -> EventReader:
        return self

    def __next__(self) -> dict[str, Any]:
        return next(self._records)

    def close(self) -> None:
        self._records.close()


def read_events(path: Path | str, since_seq: int = 0) -> EventReader:
    """Records with ``seq > since_seq`` (all records when 0), in file order."""
    return EventReader(Path(path), since_seq)


def tail_lines(path: Path | str, last: int) -> list[dict[str, Any]]:
    """The last ``last`` records of a log, oldest first, reading only the end of the file."""
    if last <= 0:
        return []
    out: list[dict[str, Any]] = []
    records = reverse_records(Path(path))
    try:
        for record in records:
            out.append(record)
            if len(out) >= last:
                break
    finally:
        records.close()
    out.reverse()
    return out


def _stopper(stop: Callable[[], bool] | threading.Event | None
             ) -> tuple[Callable[[], bool], Callable[[float], object]]:
    """(should_stop, sleep): an Event also wakes the sleep, so stopping is prompt."""
    if isinstance(stop, threading.Event):
        return stop.is_set, stop.wait
    if stop is None:
        return (lambda: False), time.sleep
    return stop, time.sleep


def _identity(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def _start_offset(f: Any, size: int) -> int:
    """Just past the last newline before ``size``, so a line being written is not cut."""
    pos = size
    while pos > 0:
        start = max(0, pos - _CHUNK)
        f.seek(start)
        cut = f.read(pos - start).rfind(b"\n")
        if cut >= 0:
            return int(start + cut + 1)
        pos = start
    return 0


def follow(path: Path | str, *, poll_s: float = 0.25,
           stop: Callable[[], bool] | threading.Event | None = None,
           start_at_end: bool = True,
           start_offset: int | None = None) -> Generator[dict[str, Any], None, None]:
    """Yield records as complete lines are appended to ``path``, until ``stop``.

    Waits for a missing file to appear. A partial line waits for its newline.
    If the file shrinks (truncated) reading restarts at its beginning; if the
    path now names another file (rotated), the old file is read to its end and
    the new one from its beginning. At most ``MAX_LINE_BYTES`` of one line are
    buffered; a longer line is dropped. ``start_offset`` (a byte offset at a line
    boundary, e.g. the size seen before printing a backlog) overrides ``start_at_end``
    so nothing appended in between is missed.
    """
    path = Path(path)
    should_stop, sleep = _stopper(stop)
    f = None
    buf = bytearray()
    skipping = False  # inside an overlong line, dropping bytes up to its newline
    first_open = True
    try:
        while not should_stop():
            if f is None:
                try:
                    f = open(path, "rb")  # closed in finally, or on rotation
                except FileNotFoundError:
                    first_open = False  # a file that appears later is read from its start
                    sleep(poll_s)
                    continue
                ident = _identity(os.fstat(f.fileno()))
                if first_open and start_offset is not None:
                    f.seek(min(start_offset, os.fstat(f.fileno()).st_size))
                elif first_open and start_at_end:
                    f.seek(_start_offset(f, os.fstat(f.fileno()).st_size))
                first_open = False
            chunk = f.read(_CHUNK)
            if chunk:
                buf += chunk
                while (cut := buf.find(b"\n")) >= 0:
                    line = bytes(buf[:cut])
                    del buf[:cut + 1]
                    if skipping:
                        skipping = False
                        continue
                    record = decode(line) if line.strip() else None
                    if record is not None:
                        yield record
                if len(buf) > MAX_LINE_BYTES:
                    buf.clear()
                    skipping = True
                continue
            # At the end of what we have: has the file been truncated or replaced?
            try:
                current = os.stat(path)
            except FileNotFoundError:
                current = None
            if current is not None and _identity(current) != ident:
                f.close()
                f = None  # rotated: the old file is drained; read the new one from the start
                buf.clear()
                skipping = False
                continue
            if current is not None and current.st_size < f.tell():
                f.seek(0)  # truncated in place
                buf.clear()
                skipping = False
                continue
            sleep(poll_s)
    finally:
        if f is not None:
            f.close()
