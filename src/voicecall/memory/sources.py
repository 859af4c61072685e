"""What fast context searches: workspace memory files and this caller's past calls.

* ``memory``: ``MEMORY.md`` and ``memory/**/*.md`` of the agent workspace, cut at
  headings and blank lines into chunks of at most :data:`CHUNK_CHARS`, each
  located as ``<relative path>:<startLine>-<endLine>``. Nothing outside the
  workspace is read: symlinks are resolved and escapes skipped.
* ``sessions``: transcripts of earlier calls with the *same* session key (never
  another caller's), in windows of :data:`WINDOW_ENTRIES` entries located as
  ``call:<call_id>:<start>-<end>``.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import threading
from dataclasses import dataclass
from pathlib import Path

from voicecall.store import CallStore

__all__ = [
    "CHUNK_CHARS",
    "MAX_FILES",
    "MAX_FILE_BYTES",
    "WINDOW_ENTRIES",
    "Chunk",
    "MemoryFiles",
    "Snippet",
    "chunk_markdown",
    "session_chunks",
]

log = logging.getLogger(__name__)

#: Longest chunk (and returned snippet): a few spoken sentences, well under the
#: model's 256 word pieces.
CHUNK_CHARS = 700
MAX_FILE_BYTES = 1_000_000  # a larger file is read up to here
MAX_FILES = 500             # the most recently changed ones win
WINDOW_ENTRIES = 4
_SCAN_LIMIT = 20 * MAX_FILES  # stop walking a pathological tree
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s")


@dataclass(frozen=True)
class Chunk:
    source: str   # "memory" | "sessions"
    where: str
    text: str
    # Further texts the chunk is matched on (its score is the best of all). A
    # transcript window lists its entries: mean pooling over four lines drowns
    # the one line that answers, so that line is also scored alone.
    parts: tuple[str, ...] = ()


@dataclass(frozen=True)
class Snippet:
    source: str   # "memory" | "sessions"
    where: str    # <path>:<start>-<end> | call:<id>:<start>-<end>
    text: str     # at most CHUNK_CHARS
    score: float  # cosine similarity (or TF-IDF cosine in the lexical fallback)


# --------------------------------------------------------------------------- markdown


def _blocks(lines: list[str]) -> list[tuple[int, int]]:
    """0-based inclusive line ranges of paragraphs; a heading always starts a new one."""
    out: list[tuple[int, int]] = []
    start: int | None = None
    for i, line in enumerate(lines):
        if not line.strip() or _HEADING.match(line):
            if start is not None:
                out.append((start, i - 1))
                start = None
            if not line.strip():
                continue
        if start is None:
            start = i
    if start is not None:
        out.append((start, len(lines) - 1))
    return out


def chunk_markdown(text: str, max_chars: int = CHUNK_CHARS) -> list[tuple[int, int, str]]:
    """``(startLine, endLine, text)`` chunks (1-based, inclusive) of at most ``max_chars``.

    Consecutive paragraphs are packed together until the limit, and a heading
    starts a new chunk so a section's title stays with its body. A paragraph
    that is too long is split at lines; a line that is too long, at ``max_chars``.
    """
    lines = text.splitlines()

    def span(a: int, b: int) -> str:
        return "\n".join(lines[a:b + 1]).strip()

    # Pieces: (start, end, text, packable). Hard-split pieces of one long line stay alone.
    pieces: list[tuple[int, int, str, bool]] = []
    for a, b in _blocks(lines):
        if len(span(a, b)) <= max_chars:
            pieces.append((a, b, span(a, b), True))
            continue
        s = a
        for i in range(a, b + 1):
            if i > s and len(span(s, i)) > max_chars:
                pieces.append((s, i - 1, span(s, i - 1), True))
                s = i
            if len(lines[i].strip()) > max_chars:
                if i > s:
                    pieces.append((s, i - 1, span(s, i - 1), True))
                line = lines[i].strip()
                pieces.extend((i, i, line[k:k + max_chars].strip(), False)
                              for k in range(0, len(line), max_chars))
                s = i + 1
        if s <= b:
            pieces.append((s, b, span(s, b), True))

    out: list[tuple[int, int, str]] = []
    cur: tuple[int, int] | None = None
    for a, b, piece, packable in pieces:
        if cur is not None and packable and not _HEADING.match(lines[a]) \
                and len(span(cur[0], b)) <= max_chars:
            cur = (cur[0], b)
            continue
        if cur is not None:
            out.append((cur[0] + 1, cur[1] + 1, span(*cur)))
            cur = None
        if packable:
            cur = (a, b)
        elif piece:
            out.append((a + 1, b + 1, piece))
    if cur is not None:
        out.append((cur[0] + 1, cur[1] + 1, span(*cur)))
    return [c for c in out if c[2]]


# --------------------------------------------------------------------------- memory files


def _read_capped(path: Path, limit: int) -> str | None:
    """A regular file's text, at most ``limit`` bytes; the final symlink is not followed."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            return None
        data = fh.read(limit + 1)
    if len(data) > limit:
        data = data[:limit].rsplit(b"\n", 1)[0]  # drop the partial last line
    return data.decode("utf-8", errors="replace")


class MemoryFiles:
    """The workspace's memory chunks, re-read only when a file's size or mtime changes."""

    def __init__(self, workspace: str | Path, *, max_files: int = MAX_FILES,
                 max_file_bytes: int = MAX_FILE_BYTES, max_chars: int = CHUNK_CHARS) -> None:
        self.workspace = Path(workspace)
        self.max_files = max_files
        self.max_file_bytes = max_file_bytes
        self.max_chars = max_chars
        self._cache: dict[str, tuple[tuple[int, int], list[Chunk]]] = {}
        self._lock = threading.Lock()

    def _inside(self, root: Path, path: Path) -> Path | None:
        """``path`` resolved, or None when it leaves ``root`` (symlink or ``..``)."""
        try:
            real = path.resolve(strict=True)
        except (OSError, RuntimeError):  # missing, or a symlink loop
            return None
        return real if real.is_relative_to(root) else None

    def files(self) -> list[tuple[str, Path]]:
        """``(relative path, resolved path)`` of the files to index, at most ``max_files``."""
        try:
            root = self.workspace.resolve(strict=True)
        except (OSError, RuntimeError):
            return []
        found: list[tuple[str, Path]] = []
        top = self._inside(root, root / "MEMORY.md")
        if top is not None and top.is_file():
            found.append(("MEMORY.md", top))
        mem = self._inside(root, root / "memory")
        if mem is not None and mem.is_dir():
            scanned = 0
            # followlinks=False: a symlinked directory is never entered.
            for dirpath, dirnames, filenames in os.walk(mem):
                dirnames.sort()
                for name in sorted(filenames):
                    scanned += 1
                    if not name.lower().endswith(".md") or scanned > _SCAN_LIMIT:
                        continue
                    real = self._inside(root, Path(dirpath) / name)
                    if real is not None and real.is_file():
                        rel = (Path(dirpath) / name).relative_to(mem).as_posix()
                        found.append((f"memory/{rel}", real))
                if scanned > _SCAN_LIMIT:
                    log.warning("memory.scan_truncated", extra={"dir": str(mem)})
                    break
        if len(found) > self.max_files:
            def mtime(item: tuple[str, Path]) -> float:
                try:
                    return item[1].stat().st_mtime
                except OSError:
                    return 0.0
            keep = {rel for rel, _ in sorted(found, key=mtime, reverse=True)[:self.max_files]}
            found = [f for f in found if f[0] in keep]
        return found

    def chunks(self) -> list[Chunk]:
        out: list[Chunk] = []
        seen: set[str] = set()
        for rel, real in self.files():
            seen.add(rel)
            try:
                st = real.stat()
            except OSError:
                continue
            sig = (st.st_size, st.st_mtime_ns)
            with self._lock:
                hit = self._cache.get(rel)
            if hit is not None and hit[0] == sig:
                out.extend(hit[1])
                continue
            text = _read_capped(real, self.max_file_bytes)
            if text is None:
                continue
            parsed = [Chunk("memory", f"{rel}:{a}-{b}", body)
                      for a, b, body in chunk_markdown(text, self.max_chars)]
            with self._lock:
                self._cache[rel] = (sig, parsed)
            out.extend(parsed)
        with self._lock:
            for gone in set(self._cache) - seen:
                del self._cache[gone]
        return out


# --------------------------------------------------------------------------- past calls


def session_chunks(store: CallStore, session_key: str | None, *,
                   exclude_call_id: str | None = None, max_calls: int = 200,
                   window: int = WINDOW_ENTRIES) -> list[Chunk]:
    """Transcript windows of this session's earlier calls (newest call first).

    Only calls whose ``session_key`` equals ``session_key``: a caller never sees
    another caller's transcript. No session key, no past calls.
    """
    if not session_key:
        return []
    out: list[Chunk] = []
    for past in store.list(limit=max_calls):
        if past.session_key != session_key or past.call_id == exclude_call_id:
            continue
        entries = past.transcript
        for start in range(0, len(entries), window):
            part = entries[start:start + window]
            # The range indexes the call's transcript; blank entries are just not shown.
            said = [(e.speaker, e.text.strip()) for e in part if e.text.strip()]
            if not said:
                continue
            text = "\n".join(f"{'Caller' if who == 'user' else 'Agent'}: {line}"
                             for who, line in said)
            parts = tuple(dict.fromkeys(line for _, line in said)) if len(said) > 1 else ()
            out.append(Chunk("sessions", f"call:{past.call_id}:{start}-{start + len(part) - 1}",
                             text, parts))
    return out
