"""Realtime calls end to end: fake Twilio <-> gateway <-> fake OpenAI Realtime / Gemini Live."""

from __future__ import annotations

import asyncio
from pathlib import Path

from rte_kit import BOUND, google_cfg, openai_cfg, rig

from voicecall.calls import CallState
from voicecall.testing.fake_gemini_live import FakeGeminiLive
from voicecall.testing.fake_openai_realtime import FakeOpenAIRealtime, Speech
from voicecall.testing.fake_twilio import CalleeScript


async def test_openai_realtime_inbound_call(tmp_path: Path) -> None:
    async def run() -> None:
        async with FakeOpenAIRealtime(script=[Speech("We open at nine.", ms=800)],
                                      transcripts=["When do you open?"]) as oa, \
                rig(tmp_path, callee=CalleeScript(replies=["When do you open?"]),
                    inboundGreeting="Thanks for calling the clinic.", **openai_cfg(oa)) as r:
            sid, fake_call = await r.inbound()
            await r.fake.wait_for(lambda: len(oa.replies) >= 2, 10)
            call = r.manager.get(sid)
            assert call is not None
            call = await r.wait_call(call.call_id, lambda c: any(
                t.speaker == "bot" and "nine" in t.text for t in c.transcript))
            # Realtime TwiML: a path token, no <Say> greeting, no query string.
            doc = next(d for d in fake_call.twiml_executed if "<Connect>" in d)
            assert "/voice/stream/realtime/" in doc and "<Say" not in doc
            assert fake_call.stream is not None and "?" not in fake_call.stream.url
            assert not any("<Say" in d for d in fake_call.twiml_executed)
            # The model greeted (its own opening turn) and answered the caller.
            assert oa.replies[0]["text"] == "Thanks for calling the clinic."
            texts = [(t.speaker, t.text) for t in call.transcript]
            assert ("user", "When do you open?") in texts
            assert ("bot", "Thanks for calling the clinic.") in texts
            assert ("bot", "We open at nine.") in texts
            # The callee heard both model turns (400 ms greeting + 800 ms reply).
            await r.fake.wait_for(
                lambda: len(fake_call.outbound_audio) >= (400 + 800) * 8, 5)
            await r.fake.wait_for(lambda: fake_call.marks_echoed, 5)
            assert oa.last.config["audio"]["input"]["format"] == {"type": "audio/pcmu"}
            assert "initialMessage" not in call.metadata
    await asyncio.wait_for(run(), BOUND)


async def test_gemini_live_outbound_call(tmp_path: Path) -> None:
    async def run() -> None:
        async with FakeGeminiLive(script=[Speech("Sure, booked for Monday.", ms=700)],
                                  transcripts=["Book me for Monday"]) as gm, \
                rig(tmp_path, callee=CalleeScript(replies=["Book me for Monday"]),
                    **google_cfg(gm)) as r:
            placed = await r.rpc("voicecall.initiate", {
                "to": "+15550002222", "message": "Hi, this is the clinic calling.",
                "mode": "conversation"})
            call = await r.wait_call(placed["callId"], lambda c: any(
                t.speaker == "bot" and "Monday" in t.text for t in c.transcript), timeout=12)
            fake_call = r.fake.latest_call
            assert gm.replies[0]["text"] == "Hi, this is the clinic calling."
            assert ("user", "Book me for Monday") in [(t.speaker, t.text)
                                                     for t in call.transcript]
            await r.fake.wait_for(
                lambda: len(fake_call.outbound_audio) >= (400 + 700) * 8 * 0.95, 5)
            assert gm.audio_rates == {16000}
            assert not any("<Say" in d for d in fake_call.twiml_executed)
            assert call.state in (CallState.SPEAKING, CallState.LISTENING)
    await asyncio.wait_for(run(), BOUND)


async def test_operator_speak_and_continue_go_through_the_model(tmp_path: Path) -> None:
    async def run() -> None:
        async with FakeOpenAIRealtime(script=[], say_ms=500,
                                      transcripts=["Tuesday works for me."]) as oa, \
                rig(tmp_path, inboundGreeting="Hello, clinic here.", **openai_cfg(oa)) as r:
            sid, fake_call = await r.inbound()
            await r.fake.wait_for(lambda: oa.replies, 10)
            call = r.manager.get(sid)
            assert call is not None
            # speak: the model says the operator's words (no TwiML update on the stream).
            await r.rpc("voicecall.speak", {"callId": call.call_id,
                                            "message": "Your results are ready."})
            await r.fake.wait_for(lambda: len(oa.replies) >= 2, 5)
            assert oa.replies[1]["text"] == "Your results are ready."
            # continue: the model asks, the caller's next transcript is the answer.
            asked = asyncio.create_task(r.rpc("voicecall.continue", {
                "callId": call.call_id, "message": "Which day suits you?"}))
            await r.fake.wait_for(lambda: len(oa.replies) >= 3, 5)
            assert oa.replies[2]["text"] == "Which day suits you?"
            await r.fake.speak(sid, "Tuesday works for me.")
            result = await asyncio.wait_for(asked, 10)
            assert result["transcript"] == "Tuesday works for me."
            assert len([d for d in fake_call.twiml_executed if "<Connect>" in d]) == 1
            assert not any("<Say" in d for d in fake_call.twiml_executed)
    await asyncio.wait_for(run(), BOUND)
