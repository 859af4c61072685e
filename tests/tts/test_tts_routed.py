"""Per-number TTS: core messages.tts < plugin tts < numbers.<E.164>.tts, per call."""

from __future__ import annotations

import json
from pathlib import Path

from voicecall.config import effective_tts, load_config
from voicecall.speech.tts import FallbackTTS, build_tts
from voicecall.speech.tts.routed import RoutedTTS

ROUTED = "+15550001111"


def test_each_route_speaks_with_its_own_merged_voice(tmp_path: Path) -> None:
    doc = {
        "messages": {"tts": {"provider": "local", "providers": {"local": {"voice": "slt"}},
                             "timeoutMs": 9000}},
        "plugins": {"entries": {"voice-call": {"enabled": True, "config": {
            "provider": "mock",
            "tts": {"providers": {"local": {"durationStretch": 1.1}}},
            "numbers": {ROUTED: {"tts": {"providers": {"local": {"voice": "kal"}}}}},
        }}}},
    }
    path = tmp_path / "openclaw.json5"
    path.write_text(json.dumps(doc))
    loaded = load_config(path, env={})
    cfg = loaded.config
    routed = RoutedTTS(build_tts, lambda key: effective_tts(cfg, key, loaded.core_tts))
    default = routed.for_route(None)
    special = routed.for_route(ROUTED)
    assert isinstance(default, FallbackTTS) and isinstance(special, FallbackTTS)
    assert [t.voice for t in default.chain] == ["slt"]  # type: ignore[attr-defined]
    assert [t.voice for t in special.chain] == ["kal"]  # type: ignore[attr-defined]
    # Deep merge: the plugin's extra setting survives in both, the core timeout too.
    merged = effective_tts(cfg, ROUTED, loaded.core_tts)
    assert merged["providers"]["local"] == {"voice": "kal", "durationStretch": 1.1}
    assert merged["timeoutMs"] == 9000
    assert routed.for_route(ROUTED) is special  # built once per route
