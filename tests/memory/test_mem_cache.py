"""VectorCache: memory LRU bound, on-disk bound, other models' rows dropped."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from voicecall.memory import VectorCache, cache_key


def vec(i: int) -> NDArray[np.float32]:
    return np.full(4, i, dtype=np.float32)


def models(path: Path) -> list[str]:
    with sqlite3.connect(path) as db:
        return [m for (m,) in db.execute("SELECT model FROM vectors")]


def test_memory_lru_is_bounded() -> None:
    c = VectorCache(None, memory_entries=2)
    keys = [cache_key("m", str(i)) for i in range(3)]
    c.put_many("m", {keys[0]: vec(0), keys[1]: vec(1)})
    assert c.get_many([keys[0]])             # 0 is now the most recent
    c.put_many("m", {keys[2]: vec(2)})
    assert set(c.get_many(keys)) == {keys[0], keys[2]} and len(c) == 2


def test_disk_is_bounded_and_keeps_recent_rows(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    c = VectorCache(path, disk_rows=3)
    keys = [cache_key("m", str(i)) for i in range(5)]
    for i, k in enumerate(keys):
        c.put_many("m", {k: vec(i)})
        time.sleep(0.002)
    c.close()
    fresh = VectorCache(path)
    got = fresh.get_many(keys)
    assert set(got) == set(keys[2:])
    assert np.array_equal(got[keys[4]], vec(4))
    fresh.close()


def test_rows_of_another_model_are_dropped(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    old = VectorCache(path)
    old.put_many("old-model", {cache_key("old-model", "x"): vec(1)})
    old.close()
    new = VectorCache(path)
    new.put_many("new-model", {cache_key("new-model", "x"): vec(2)})
    new.close()
    assert models(path) == ["new-model"]


def test_keys_depend_on_model_and_text() -> None:
    assert cache_key("a", "x") != cache_key("b", "x") != cache_key("a", "y")
    assert len(cache_key("a", "x")) == 32
