"""Local semantic search for realtime fast context (``realtime.fastContext``).

``ContextIndex.search`` ranks chunks of the workspace memory files and of this
caller's past call transcripts by cosine similarity of all-MiniLM-L6-v2
embeddings computed in numpy (``MiniLMEmbedder``), with vectors cached in
memory and SQLite. Without the model it falls back to TF-IDF.
"""

from voicecall.memory.cache import VectorCache, cache_key
from voicecall.memory.embed import (
    MODEL_PACKAGE,
    EmbeddingUnavailableError,
    MiniLMEmbedder,
    default_model_dir,
)
from voicecall.memory.index import ALL_SOURCES, MIN_SIMILARITY, ContextIndex, Embedder
from voicecall.memory.lexical import LEXICAL_MIN_SCORE, lexical_search
from voicecall.memory.sources import (
    CHUNK_CHARS,
    Chunk,
    MemoryFiles,
    Snippet,
    chunk_markdown,
    session_chunks,
)

__all__ = [
    "ALL_SOURCES",
    "CHUNK_CHARS",
    "LEXICAL_MIN_SCORE",
    "MIN_SIMILARITY",
    "MODEL_PACKAGE",
    "Chunk",
    "ContextIndex",
    "Embedder",
    "EmbeddingUnavailableError",
    "MemoryFiles",
    "MiniLMEmbedder",
    "Snippet",
    "VectorCache",
    "cache_key",
    "chunk_markdown",
    "default_model_dir",
    "lexical_search",
    "session_chunks",
]
