"""Offline TTS through the real flite binary (Debian package ``flite``)."""

from __future__ import annotations

import io
import stat
import subprocess
import time
import wave
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import cast

import pytest
from tts_helpers import collect, level

from voicecall.errors import ConfigError, ProviderError
from voicecall.speech.tts import local

SENTENCE = "Thanks for calling, how can I help you today?"


def flite_samples_at_8k(binary: str, voice: str, text: str) -> int:
    """What flite itself produces for ``text``, in 8 kHz samples."""
    out = subprocess.run([binary, "-voice", voice, "-o", "/dev/stdout", "-t", text],
                         capture_output=True, check=True, timeout=10).stdout
    with wave.open(io.BytesIO(out)) as wav:
        return int(round(wav.getnframes() * 8000 / wav.getframerate()))


def script(tmp_path: Path, body: str) -> str:
    path = tmp_path / "fake-flite"
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


async def test_flite_speaks_a_sentence_as_mulaw_8k(flite: str) -> None:
    tts = local.create({})
    audio = b"".join(await collect(tts.synthesize(SENTENCE)))
    await tts.aclose()
    expected = flite_samples_at_8k(flite, "slt", SENTENCE)  # slt is 16 kHz: halved
    assert abs(len(audio) - expected) <= 2
    assert 1.0 < len(audio) / 8000 < 6.0
    assert level(audio) > 0.02  # speech, not silence


async def test_each_sentence_is_one_run_and_audio_adds_up(flite: str) -> None:
    runs: list[str] = []

    class Recording(local.TTS):
        def command(self, sentence: str) -> list[str]:
            runs.append(sentence)
            return super().command(sentence)

    tts = Recording(voice="kal")  # kal is 8 kHz: no resampling, exact lengths
    text = "Hello there.  How are you today? Fine!"
    audio = b"".join(await collect(tts.synthesize(text)))
    assert runs == ["Hello there.", "How are you today?", "Fine!"]
    assert len(audio) == sum(flite_samples_at_8k(flite, "kal", s) for s in runs)


async def test_stopping_early_cancels_the_look_ahead(flite: str) -> None:
    tts = local.create({"voice": "slt"})
    stream = cast(AsyncGenerator[bytes, None],
                  tts.synthesize("First sentence here. Second sentence here. Third one."))
    first = await anext(stream)
    started = time.monotonic()
    await stream.aclose()  # barge-in
    assert first and time.monotonic() - started < 2.0


async def test_missing_binary_names_the_debian_package() -> None:
    tts = local.create({"binary": "/nonexistent/bin/flite"})
    with pytest.raises(ProviderError) as info:
        await collect(tts.synthesize(SENTENCE))
    message = str(info.value)
    assert "'/nonexistent/bin/flite' was not found" in message
    assert "apt-get install flite" in message and "tts.providers.local.binary" in message
    assert not info.value.retryable


async def test_hung_binary_is_killed_at_the_timeout(tmp_path: Path) -> None:
    tts = local.create({"binary": script(tmp_path, "exec sleep 30"), "timeoutMs": 300})
    started = time.monotonic()
    with pytest.raises(ProviderError, match="did not finish within 300 ms") as info:
        await collect(tts.synthesize(SENTENCE))
    assert time.monotonic() - started < 3.0
    assert info.value.retryable


async def test_failing_binary_reports_its_status_and_stderr(tmp_path: Path) -> None:
    tts = local.create({"binary": script(tmp_path, "echo 'no voice' >&2; exit 3")})
    with pytest.raises(ProviderError, match="status 3: no voice"):
        await collect(tts.synthesize(SENTENCE))
    garbage = local.create({"binary": script(tmp_path, "echo not-a-wav")})
    with pytest.raises(ProviderError, match="unreadable WAV"):
        await collect(garbage.synthesize(SENTENCE))


def test_config_is_validated() -> None:
    with pytest.raises(ConfigError) as info:
        local.create({"voice": "nosuchvoice"})
    assert info.value.path == "tts.providers.local.voice"
    assert "slt" in str(info.value)
    assert local.create({"voice": "/opt/voices/x.flitevox"}).voice == "/opt/voices/x.flitevox"
    with pytest.raises(ConfigError, match=r"tts\.providers\.local\.speed"):
        local.create({"speed": 5})
    tts = local.create({"speed": 2.0})
    assert "duration_stretch=0.500" in tts.command("Hi.")
