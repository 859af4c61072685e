"""``ContextIndex``: semantic search over memory files and this caller's past calls.

Synchronous and thread-safe; the realtime bridge runs it as
``await asyncio.wait_for(asyncio.to_thread(index.search, ...), timeout)``.
Chunks are gathered on every search (memory files are re-read only when they
change) and only texts never seen before are embedded. A chunk scores the best
cosine of its text and its parts (a transcript window's single entries).

Embedding a caller's whole history is the slow part (tens of texts per second
per core), so ``warm()`` at gateway start and ``prime()`` at call start do it
ahead of the first question. A search that times out in the bridge still
finishes in its thread and fills the cache. Without the model the index ranks
by TF-IDF instead.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from voicecall.errors import VoicecallError
from voicecall.memory.cache import VectorCache, cache_key
from voicecall.memory.embed import MiniLMEmbedder
from voicecall.memory.lexical import lexical_search
from voicecall.memory.sources import CHUNK_CHARS, Chunk, MemoryFiles, Snippet, session_chunks
from voicecall.store import CallStore

__all__ = ["ALL_SOURCES", "MIN_SIMILARITY", "ContextIndex", "Embedder"]

log = logging.getLogger(__name__)

#: Cosine below this is not an answer. With all-MiniLM-L6-v2, unrelated
#: sentences score about -0.1..0.25, while a question and a snippet that answers
#: it in other words score about 0.33..0.8 (see tests/memory).
MIN_SIMILARITY = 0.30
ALL_SOURCES = ("memory", "sessions")

F32 = NDArray[np.float32]


class Embedder(Protocol):
    """What the index needs from an encoder (``MiniLMEmbedder``, or a test double)."""

    @property
    def model_id(self) -> str: ...

    def embed(self, texts: Sequence[str]) -> F32: ...


class ContextIndex:
    """Fast-context search for one gateway.

    ``workspace``: the agent workspace (``MEMORY.md``, ``memory/``); ``store``:
    the call store for past transcripts; ``cache_path``: SQLite file for chunk
    vectors (e.g. ``<home>/memory-index.sqlite``), None for memory only.
    """

    def __init__(self, *, workspace: str | Path | None = None, store: CallStore | None = None,
                 cache_path: str | Path | None = None, embedder: Embedder | None = None,
                 min_similarity: float = MIN_SIMILARITY, max_calls: int = 200) -> None:
        self.memory = MemoryFiles(workspace) if workspace is not None else None
        self.store = store
        self.embedder: Embedder = embedder if embedder is not None else MiniLMEmbedder()
        self.cache = VectorCache(cache_path)
        self.min_similarity = min_similarity
        self.max_calls = max_calls
        self._warned = False
        self._embed_lock = threading.Lock()

    # ----------------------------------------------------------------- chunks

    def chunks(self, *, session_key: str | None, exclude_call_id: str | None = None,
               sources: Collection[str] = ALL_SOURCES) -> list[Chunk]:
        out: list[Chunk] = []
        if "memory" in sources and self.memory is not None:
            out.extend(self.memory.chunks())
        if "sessions" in sources and self.store is not None:
            out.extend(session_chunks(self.store, session_key, exclude_call_id=exclude_call_id,
                                      max_calls=self.max_calls))
        return out

    def vectors(self, texts: Sequence[str]) -> F32:
        """``(n, dim)`` vectors of ``texts``; only the ones not cached are embedded."""
        model_id = self.embedder.model_id
        keys = [cache_key(model_id, t) for t in texts]
        found = self.cache.get_many(keys)
        if len(found) < len(keys):
            # One embedder at a time: concurrent cold searches (a bridge timeout does not
            # stop its thread) would otherwise all embed the same texts.
            with self._embed_lock:
                found.update(self.cache.get_many([k for k in keys if k not in found]))
                todo: dict[bytes, str] = {}
                for key, text in zip(keys, texts, strict=True):
                    if key not in found:
                        todo.setdefault(key, text)
                if todo:
                    fresh = self.embedder.embed(list(todo.values()))
                    new = dict(zip(todo, fresh, strict=True))
                    self.cache.put_many(model_id, new)
                    found.update(new)
        if not keys:
            return np.zeros((0, 0), dtype=np.float32)
        # concatenate + reshape: about 3x faster than np.stack for 10,000 rows.
        flat = np.concatenate([found[k] for k in keys]).astype(np.float32, copy=False)
        return flat.reshape(len(keys), -1)

    def embed_chunks(self, chunks: Sequence[Chunk]) -> None:
        """Make sure every text of ``chunks`` is cached (warm-up, benchmarks)."""
        self.vectors([t for c in chunks for t in (c.text, *c.parts)])

    def score(self, query_vec: F32, chunks: Sequence[Chunk]) -> F32:
        """Per chunk, the best cosine of its text and its parts against ``query_vec``."""
        texts: list[str] = []
        owner: list[int] = []
        for i, c in enumerate(chunks):
            texts.append(c.text)
            texts.extend(c.parts)
            owner.extend([i] * (1 + len(c.parts)))
        sims = self.vectors(texts) @ query_vec
        best = np.full(len(chunks), -np.inf, dtype=np.float32)
        np.maximum.at(best, np.asarray(owner, dtype=np.intp), sims)
        return best

    # ----------------------------------------------------------------- search

    def warm(self) -> bool:
        """Load the model and embed the memory files (gateway start); False: lexical only."""
        return self.prime(session_key=None, sources=("memory",))

    def prime(self, *, session_key: str | None, exclude_call_id: str | None = None,
              sources: Collection[str] = ALL_SOURCES) -> bool:
        """Embed what a search for this caller would need, e.g. in a thread at call start,
        so the first question finds everything cached. False when only lexical works."""
        try:
            self.embedder.embed(["warm up"])
            self.embed_chunks(self.chunks(session_key=session_key,
                                          exclude_call_id=exclude_call_id, sources=sources))
        except VoicecallError as exc:
            self._fallback_warning(exc)
            return False
        return True

    def search(self, query: str, *, session_key: str | None,
               exclude_call_id: str | None = None, sources: Collection[str] = ALL_SOURCES,
               max_results: int = 3) -> list[Snippet]:
        """The best ``max_results`` snippets for ``query``, most similar first.

        ``sessions`` only ever includes calls of ``session_key`` (minus
        ``exclude_call_id``, the call asking). Hits below :data:`MIN_SIMILARITY`
        are dropped, so an empty list means "nothing relevant".
        """
        query = query.strip()
        if not query or max_results <= 0:
            return []
        chunks = self.chunks(session_key=session_key, exclude_call_id=exclude_call_id,
                             sources=sources)
        if not chunks:
            return []
        try:
            scores = self.score(self.embedder.embed([query])[0], chunks)
        except VoicecallError as exc:
            self._fallback_warning(exc)
            return lexical_search(query, chunks, max_results)
        out: list[Snippet] = []
        seen: set[str] = set()
        for i in np.argsort(-scores, kind="stable"):
            score = float(scores[i])
            if score < self.min_similarity or len(out) >= max_results:
                break
            c = chunks[i]
            if c.text in seen:  # the same text in two places: one is enough
                continue
            seen.add(c.text)
            out.append(Snippet(c.source, c.where, c.text[:CHUNK_CHARS], round(score, 3)))
        return out

    def _fallback_warning(self, exc: BaseException) -> None:
        if not self._warned:
            self._warned = True
            log.warning("memory.embedding_unavailable", extra={
                "why": str(exc), "fallback": "lexical (TF-IDF) fast-context search"})

    def close(self) -> None:
        self.cache.close()
