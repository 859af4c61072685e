"""Fast context for the consult tool: snippets of past transcripts found locally (§7.6)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["FAST_MISS_TEXT", "Snippet", "fast_context_text", "search_transcripts"]

FAST_SNIPPET_CHARS = 700

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


def _tokens(text: str) -> list[str]:
    """Lower-cased, stop words dropped, crude suffix stripping (ordered -> order)."""
    words = (t.lower() for t in _TOKEN.findall(text))
    return [_stem(w) for w in words if len(w) > 1 and w not in _STOP]


@dataclass(frozen=True)
class Snippet:
    source: str        # "sessions" | "memory"
    where: str         # call:<id>:<start>-<end> / session:<key>
    text: str
    score: float


def search_transcripts(query: str, docs: Sequence[tuple[str, str, str]],
                       max_results: int) -> list[Snippet]:
    """TF-IDF cosine ranking of ``(source, where, text)`` documents against ``query``."""
    q = _tokens(query)
    if not q or not docs:
        return []
    toks = [_tokens(text) for _, _, text in docs]
    vocab: dict[str, int] = {}
    for words in [q, *toks]:
        for w in words:
            vocab.setdefault(w, len(vocab))
    n = len(docs)
    df = np.zeros(len(vocab))
    for words in toks:
        for w in set(words):
            df[vocab[w]] += 1
    idf = np.log((1 + n) / (1 + df)) + 1.0

    def vec(words: list[str]) -> Any:
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
        if scores[i] <= 0.05:
            break
        source, where, text = docs[i]
        out.append(Snippet(source, where, text[:FAST_SNIPPET_CHARS], round(scores[i], 3)))
    return out


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


FAST_MISS_TEXT = ("No relevant OpenClaw memory or session context was found quickly for this "
                  "question. Answer briefly that you do not have that context handy.")
