"""A Telnyx (fake) streamed conversation with real STT and TTS providers through their fakes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
from txe_kit import CALLEE, rig

from voicecall.audio.g711 import mulaw_to_pcm16
from voicecall.testing.fake_openai_tts import FakeOpenAITTS
from voicecall.testing.fake_stt import FakeDeepgram
from voicecall.testing.fake_telnyx import CalleeScript

BOUND = 30.0
TRANSCRIPTS = ["Thanks, goodbye."]


async def test_streamed_call_with_deepgram_stt_and_openai_tts(tmp_path: Path) -> None:
    callee = CalleeScript(replies=["bye"], hangup_when_done=True)

    async def run() -> None:
        async with FakeDeepgram(TRANSCRIPTS) as stt, FakeOpenAITTS() as tts, rig(
                tmp_path, callee=callee,
                streaming={"enabled": True, "provider": "deepgram",
                           "providers": {"deepgram": {"apiKey": stt.api_key,
                                                      "endpoint": stt.url}}},
                tts={"provider": "openai", "providers": {"openai": {
                    "apiKey": tts.api_key, "baseUrl": tts.base_url}}}) as r:
            placed = await r.rpc("voicecall.initiate", {
                "to": CALLEE, "message": "Your appointment is confirmed.",
                "mode": "conversation"})
            call = await r.wait_call(placed["callId"], lambda c: c.terminal, timeout=20)
            users = [t.text for t in call.transcript if t.speaker == "user"]
            assert users == TRANSCRIPTS, call.transcript
            turns = [e for e in r.events() if e["type"] == "turn"]
            assert turns and all(t["breakdown"].get("firstFrameMs") is not None for t in turns)
            audio = bytes(r.fake.latest_call.outbound_audio)
            assert len(audio) >= 8000  # at least a second of speech went down the stream
            pcm = mulaw_to_pcm16(audio).astype(np.float32)
            assert float(np.sqrt(np.mean(pcm * pcm))) > 300  # not silence
            assert "speak" not in r.fake.latest_call.actions
    await asyncio.wait_for(run(), BOUND)
