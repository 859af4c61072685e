"""Fast context for the consult tool (§7.6): snippets found locally within ``timeoutMs``.

``FastContext`` is the gateway's search: one ``voicecall.memory.ContextIndex``
per agent workspace (``agents.<id>.workspace``, else ``<home>/workspace``), all
sharing one encoder and one vector cache file (``<home>/memory-index.sqlite``).
The encoder is loaded and the workspace's memory files embedded at gateway
start (``warm``, in a thread); a call's own history is embedded when its
realtime session opens (``prime``), so the first question does not pay for it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection, Sequence
from pathlib import Path

from voicecall.config import VoiceCallConfig, agent_workspace
from voicecall.memory import ContextIndex, MiniLMEmbedder, Snippet
from voicecall.memory.index import Embedder
from voicecall.store import CallStore

__all__ = ["FAST_MISS_TEXT", "FastContext", "Snippet", "fast_context_text"]

log = logging.getLogger("voicecall.realtime.fast")

CACHE_FILE = "memory-index.sqlite"

FAST_MISS_TEXT = ("No relevant OpenClaw memory or session context was found quickly for this "
                  "question. Answer briefly that you do not have that context handy.")


def fast_context_text(question: str, hits: Sequence[Snippet]) -> str:
    lines = [
        "Fast OpenClaw memory or session context found for the live caller. Use this context "
        "only if it answers the caller's question. If it is not relevant, say briefly that you "
        "do not have that context handy.",
        f"Question: {question}",
        "Context:",
    ]
    for i, hit in enumerate(hits, 1):
        lines.append(f"{i}. [{hit.source}] {hit.where}\n{hit.text}")
    return "\n".join(lines)


class FastContext:
    """The gateway's fast-context indexes; see the module docstring. Thread-safe."""

    def __init__(self, config: VoiceCallConfig, store: CallStore, home: Path, *,
                 embedder: Embedder | None = None) -> None:
        self.config = config
        self.store = store
        self.default_workspace = home / "workspace"
        self.cache_path = home / CACHE_FILE
        self.embedder: Embedder = embedder if embedder is not None else MiniLMEmbedder()
        self._indexes: dict[Path | None, ContextIndex] = {}
        self._lock = threading.Lock()

    def index(self, agent_id: str) -> ContextIndex:
        workspace = agent_workspace(self.config, agent_id, self.default_workspace)
        with self._lock:
            index = self._indexes.get(workspace)
            if index is None:
                index = self._indexes[workspace] = ContextIndex(
                    workspace=workspace, store=self.store, cache_path=self.cache_path,
                    embedder=self.embedder)
            return index

    def warm(self, agent_id: str) -> None:
        """Load the encoder and embed the agent's memory files (gateway start)."""
        if not self.index(agent_id).warm():
            log.warning("fast_context.lexical_only")

    def prime(self, agent_id: str, *, session_key: str, exclude_call_id: str,
              sources: Collection[str]) -> None:
        """Embed this caller's past calls ahead of the first question (call start)."""
        self.index(agent_id).prime(session_key=session_key, exclude_call_id=exclude_call_id,
                                   sources=sources)

    def search(self, agent_id: str, query: str, *, session_key: str, exclude_call_id: str,
               sources: Collection[str], max_results: int) -> list[Snippet]:
        return self.index(agent_id).search(query, session_key=session_key,
                                           exclude_call_id=exclude_call_id, sources=sources,
                                           max_results=max_results)

    def close(self) -> None:
        with self._lock:
            for index in self._indexes.values():
                index.close()
            self._indexes.clear()
