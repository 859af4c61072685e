"""Legacy key migration (reference §2.9) and ``doctor --fix`` file rewriting."""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import json5
import pytest

from voicecall.config import (
    detect_legacy_keys,
    doctor_fix,
    load_config,
    migrate_legacy,
)
from voicecall.config.doctor import backup_path

PREFIX = "plugins.entries.voice-call.config"


def test_current_config_has_no_legacy_keys() -> None:
    raw = {"provider": "twilio", "fromNumber": "+15550001234",
           "streaming": {"provider": "openai", "providers": {"openai": {"model": "m"}}},
           "realtime": {"agentContext": {"includeSystemPrompt": False}},
           "tts": {"providers": {"openai": {"voice": "alloy"}}}}
    assert detect_legacy_keys(raw) == []
    assert migrate_legacy(raw) == (raw, [])


def test_provider_log_becomes_mock() -> None:
    new, changes = migrate_legacy({"provider": "log"})
    assert new == {"provider": "mock"}
    assert changes == ['Moved provider "log" → "mock".']


def test_twilio_from_moves_when_from_number_missing() -> None:
    raw = {"twilio": {"from": "+15550001111", "accountSid": "AC1"}}
    new, changes = migrate_legacy(raw)
    assert new == {"twilio": {"accountSid": "AC1"}, "fromNumber": "+15550001111"}
    assert changes == ["Moved twilio.from → fromNumber."]
    assert raw["twilio"]["from"] == "+15550001111"  # input untouched


def test_twilio_from_conflict_keeps_current() -> None:
    new, changes = migrate_legacy({"fromNumber": "+15550002222",
                                   "twilio": {"from": "+15550001111"}})
    assert new == {"fromNumber": "+15550002222", "twilio": {}}
    assert changes == ["Kept fromNumber; removed legacy twilio.from."]


def test_streaming_legacy_keys() -> None:
    raw = {"streaming": {"enabled": True, "sttProvider": "openai-realtime",
                         "openaiApiKey": "sk-legacy", "sttModel": "gpt-4o-transcribe",
                         "silenceDurationMs": 700, "vadThreshold": 0.4}}
    new, changes = migrate_legacy(raw)
    assert new == {"streaming": {"enabled": True, "provider": "openai", "providers": {
        "openai": {"apiKey": "sk-legacy", "model": "gpt-4o-transcribe",
                   "silenceDurationMs": 700, "vadThreshold": 0.4}}}}
    assert changes == [
        "Moved streaming.sttProvider → streaming.provider.",
        "Moved streaming.openaiApiKey → streaming.providers.openai.apiKey.",
        "Moved streaming.sttModel → streaming.providers.openai.model.",
        "Moved streaming.silenceDurationMs → streaming.providers.openai.silenceDurationMs.",
        "Moved streaming.vadThreshold → streaming.providers.openai.vadThreshold.",
    ]
    assert detect_legacy_keys(raw) == [
        "streaming.sttProvider", "streaming.openaiApiKey", "streaming.sttModel",
        "streaming.silenceDurationMs", "streaming.vadThreshold",
    ]


def test_streaming_conflicts_keep_current() -> None:
    raw = {"streaming": {"provider": "deepgram", "sttProvider": "openai",
                         "openaiApiKey": "sk-old",
                         "providers": {"openai": {"apiKey": "sk-new"}}}}
    new, changes = migrate_legacy(raw)
    assert new == {"streaming": {"provider": "deepgram",
                                 "providers": {"openai": {"apiKey": "sk-new"}}}}
    assert changes == [
        "Kept streaming.provider; removed legacy streaming.sttProvider.",
        "Kept streaming.providers.openai.apiKey; removed legacy streaming.openaiApiKey.",
    ]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf"), "800"])
def test_non_finite_streaming_numbers_removed(bad: Any) -> None:
    new, changes = migrate_legacy({"streaming": {"silenceDurationMs": bad}})
    assert new == {"streaming": {}}
    assert changes == ["Removed invalid streaming.silenceDurationMs (not a finite number)."]


def test_legacy_tts_provider_keys() -> None:
    raw = {"tts": {"provider": "elevenlabs",
                   "elevenlabs": {"voiceId": "v1", "apiKey": "el"},
                   "edge": {"voice": "en-US-AriaNeural"}}}
    new, changes = migrate_legacy(raw)
    assert new == {"tts": {"provider": "elevenlabs", "providers": {
        "elevenlabs": {"voiceId": "v1", "apiKey": "el"},
        "edge": {"voice": "en-US-AriaNeural"}}}}
    assert changes == ["Moved tts.elevenlabs → tts.providers.elevenlabs.",
                       "Moved tts.edge → tts.providers.edge."]


def test_legacy_tts_conflict_keeps_current_fields_and_fills_missing() -> None:
    raw = {"tts": {"openai": {"voice": "alloy", "model": "tts-1"},
                   "providers": {"openai": {"voice": "coral"}}}}
    new, changes = migrate_legacy(raw)
    assert new == {"tts": {"providers": {"openai": {"voice": "coral", "model": "tts-1"}}}}
    assert changes == ["Merged tts.openai into tts.providers.openai; kept current voice "
                       "and removed the legacy copies."]


def test_legacy_tts_in_number_routes() -> None:
    raw = {"numbers": {"+15550001111": {"tts": {"microsoft": {"voice": "x"}}}}}
    new, changes = migrate_legacy(raw)
    assert new == {"numbers": {"+15550001111": {"tts": {"providers": {"microsoft":
                                                                      {"voice": "x"}}}}}}
    assert detect_legacy_keys(raw) == ["numbers.+15550001111.tts.microsoft"]
    assert changes == ["Moved numbers.+15550001111.tts.microsoft → "
                       "numbers.+15550001111.tts.providers.microsoft."]


def test_whole_document_migration_uses_prefix() -> None:
    doc = {"plugins": {"entries": {"voice-call": {"enabled": True,
                                                  "config": {"provider": "log"}}}},
           "messages": {"tts": {"openai": {"voice": "alloy"}}}}
    new, changes = migrate_legacy(doc)
    assert new["plugins"]["entries"]["voice-call"]["config"] == {"provider": "mock"}
    assert new["messages"] == doc["messages"]  # the core config is not ours to rewrite
    assert changes == [f'Moved {PREFIX}.provider "log" → "mock".']
    assert detect_legacy_keys(doc) == [f"{PREFIX}.provider"]


def test_migrated_legacy_config_validates(tmp_path: Path) -> None:
    f = tmp_path / "c.json5"
    f.write_text(json.dumps({"provider": "log", "twilio": {"from": "+15550001111"},
                             "tts": {"openai": {"voice": "alloy"}}}))
    cfg = load_config(f, {}).config
    assert cfg.provider == "mock" and cfg.from_number == "+15550001111"
    assert cfg.tts.providers == {"openai": {"voice": "alloy"}}


# --- doctor --fix on files -------------------------------------------------------------

LEGACY_JSON5 = """// my voice-call config
{
  provider: "log",   // old name
  twilio: { from: "+15550001111" },
  streaming: { sttProvider: "openai", silenceDurationMs: NaN },
}
"""


def test_doctor_fix_rewrites_with_backup_and_mode(tmp_path: Path) -> None:
    f = tmp_path / "config.json5"
    f.write_text(LEGACY_JSON5)
    os.chmod(f, 0o600)
    result = doctor_fix(f)
    assert result.changed
    assert result.backup is not None and result.backup.exists()
    assert result.backup.name.startswith("config.json5.bak-")
    assert len(result.backup.name) == len("config.json5.bak-") + 14
    assert result.backup.read_text() == LEGACY_JSON5
    assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert stat.S_IMODE(result.backup.stat().st_mode) == 0o600
    assert json.loads(f.read_text()) == {"provider": "mock", "twilio": {},
                                         "streaming": {"provider": "openai"},
                                         "fromNumber": "+15550001111"}
    assert result.changes[:4] == [
        'Moved provider "log" → "mock".',
        "Moved twilio.from → fromNumber.",
        "Moved streaming.sttProvider → streaming.provider.",
        "Removed invalid streaming.silenceDurationMs (not a finite number).",
    ]
    assert "comments" in result.changes[-1] and result.backup.name in result.changes[-1]
    assert not list(tmp_path.glob(".config.json5.*.tmp"))
    loaded = load_config(f, {})
    assert loaded.legacy_keys == [] and loaded.config.provider == "mock"


def test_doctor_fix_is_idempotent(tmp_path: Path) -> None:
    f = tmp_path / "config.json5"
    f.write_text(LEGACY_JSON5)
    first = doctor_fix(f)
    content = f.read_text()
    second = doctor_fix(f)
    assert first.changed and not second.changed
    assert second.changes == [] and second.backup is None
    assert f.read_text() == content
    assert len(list(tmp_path.glob("config.json5.bak-*"))) == 1


def test_doctor_fix_no_change_writes_nothing(tmp_path: Path) -> None:
    f = tmp_path / "config.json5"
    original = '{ provider: "mock" } // fine\n'
    f.write_text(original)
    assert doctor_fix(f).changed is False
    assert f.read_text() == original
    assert list(tmp_path.iterdir()) == [f]


def test_doctor_fix_whole_document_keeps_the_rest(tmp_path: Path) -> None:
    f = tmp_path / "openclaw.json5"
    doc = {"agents": {"list": [{"id": "main"}]},
           "messages": {"tts": {"provider": "openai"}},
           "plugins": {"entries": {"voice-call": {"enabled": True, "config": {
               "provider": "twilio", "fromNumber": "+15550002222",
               "twilio": {"from": "+15550001111", "accountSid": "AC1"},
               "tts": {"openai": {"voice": "alloy"}}}}, "other": {"enabled": False}}}}
    f.write_text(json.dumps(doc))
    os.chmod(f, 0o640)
    result = doctor_fix(f)
    assert result.changed
    assert result.changes[:2] == [
        f"Kept {PREFIX}.fromNumber; removed legacy {PREFIX}.twilio.from.",
        f"Moved {PREFIX}.tts.openai → {PREFIX}.tts.providers.openai.",
    ]
    new = json5.loads(f.read_text())
    assert new["agents"] == doc["agents"] and new["messages"] == doc["messages"]
    assert new["plugins"]["entries"]["other"] == {"enabled": False}
    assert new["plugins"]["entries"]["voice-call"]["config"] == {
        "provider": "twilio", "fromNumber": "+15550002222",
        "twilio": {"accountSid": "AC1"}, "tts": {"providers": {"openai": {"voice": "alloy"}}}}
    assert stat.S_IMODE(f.stat().st_mode) == 0o640


def test_doctor_fix_follows_symlink(tmp_path: Path) -> None:
    real = tmp_path / "real.json5"
    real.write_text('{provider: "log"}')
    link = tmp_path / "link.json5"
    link.symlink_to(real)
    assert doctor_fix(link).changed
    assert link.is_symlink()
    assert json.loads(real.read_text()) == {"provider": "mock"}


def test_backup_name_is_unique(tmp_path: Path) -> None:
    f = tmp_path / "c.json5"
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    first = backup_path(f, now)
    assert first.name == "c.json5.bak-20260102030405"
    first.write_text("x")
    assert backup_path(f, now).name == "c.json5.bak-20260102030405-1"
