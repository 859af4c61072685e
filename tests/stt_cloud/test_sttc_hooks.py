"""The ``WsSttSession`` hooks the JSON-audio providers use: control messages queued with the
audio, the local-VAD commit, the PCM encoder, and the config helpers they share."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from sttc_kit import frames, tone_burst

from voicecall.audio.g711 import FRAME_BYTES, SAMPLE_RATE, mulaw_to_pcm16
from voicecall.audio.vad import EnergyVad
from voicecall.errors import ConfigError
from voicecall.speech.stt._ws import (
    PcmEncoder,
    ProviderConfig,
    WsSttProvider,
    WsSttSession,
    check_encoding,
    joined,
)

LOUD = tone_burst(100, 0)          # five 20 ms frames of tone
QUIET = b"\xff" * FRAME_BYTES      # one 20 ms frame of mu-law silence


class _Socket:
    """Stands in for the connection: records every frame sent."""

    def __init__(self) -> None:
        self.frames: list[str | bytes] = []

    async def send(self, frame: str | bytes) -> None:
        self.frames.append(frame)


class _Session(WsSttSession):
    provider = "test"

    def encode_audio(self, mulaw: bytes) -> str:
        return json.dumps({"audio": len(self.audio_payload(mulaw))})

    def commit_message(self) -> str:
        return "commit"

    async def on_text(self, data: dict[str, Any]) -> None:
        return None


def _session(**kwargs: Any) -> tuple[_Session, _Socket]:
    session = _Session(call_id="c", url="ws://unused", headers={}, secret="k", **kwargs)
    sock = _Socket()
    session._ws = sock  # type: ignore[assignment]
    return session, sock


def _events(session: WsSttSession) -> list[str]:
    out = []
    while not session._events.empty():
        out.append(session._events.get_nowait().type)
    return out


async def _send(session: WsSttSession, audio: bytes) -> None:
    for frame in frames(audio):
        await session.send_audio(frame)


async def test_control_messages_wait_in_order_with_the_audio_then_flush() -> None:
    session, sock = _session()
    await session.send_audio(QUIET)
    await session.send_control("first")
    await session.send_audio(QUIET)
    await session.send_control("second")
    assert sock.frames == [] and session.queued_bytes == 2 * FRAME_BYTES
    await session.mark_ready()
    assert sock.frames == ['{"audio": 160}', "first", '{"audio": 160}', "second"]
    await session.send_control("live")                     # ready: straight out
    assert sock.frames[-1] == "live"
    assert session.sent_bytes == 2 * FRAME_BYTES and session.queued_bytes == 0


async def test_queue_overflow_drops_the_oldest_audio_never_a_control_message() -> None:
    session, sock = _session(max_queued_bytes=2 * FRAME_BYTES)
    await session.send_control("config")
    for _ in range(4):
        await session.send_audio(QUIET)
    assert session.queued_bytes == 2 * FRAME_BYTES
    assert session.dropped_bytes == 2 * FRAME_BYTES
    await session.mark_ready()
    assert sock.frames == ["config", '{"audio": 160}', '{"audio": 160}']


async def test_local_vad_reports_speech_start_and_commits_after_silence() -> None:
    session, sock = _session(local_vad=EnergyVad(threshold=0.035, release_frames=3))
    await _send(session, LOUD + QUIET * 2)                 # before ready: queued
    assert _events(session) == ["speech-start"]
    await session.mark_ready()
    await _send(session, QUIET)                            # the third quiet frame ends it
    assert sock.frames[-2:] == ['{"audio": 160}', "commit"]
    assert sock.frames.count("commit") == 1
    await _send(session, LOUD + QUIET * 3)
    assert _events(session) == ["ready", "speech-start"]
    assert sock.frames.count("commit") == 2


async def test_commit_heard_before_ready_is_queued_after_its_audio() -> None:
    session, sock = _session(local_vad=EnergyVad(threshold=0.035, release_frames=2))
    await _send(session, LOUD + QUIET * 2 + LOUD)
    await session.mark_ready()
    commit = sock.frames.index("commit")
    assert commit == len(frames(LOUD)) + 2                 # right after the second quiet frame
    assert len(sock.frames) == 2 * len(frames(LOUD)) + 2 + 1


async def test_no_control_message_after_close() -> None:
    session, sock = _session()
    await session.mark_ready()
    await session.aclose()
    await session.send_control("late")
    assert "late" not in sock.frames


def test_pcm_encoder_resamples_to_int16_or_float32() -> None:
    audio = tone_burst(200, 0)
    to_s16, to_f32 = PcmEncoder(16000), PcmEncoder(16000, float32=True)
    s16 = b"".join(to_s16(f) for f in frames(audio))
    f32 = b"".join(to_f32(f) for f in frames(audio))
    n = len(s16) // 2
    assert 16000 * 0.2 - 64 <= n < 16000 * 0.2              # 2x, less the filter's delay
    assert len(f32) == 4 * n
    ints = np.frombuffer(s16, dtype="<i2").astype(np.float64)
    floats = np.frombuffer(f32, dtype="<f4").astype(np.float64)
    assert np.allclose(floats, ints / 32768.0, atol=1e-4)
    same = PcmEncoder(SAMPLE_RATE)(audio)                   # 8 kHz PCM: decoded, not resampled
    assert np.array_equal(np.frombuffer(same, dtype="<i2"), mulaw_to_pcm16(audio))


def test_default_encode_audio_uses_the_pcm_encoder() -> None:
    session = WsSttSession(call_id="c", url="ws://unused", headers={}, secret="k",
                           pcm=PcmEncoder(SAMPLE_RATE))
    assert session.encode_audio(QUIET) == mulaw_to_pcm16(QUIET).astype("<i2").tobytes()
    plain = WsSttSession(call_id="c", url="ws://unused", headers={}, secret="k")
    assert plain.encode_audio(QUIET) == QUIET


def test_api_key_from_env_only_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FIRST_KEY", raising=False)
    monkeypatch.setenv("SECOND_KEY", " env-key ")
    pc = ProviderConfig({}, "x")
    assert pc.api_key(["FIRST_KEY", "SECOND_KEY"], from_env=True) == "env-key"
    assert ProviderConfig({"apiKey": "cfg"}, "x").api_key(["SECOND_KEY"], from_env=True) == "cfg"
    with pytest.raises(ConfigError) as info:
        pc.api_key(["SECOND_KEY"])
    assert info.value.path == "streaming.providers.x.apiKey"


def test_sample_rate_and_number_checks() -> None:
    pc = ProviderConfig({"sampleRate": 16000}, "x")
    assert pc.get_sample_rate("pcm", (8000, 16000), mulaw="mulaw", pcm="pcm") == 16000
    with pytest.raises(ConfigError, match="use encoding pcm") as info:
        pc.get_sample_rate("mulaw", (8000, 16000), mulaw="mulaw", pcm="pcm")
    assert info.value.path == "streaming.providers.x.sampleRate"
    with pytest.raises(ConfigError, match="unsupported sample rate"):
        pc.get_sample_rate("pcm", (8000, 24000), mulaw="mulaw", pcm="pcm")
    assert ProviderConfig({}, "x").get_sample_rate("mulaw", (8000,), mulaw="mulaw",
                                                   pcm="pcm") == SAMPLE_RATE
    for bad in (math.nan, math.inf):
        with pytest.raises(ConfigError, match="must be a number"):
            ProviderConfig({"vadThreshold": bad}, "x").get_number("vadThreshold", 0.5)


def test_provider_base_and_helpers() -> None:
    provider = WsSttProvider("secret-key", "wss://h/p", max_queued_bytes=320)
    args = provider.connection("Token")
    assert args["headers"] == {"Authorization": "Token secret-key"}
    assert (args["url"], args["secret"], args["max_queued_bytes"]) == ("wss://h/p",
                                                                       "secret-key", 320)
    with pytest.raises(ValueError, match="api_key"):
        WsSttProvider("", "wss://h/p")
    check_encoding("pcm", 16000, ("mulaw", "pcm"), pcm="pcm")
    with pytest.raises(ValueError, match="use pcm"):
        check_encoding("mulaw", 16000, ("mulaw", "pcm"), pcm="pcm")
    with pytest.raises(ValueError, match="encoding must be one of"):
        check_encoding("opus", 8000, ("mulaw", "pcm"), pcm="pcm")
    assert joined(["one two", "three"], "four") == "one two three four"
    assert joined([], "") == ""
