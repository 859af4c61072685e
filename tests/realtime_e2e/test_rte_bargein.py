"""The local barge-in detector: the caller's voice cuts the model off before the provider's VAD."""

from __future__ import annotations

import asyncio
import subprocess
import tempfile
import wave
from pathlib import Path

import numpy as np
from rte_kit import BOUND, openai_cfg, rig

from voicecall.audio.g711 import mulaw_to_pcm16, pcm16_to_mulaw, rms
from voicecall.audio.resample import resample_pcm16
from voicecall.config.sections import BargeInConfig
from voicecall.gateway.realtime.bargein import LocalBargeIn
from voicecall.testing.fake_openai_realtime import FakeOpenAIRealtime, Speech
from voicecall.testing.fake_twilio import CalleeScript
from voicecall.testing.fake_twilio._audio import tone_burst

LONG = Speech("Here is a very long answer about our opening hours and holidays.", ms=4000)


def _frames(audio: bytes) -> list[bytes]:
    return [audio[i:i + 160] for i in range(0, len(audio) - 159, 160)]


def _first_trigger(detector: LocalBargeIn, audio: bytes) -> int | None:
    for i, frame in enumerate(_frames(audio)):
        if detector.feed(frame):
            return i
    return None


def _flite(text: str) -> bytes:
    """Real synthetic speech (flite, which ``make`` installs) as 8 kHz mu-law."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "speech.wav"
        subprocess.run(["flite", "-t", text, "-o", str(out)], check=True)
        with wave.open(str(out)) as wav:
            rate = wav.getframerate()
            pcm = np.frombuffer(wav.readframes(wav.getnframes()), np.int16)
    return pcm16_to_mulaw(resample_pcm16(pcm, rate, 8000))


def test_real_speech_triggers_within_a_syllable() -> None:
    speech = _flite("Sorry, wait, I have a question about my bill.")
    start = next(i for i, f in enumerate(_frames(speech)) if rms(f) >= 0.02)
    fired = _first_trigger(LocalBargeIn(BargeInConfig()), speech)
    assert fired is not None and (fired - start) * 20 <= 200


def test_voice_triggers_after_min_speech_ms_but_echo_and_noise_do_not() -> None:
    voice = tone_burst("wait wait I have a question", tail_ms=0)
    # 80 ms of speech in a row: the 4th speech frame triggers, once.
    detector = LocalBargeIn(BargeInConfig())
    assert _first_trigger(detector, voice) == 3
    assert not any(detector.feed(f) for f in _frames(voice)[4:])
    # The same voice 26 dB down (line echo of our own audio) never triggers.
    quiet = pcm16_to_mulaw((mulaw_to_pcm16(voice) * 0.05).astype(np.int16))
    assert _first_trigger(LocalBargeIn(BargeInConfig()), quiet) is None
    # Loud hiss: WebRTC VAD alone would call it speech; its flat spectrum does not pass.
    noise = np.random.default_rng(3).normal(0, 4000, 8000 * 2).astype(np.int16)
    assert _first_trigger(LocalBargeIn(BargeInConfig()), pcm16_to_mulaw(noise)) is None
    # A short click-like blip (40 ms) is below minSpeechMs.
    blip = voice[:320] + bytes([0xFF]) * 1600
    assert _first_trigger(LocalBargeIn(BargeInConfig()), blip) is None


async def test_local_detector_clears_before_the_provider_hears_the_caller(
        tmp_path: Path) -> None:
    async def run() -> None:
        # The provider's VAD needs 400 ms of speech: the local detector (80 ms) wins.
        async with FakeOpenAIRealtime(script=[LONG], pace_s=0.05,
                                      min_speech_ms=400) as oa, \
                rig(tmp_path, callee=CalleeScript(replies=["What are your hours?"]),
                    **openai_cfg(oa)) as r:
            sid, fake_call = await r.inbound()
            await r.fake.wait_for(lambda: len(fake_call.outbound_audio) > (400 + 1000) * 8, 10)
            bridge = r.manager.carrier.rt.bridge(sid)  # type: ignore[attr-defined]
            assert bridge is not None and bridge.local_barge_ins == 0
            await r.fake.speak(sid, "wait, wait, stop")
            await r.fake.wait_for(lambda: oa.truncations and fake_call.clears, 5)
            # The local detector cut the model off (had the provider's VAD been first,
            # nothing would have been sounding for the detector to stop).
            assert bridge.local_barge_ins == 1
            assert oa.truncations[0]["accepted"] is True
            assert oa.truncations[0]["audio_end_ms"] == bridge.truncations[0].played_ms
            # One barge-in, not two: the provider's later VAD event found nothing playing.
            conn = oa.connections[0]
            await r.fake.wait_for(lambda: any(
                e.get("type") == "input_audio_buffer.speech_started" for e in conn.sent), 5)
            await asyncio.sleep(0.3)
            assert bridge.barge_ins == 1 and len(fake_call.clears) == 1
            assert len(oa.truncations) == 1
    await asyncio.wait_for(run(), BOUND)


async def test_outbound_greeting_is_not_cut_by_the_local_detector(tmp_path: Path) -> None:
    async def run() -> None:
        async with FakeOpenAIRealtime(script=[], say_ms=2000, min_speech_ms=5000) as oa, \
                rig(tmp_path, callee=CalleeScript(replies=[]), **openai_cfg(oa)) as r:
            placed = await r.rpc("voicecall.initiate", {
                "to": "+15550002222", "message": "Hello, this is the clinic with news.",
                "mode": "conversation"})
            fake_call = r.fake.latest_call
            await r.fake.wait_for(lambda: len(fake_call.outbound_audio) > 400 * 8, 10)
            await r.fake.speak(fake_call.sid, "hello? hello? who is this?")
            await r.fake.wait_for(lambda: oa.replies, 5)
            bridge = r.manager.carrier.rt.bridge(fake_call.sid)  # type: ignore[attr-defined]
            assert bridge is not None
            assert bridge.local_barge_ins == 0 and not fake_call.clears
            assert oa.replies[0]["audio_ms"] == 2000 and placed["callId"]
    await asyncio.wait_for(run(), BOUND)


async def test_local_detector_can_be_turned_off(tmp_path: Path) -> None:
    async def run() -> None:
        async with FakeOpenAIRealtime(script=[LONG], pace_s=0.05) as oa, \
                rig(tmp_path, callee=CalleeScript(replies=["What are your hours?"]),
                    **openai_cfg(oa, bargeIn={"enabled": False})) as r:
            sid, fake_call = await r.inbound()
            await r.fake.wait_for(lambda: len(fake_call.outbound_audio) > (400 + 1000) * 8, 10)
            await r.fake.speak(sid, "wait, wait, stop")
            await r.fake.wait_for(lambda: oa.truncations and fake_call.clears, 5)
            bridge = r.manager.carrier.rt.bridge(sid)  # type: ignore[attr-defined]
            assert bridge.local_barge_ins == 0 and bridge.barge_ins == 1   # the provider's VAD
    await asyncio.wait_for(run(), BOUND)
