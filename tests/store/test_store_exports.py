"""The public surface of voicecall.store is exactly its __all__."""

from __future__ import annotations

import voicecall.store as store


def test_exported_members():
    public = {name for name in vars(store) if not name.startswith("_")}
    modules = {"base", "eventlog", "latency", "sqlite"}
    assert public - modules == set(store.__all__)
    for name in store.__all__:
        assert getattr(store, name) is not None
