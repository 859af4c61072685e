"""Memory-file chunking and sandboxing; past-call transcript windows."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from voicecall.calls.model import Call, CallState, Speaker, TranscriptEntry
from voicecall.memory import CHUNK_CHARS, MemoryFiles, chunk_markdown, session_chunks
from voicecall.store import SqliteCallStore


def test_chunks_split_at_headings_with_line_ranges() -> None:
    text = ("# Family\n"          # 1
            "Anna is my sister.\n"  # 2
            "\n"                    # 3
            "She lives in Boston.\n"  # 4
            "\n"                    # 5
            "## Car\n"              # 6
            "Inspection in June.\n")  # 7
    assert chunk_markdown(text) == [
        (1, 4, "# Family\nAnna is my sister.\n\nShe lives in Boston."),
        (6, 7, "## Car\nInspection in June."),
    ]


def test_paragraphs_pack_until_the_limit() -> None:
    paras = [f"Paragraph {i} " + "x" * 40 for i in range(6)]
    chunks = chunk_markdown("\n\n".join(paras), max_chars=120)
    assert [(a, b) for a, b, _ in chunks] == [(1, 3), (5, 7), (9, 11)]
    assert all(len(t) <= 120 for _, _, t in chunks)
    assert chunks[0][2] == "\n\n".join(paras[:2])


def test_long_paragraph_and_long_line_are_split() -> None:
    lines = [f"line {i} " + "y" * 90 for i in range(20)]          # one 2,000-char paragraph
    long_line = "z" * (2 * CHUNK_CHARS + 10)
    text = "\n".join(lines) + "\n\n" + long_line + "\n\ntail"
    chunks = chunk_markdown(text)
    assert all(len(t) <= CHUNK_CHARS for _, _, t in chunks)
    para = [c for c in chunks if c[1] <= 20]
    assert para[0][0] == 1 and para[-1][1] == 20
    assert all(b + 1 == a for (_, b, _), (a, _, _) in zip(para, para[1:], strict=False))
    assert "\n".join(t for _, _, t in para) == "\n".join(lines)
    parts = [c for c in chunks if c[0] == c[1] == 22]
    assert "".join(t for _, _, t in parts) == long_line and len(parts) == 3
    assert chunks[-1] == (24, 24, "tail")


def test_empty_and_blank_text() -> None:
    assert chunk_markdown("") == []
    assert chunk_markdown("\n\n   \n") == []


# --------------------------------------------------------------------------- files


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    (root / "memory" / "people").mkdir(parents=True)
    (root / "MEMORY.md").write_text("# Me\nI like tea.\n")
    (root / "memory" / "2024-05-01.md").write_text("intro\n\n## Dentist\nTuesday 3 pm\nDr. Patel\n")
    (root / "memory" / "people" / "anna.md").write_text("Anna: 555 0199\n")
    (root / "memory" / "notes.txt").write_text("not markdown")
    return root


def wheres(mf: MemoryFiles) -> list[str]:
    return [c.where for c in mf.chunks()]


def test_memory_files_and_where(ws: Path) -> None:
    chunks = MemoryFiles(ws).chunks()
    assert [(c.source, c.where, c.text) for c in chunks] == [
        ("memory", "MEMORY.md:1-2", "# Me\nI like tea."),
        ("memory", "memory/2024-05-01.md:1-1", "intro"),
        ("memory", "memory/2024-05-01.md:3-5", "## Dentist\nTuesday 3 pm\nDr. Patel"),
        ("memory", "memory/people/anna.md:1-1", "Anna: 555 0199"),
    ]


def test_symlink_escapes_are_refused(ws: Path, tmp_path: Path) -> None:
    secret_dir = tmp_path / "secret"
    secret_dir.mkdir()
    (secret_dir / "s.md").write_text("TOP SECRET")
    (ws / "memory" / "leak.md").symlink_to(secret_dir / "s.md")
    (ws / "memory" / "dotdot.md").symlink_to(Path("..") / ".." / "secret" / "s.md")
    (ws / "memory" / "leakdir").symlink_to(secret_dir, target_is_directory=True)
    (ws / "memory" / "ok.md").symlink_to(ws / "MEMORY.md")   # inside: fine
    chunks = MemoryFiles(ws).chunks()
    assert all("SECRET" not in c.text for c in chunks)
    assert "memory/ok.md:1-2" in [c.where for c in chunks]


def test_memory_dir_or_file_pointing_outside_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / "memory").mkdir(parents=True)
    (outside / "memory" / "x.md").write_text("SECRET")
    (outside / "MEMORY.md").write_text("SECRET")
    root = tmp_path / "ws"
    root.mkdir()
    (root / "memory").symlink_to(outside / "memory", target_is_directory=True)
    (root / "MEMORY.md").symlink_to(outside / "MEMORY.md")
    assert MemoryFiles(root).chunks() == []
    # A workspace given with ".." is resolved first, so it still works.
    (outside / "memory" / "x.md").unlink()
    assert MemoryFiles(root / ".." / "ws").chunks() == []
    assert MemoryFiles(tmp_path / "missing").chunks() == []


def test_size_cap_and_file_cap(ws: Path) -> None:
    big = "\n".join(f"line {i}" for i in range(5000))
    (ws / "memory" / "big.md").write_text(big)
    mf = MemoryFiles(ws, max_file_bytes=100)
    text = "\n".join(c.text for c in mf.chunks() if c.where.startswith("memory/big.md"))
    assert text.startswith("line 0") and len(text) <= 100 and "line 4999" not in text
    for i in range(10):
        (ws / "memory" / f"n{i}.md").write_text(f"note {i}")
    assert len({w.split(":")[0] for w in wheres(MemoryFiles(ws, max_files=3))}) == 3


def test_changed_files_are_reread(ws: Path) -> None:
    mf = MemoryFiles(ws)
    assert "memory/people/anna.md:1-1" in wheres(mf)
    path = ws / "memory" / "people" / "anna.md"
    path.write_text("Anna: 555 0199\nBob: 555 0100\n")
    os.utime(path, ns=(1, 1))   # a different mtime even on coarse clocks
    assert "memory/people/anna.md:1-2" in wheres(mf)
    path.unlink()
    assert not [w for w in wheres(mf) if "anna" in w]


# --------------------------------------------------------------------------- past calls


def make_call(call_id: str, session: str | None, lines: list[tuple[Speaker, str]],
              started: float) -> Call:
    return Call(call_id=call_id, provider="mock", direction="inbound",
                state=CallState.COMPLETED, from_number="+15550001111",
                to_number="+15550002222", started_at=started, session_key=session,
                transcript=tuple(TranscriptEntry(started + i, who, text)
                                 for i, (who, text) in enumerate(lines)))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteCallStore]:
    s = SqliteCallStore(tmp_path / "store")
    yield s
    s.close()


def test_session_windows(store: SqliteCallStore) -> None:
    lines: list[tuple[Speaker, str]] = [
        ("user", f"q{i}") if i % 2 == 0 else ("bot", f"a{i}") for i in range(6)]
    lines[3] = ("bot", "  ")
    store.save(make_call("c1", "s-alice", lines, 1_700_000_000.0))
    chunks = session_chunks(store, "s-alice")
    assert [(c.source, c.where, c.text) for c in chunks] == [
        ("sessions", "call:c1:0-3", "Caller: q0\nAgent: a1\nCaller: q2"),
        ("sessions", "call:c1:4-5", "Caller: q4\nAgent: a5"),
    ]


def test_sessions_never_cross_callers(store: SqliteCallStore) -> None:
    store.save(make_call("mine-old", "s-alice", [("user", "my PIN is 1111")], 1_700_000_000.0))
    store.save(make_call("mine-now", "s-alice", [("user", "current call")], 1_700_000_100.0))
    store.save(make_call("other", "s-bob", [("user", "bob's PIN is 2222")], 1_700_000_050.0))
    store.save(make_call("nokey", None, [("user", "anonymous")], 1_700_000_060.0))
    got = session_chunks(store, "s-alice", exclude_call_id="mine-now")
    assert [c.where for c in got] == ["call:mine-old:0-0"]
    assert session_chunks(store, None) == []
    assert session_chunks(store, "") == []
