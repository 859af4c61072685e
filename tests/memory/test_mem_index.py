"""ContextIndex: semantic retrieval, isolation, caching, thresholds, lexical fallback."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from voicecall.calls.model import Call, CallState, Speaker, TranscriptEntry
from voicecall.memory import (
    MIN_SIMILARITY,
    Chunk,
    ContextIndex,
    MiniLMEmbedder,
    Snippet,
    lexical_search,
)
from voicecall.store import SqliteCallStore


@pytest.fixture(scope="module")
def model() -> MiniLMEmbedder:
    e = MiniLMEmbedder()
    e.warm()
    return e


class Counting:
    """Delegates to the shared model and counts the texts it is asked to embed."""

    def __init__(self, inner: MiniLMEmbedder) -> None:
        self.inner = inner
        self.texts: list[str] = []
        self._lock = threading.Lock()

    @property
    def model_id(self) -> str:
        return self.inner.model_id

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        with self._lock:
            self.texts.extend(texts)
        return self.inner.embed(texts)


@pytest.fixture
def counting(model: MiniLMEmbedder) -> Counting:
    return Counting(model)


def call(call_id: str, session: str | None, lines: list[tuple[Speaker, str]],
         started: float = 1_700_000_000.0) -> Call:
    return Call(call_id=call_id, provider="mock", direction="inbound",
                state=CallState.COMPLETED, from_number="+15550001111",
                to_number="+15550002222", started_at=started, session_key=session,
                transcript=tuple(TranscriptEntry(started + i, who, text)
                                 for i, (who, text) in enumerate(lines)))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteCallStore]:
    s = SqliteCallStore(tmp_path / "store")
    s.save(call("past-1", "alice", [
        ("user", "My tooth has been hurting all week."),
        ("bot", "I'm sorry to hear that. Shall I find someone to look at it?"),
        ("user", "Yes please, as soon as possible."),
        ("bot", "I booked you with Dr. Patel on Tuesday at 3 pm."),
        ("user", "I need to move my appointment at the car garage."),
        ("bot", "The garage slot is now Thursday morning."),
    ]))
    s.save(call("other", "bob", [
        ("user", "When is my dentist appointment?"),
        ("bot", "Bob, your dentist appointment is Monday at 9 am."),
    ], started=1_700_000_100.0))
    s.save(call("live", "alice", [("user", "When is my dentist appointment?")],
                started=1_700_000_200.0))
    yield s
    s.close()


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    (root / "memory").mkdir(parents=True)
    (root / "MEMORY.md").write_text(
        "# Family\nAnna's mobile is 555 0199; she prefers text messages.\n\n"
        "# Websites\nThe contact form on the plumber's website is broken.\n\n"
        "# Home\nNetwork key for the home router: bluefish42\n\n"
        "# Bank\nI changed my password at the bank last week.\n")
    (root / "memory" / "deliveries.md").write_text(
        "# Parcel\nThe courier dropped off the parcel at the front door this morning.\n\n"
        "# Sofa\nThe delivery of the new sofa is scheduled for next month.\n")
    return root


@pytest.fixture
def index(ws: Path, store: SqliteCallStore, tmp_path: Path,
          counting: Counting) -> Iterator[ContextIndex]:
    idx = ContextIndex(workspace=ws, store=store, cache_path=tmp_path / "home" / "mi.sqlite",
                       embedder=counting)
    yield idx
    idx.close()


def ask(idx: ContextIndex, query: str, n: int = 3) -> list[Snippet]:
    return idx.search(query, session_key="alice", exclude_call_id="live", max_results=n)


# Each answer shares no content word with its question; a lexical decoy does.
PARAPHRASES = [
    ("When is my dentist appointment?", "call:past-1:0-3", "Dr. Patel"),
    ("How can I contact my sister?", "MEMORY.md:1-2", "555 0199"),
    ("What's the wifi password?", "MEMORY.md:7-8", "bluefish42"),
    ("Has my package arrived?", "memory/deliveries.md:1-2", "courier"),
]


@pytest.mark.parametrize(("query", "where", "needle"), PARAPHRASES)
def test_semantic_hit_where_tfidf_misses(index: ContextIndex, query: str, where: str,
                                         needle: str) -> None:
    hits = ask(index, query)
    assert hits and hits[0].where == where and needle in hits[0].text
    assert hits[0].score >= MIN_SIMILARITY
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    chunks = index.chunks(session_key="alice", exclude_call_id="live")
    lexical = lexical_search(query, chunks, 3)
    assert not lexical or lexical[0].where != where


def test_other_sessions_are_never_returned(index: ContextIndex) -> None:
    # Bob's call contains the question verbatim; it must still never show up for Alice.
    hits = ask(index, "When is my dentist appointment?", n=10)
    assert hits and all("call:other" not in h.where and "Bob" not in h.text for h in hits)
    assert all("call:live" not in h.where for h in hits)
    bob = index.search("When is my dentist appointment?", session_key="bob",
                       sources=["sessions"])
    assert [h.where for h in bob] == ["call:other:0-1"]
    assert index.search("dentist", session_key=None, sources=["sessions"]) == []


def test_sources_and_snippet_shape(index: ContextIndex) -> None:
    mem = index.search("How can I contact my sister?", session_key="alice", sources=["memory"])
    assert mem and all(h.source == "memory" for h in mem)
    ses = index.search("When is my dentist appointment?", session_key="alice",
                       exclude_call_id="live", sources=["sessions"], max_results=1)
    assert len(ses) == 1 and ses[0].source == "sessions"
    assert ses[0].text.startswith("Caller: My tooth")
    assert isinstance(ses[0].score, float)


def test_unrelated_question_finds_nothing(index: ContextIndex) -> None:
    assert ask(index, "Who won the football world cup in 1998?") == []
    assert ask(index, "   ") == []


def test_threshold_is_applied(ws: Path, counting: Counting) -> None:
    strict = ContextIndex(workspace=ws, embedder=counting, min_similarity=0.99)
    assert strict.search("How can I contact my sister?", session_key=None) == []
    lax = ContextIndex(workspace=ws, embedder=counting, min_similarity=-1.0)
    assert len(lax.search("How can I contact my sister?", session_key=None,
                          max_results=100)) == len(lax.chunks(session_key=None))


def test_second_search_embeds_only_the_question(index: ContextIndex, ws: Path,
                                                counting: Counting) -> None:
    ask(index, "When is my dentist appointment?")
    chunks = index.chunks(session_key="alice", exclude_call_id="live")
    # Each text once: windows and their entries (matched alone too), and the question.
    assert len(counting.texts) == 1 + sum(1 + len(c.parts) for c in chunks) == 1 + 6 + 2 + 6
    counting.texts.clear()
    ask(index, "How can I contact my sister?")
    assert counting.texts == ["How can I contact my sister?"]
    # A new memory paragraph: only it is embedded.
    with (ws / "memory" / "deliveries.md").open("a") as fh:
        fh.write("\n# Plumber\nThe plumber comes on Wednesday.\n")
    counting.texts.clear()
    ask(index, "When does the plumber come?")
    assert counting.texts == ["When does the plumber come?",
                              "# Plumber\nThe plumber comes on Wednesday."]


def test_disk_cache_survives_a_restart(ws: Path, store: SqliteCallStore, tmp_path: Path,
                                       model: MiniLMEmbedder) -> None:
    path = tmp_path / "home" / "memory-index.sqlite"
    first = ContextIndex(workspace=ws, store=store, cache_path=path, embedder=Counting(model))
    before = ask(first, "What's the wifi password?")
    first.close()
    assert path.stat().st_mode & 0o777 == 0o600
    fresh = Counting(model)
    second = ContextIndex(workspace=ws, store=store, cache_path=path, embedder=fresh)
    assert ask(second, "What's the wifi password?") == before
    assert fresh.texts == ["What's the wifi password?"]
    second.close()


def test_unusable_cache_file_only_costs_speed(ws: Path, tmp_path: Path,
                                              counting: Counting) -> None:
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    idx = ContextIndex(workspace=ws, cache_path=bad, embedder=counting)
    assert idx.search("How can I contact my sister?", session_key=None)[0].where == \
        "MEMORY.md:1-2"


def test_lexical_fallback_without_model(ws: Path, store: SqliteCallStore, tmp_path: Path,
                                        caplog: pytest.LogCaptureFixture) -> None:
    idx = ContextIndex(workspace=ws, store=store,
                       embedder=MiniLMEmbedder(tmp_path / "no-model-here"))
    with caplog.at_level(logging.WARNING, logger="voicecall.memory"):
        assert idx.warm() is False
        hits = ask(idx, "When is the garage appointment?")
        ask(idx, "bank password")
    assert hits[0].where == "call:past-1:4-5"   # shares "garage" and "appointment"
    warnings = [r for r in caplog.records if r.getMessage() == "memory.embedding_unavailable"]
    assert len(warnings) == 1


def test_duplicate_texts_are_returned_once(counting: Counting) -> None:
    class Fixed(ContextIndex):
        def chunks(self, **_: object) -> list[Chunk]:
            return [Chunk("memory", "a.md:1-1", "Anna's mobile is 555 0199."),
                    Chunk("memory", "b.md:1-1", "Anna's mobile is 555 0199.")]

    hits = Fixed(embedder=counting).search("What is Anna's phone number?", session_key=None)
    assert [h.where for h in hits] == ["a.md:1-1"]


def test_concurrent_cold_searches_embed_each_text_once(index: ContextIndex,
                                                       counting: Counting) -> None:
    queries = [q for q, _, _ in PARAPHRASES] * 4
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda q: ask(index, q), queries))
    for (q, where, _), hits in zip(PARAPHRASES * 4, results, strict=True):
        assert hits[0].where == where, q
    texts = [t for t in counting.texts if t not in queries]
    assert len(texts) == len(set(texts)) == 14


def test_prime_embeds_a_callers_history_ahead(index: ContextIndex, counting: Counting) -> None:
    assert index.prime(session_key="alice", exclude_call_id="live") is True
    counting.texts.clear()
    ask(index, "What is my son allergic to?")
    assert counting.texts == ["What is my son allergic to?"]


async def test_runs_under_the_bridge_timeout(index: ContextIndex) -> None:
    index.warm()
    hits = await asyncio.wait_for(asyncio.to_thread(
        index.search, "Has my package arrived?", session_key="alice", exclude_call_id="live",
        sources=["memory", "sessions"], max_results=3), 0.8)
    assert hits[0].where == "memory/deliveries.md:1-2"
