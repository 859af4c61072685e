"""A dropped realtime stream: back within the grace on the same model session, else ended."""

from __future__ import annotations

import asyncio
from pathlib import Path

from rte_kit import BOUND, openai_cfg, rig

from voicecall.calls import CallState
from voicecall.testing.fake_openai_realtime import FakeOpenAIRealtime, Speech
from voicecall.testing.fake_twilio import CalleeScript

LONG = Speech("Our opening hours are nine to five on weekdays and ten to two on Saturdays.",
              ms=4000)


async def test_dropped_stream_comes_back_on_the_same_model_session(tmp_path: Path) -> None:
    async def run() -> None:
        async with FakeOpenAIRealtime(script=[LONG, Speech("Yes, Saturdays too.", ms=600)],
                                      transcripts=["What are your hours?",
                                                   "Are you open Saturdays?"],
                                      pace_s=0.05) as oa, \
                rig(tmp_path, callee=CalleeScript(replies=["What are your hours?"]),
                    inboundGreeting="Hello, clinic here.", **openai_cfg(oa)) as r:
            sid, fake_call = await r.inbound()
            # Drop the socket while the long answer is playing; Twilio goes on to the
            # <Redirect> after <Connect>, and the webhook connects a new stream.
            await r.fake.wait_for(lambda: len(fake_call.outbound_audio) > (400 + 800) * 8, 10)
            await r.fake.drop_stream(sid, next_verb=True)
            host = r.manager.carrier.rt  # type: ignore[attr-defined]
            await r.fake.wait_for(lambda: len(fake_call.streams) == 2 and host.attached(sid), 5)
            first, second = fake_call.streams
            assert first.end_reason == "dropped"
            assert first.url != second.url            # a fresh single-use token
            # One model session for the whole call: the conversation carried on.
            assert len(oa.connections) == 1
            # What the caller never heard of the interrupted answer is cut from the model.
            await r.fake.wait_for(lambda: oa.truncations and len(oa.replies) >= 2, 8)
            assert oa.truncations[0]["item_id"] == oa.replies[1]["item_id"]
            assert 600 <= oa.truncations[0]["audio_end_ms"] < 4000
            # The reattached stream carries the next turn both ways.
            await r.fake.speak(sid, "Are you open Saturdays?")
            call = r.manager.get(sid)
            assert call is not None
            await r.wait_call(call.call_id, lambda c: any(
                t.speaker == "bot" and "Saturdays too" in t.text for t in c.transcript))
            await r.fake.wait_for(lambda: any(
                f.get("event") == "media" for f in fake_call.streams[1].frames_in), 5)
            assert not r.manager.get(sid).terminal  # type: ignore[union-attr]
    await asyncio.wait_for(run(), BOUND)


async def test_dropped_stream_not_back_within_the_grace_ends_the_call(tmp_path: Path) -> None:
    async def run() -> None:
        async with FakeOpenAIRealtime(script=[Speech("Hi.", ms=300)]) as oa, \
                rig(tmp_path, inboundGreeting="Hello.", **openai_cfg(oa)) as r:
            sid, fake_call = await r.inbound()
            await r.fake.wait_for(lambda: oa.replies, 10)
            call = r.manager.get(sid)
            assert call is not None
            # The socket is lost and Twilio does not come back (no next verb run).
            await r.fake.drop_stream(sid)
            dropped_at = asyncio.get_running_loop().time()
            ended = await r.wait_call(call.call_id, lambda c: c.terminal, timeout=6)
            waited = asyncio.get_running_loop().time() - dropped_at
            assert ended.state is CallState.COMPLETED
            assert 1.8 <= waited < 4.0, waited
            # The model session was closed with the call.
            await r.fake.wait_for(lambda: all(c.closed for c in oa.connections), 5)
            assert fake_call.status == "completed"
    await asyncio.wait_for(run(), BOUND)
