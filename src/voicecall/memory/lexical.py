"""TF-IDF ranking: the fallback when the embedding model is unavailable.

Ported from the realtime bridge's original fast-context search. It only finds
snippets that share (stemmed) words with the question.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from voicecall.memory.sources import CHUNK_CHARS, Chunk, Snippet

__all__ = ["LEXICAL_MIN_SCORE", "lexical_search", "tokens"]

#: TF-IDF cosine at or below this is noise (one shared common word).
LEXICAL_MIN_SCORE = 0.05

_TOKEN = re.compile(r"[\w']+", re.UNICODE)
_STOP = frozenset("the a an and or but is are was were be been am do does did what which who "
                  "whom this that these those to of in on at for with from by it its i me my "
                  "you your we our they them he she his her can could would should will shall "
                  "have has had not no yes so if then than there here how when where why".split())
_SUFFIXES = ("ing", "ed", "es", "s")


def _stem(word: str) -> str:
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def tokens(text: str) -> list[str]:
    """Lower-cased, stop words dropped, crude suffix stripping (ordered -> order)."""
    words = (t.lower() for t in _TOKEN.findall(text))
    return [_stem(w) for w in words if len(w) > 1 and w not in _STOP]


def lexical_search(query: str, chunks: Sequence[Chunk], max_results: int) -> list[Snippet]:
    """TF-IDF cosine ranking of ``chunks`` against ``query``, best first."""
    q = tokens(query)
    if not q or not chunks or max_results <= 0:
        return []
    toks = [tokens(c.text) for c in chunks]
    vocab: dict[str, int] = {}
    for words in [q, *toks]:
        for w in words:
            vocab.setdefault(w, len(vocab))
    n = len(chunks)
    df = np.zeros(len(vocab))
    for words in toks:
        for w in set(words):
            df[vocab[w]] += 1
    idf = np.log((1 + n) / (1 + df)) + 1.0

    def vec(words: list[str]) -> NDArray[np.float64]:
        v = np.zeros(len(vocab))
        for w, c in Counter(words).items():
            v[vocab[w]] = c
        v *= idf
        norm = float(np.linalg.norm(v))
        return v / norm if norm else v

    qv = vec(q)
    scores = [float(vec(words) @ qv) for words in toks]
    ranked = sorted(range(n), key=lambda i: scores[i], reverse=True)
    out = []
    for i in ranked[:max_results]:
        if scores[i] <= LEXICAL_MIN_SCORE:
            break
        c = chunks[i]
        out.append(Snippet(c.source, c.where, c.text[:CHUNK_CHARS], round(scores[i], 3)))
    return out
