"""Fully offline: a Twilio (fake) streamed call with the local recogniser and flite TTS.

The caller's words are synthesised with flite, sent down the media stream as a
phone would, recognised by the offline STT, answered by the offline agent and
spoken back with the offline TTS. No network service of any kind is involved.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from twe_kit import CALLEE, rig

from voicecall.speech.tts.local import wav_to_mulaw
from voicecall.testing.fake_twilio import CalleeScript

pytest.importorskip("pocketsphinx")
PHRASE = "what are your opening hours"
HINTS = [PHRASE, "yes that works for me", "please call me back tomorrow morning"]


def flite_mulaw(text: str) -> bytes:
    out = subprocess.run(["flite", "-voice", "slt", "-t", text, "-o", "/dev/stdout"],
                         capture_output=True, check=True, timeout=30).stdout
    return wav_to_mulaw(out) + b"\xff" * 8000  # a second of line silence after it


async def test_offline_call_transcribes_the_callers_phrase(tmp_path: Path) -> None:
    if shutil.which("flite") is None:
        pytest.skip("flite is not installed (apt-get install flite)")
    callee = CalleeScript(replies=[PHRASE], audio=flite_mulaw)

    async def run() -> None:
        async with rig(tmp_path, callee=callee,
                       streaming={"enabled": True, "provider": "local",
                                  "providers": {"local": {"hints": HINTS}}},
                       tts={"provider": "local", "providers": {"local": {"voice": "slt"}}}) as r:
            placed = await r.rpc("voicecall.initiate", {
                "to": CALLEE, "message": "Hello, this is the restaurant.",
                "mode": "conversation"})
            call = await r.wait_call(
                placed["callId"], lambda c: any(t.speaker == "user" for t in c.transcript),
                timeout=30)
            heard = next(t.text for t in call.transcript if t.speaker == "user")
            assert re.sub(r"[^a-z ]", "", heard.lower()).split() == PHRASE.split()
            # The offline agent answered and the answer went down the stream as audio.
            answered = await r.wait_call(placed["callId"], lambda c: sum(
                t.speaker == "bot" for t in c.transcript) >= 2, timeout=15)
            assert "9" in [t.text for t in answered.transcript if t.speaker == "bot"][1]
            assert len(r.fake.latest_call.outbound_audio) > 8000
    await asyncio.wait_for(run(), 60)
