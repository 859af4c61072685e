"""Realtime media end to end: barge-in (truncate / interrupted), goAway, DTMF, tokens, fallback."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
import websockets
from rte_kit import BOUND, google_cfg, media_ms, openai_cfg, rig

from voicecall.calls import CallState
from voicecall.testing.fake_gemini_live import FakeGeminiLive
from voicecall.testing.fake_openai_realtime import FakeOpenAIRealtime, Speech
from voicecall.testing.fake_twilio import CalleeScript

LONG = Speech("Here is a very long answer about our opening hours and holidays.", ms=4000)


def played_before_clear(frames: list[dict[str, Any]], dropped_bytes: int) -> int:
    """Audio of the interrupted item the callee actually heard (fake Twilio's view).

    The item's media frames are those after the previous item's end mark (``tts-N``)
    and before the ``clear``; what the clear dropped from the buffer was never heard.
    """
    clear = next(i for i, f in enumerate(frames) if f.get("event") == "clear")
    start = max(i for i, f in enumerate(frames[:clear])
                if f.get("event") == "mark" and f["mark"]["name"].startswith("tts-"))
    return media_ms(frames[start + 1:clear]) - dropped_bytes // 8


async def test_openai_barge_in_truncates_at_the_played_milliseconds(tmp_path: Path) -> None:
    async def run() -> None:
        async with FakeOpenAIRealtime(script=[LONG], pace_s=0.05) as oa, \
                rig(tmp_path, callee=CalleeScript(replies=["What are your hours?"]),
                    **openai_cfg(oa)) as r:
            sid, fake_call = await r.inbound()
            # The long answer starts; let about a second of it play, then talk over it.
            await r.fake.wait_for(lambda: len(fake_call.outbound_audio) > (400 + 1000) * 8, 10)
            await r.fake.speak(sid, "wait, wait, stop")
            await r.fake.wait_for(lambda: oa.truncations and fake_call.clears, 5)
            trunc = oa.truncations[0]
            assert trunc["accepted"] is True
            assert trunc["item_id"] == oa.replies[1]["item_id"]
            stream = fake_call.stream
            assert stream is not None
            heard = played_before_clear(stream.frames_in, fake_call.clears[0].dropped_bytes)
            # What we told the model it said == what the callee heard (within 1.5 frames).
            assert abs(trunc["audio_end_ms"] - heard) <= 30, (trunc, heard)
            assert 800 <= heard < 4000
            assert oa.interruptions == 1
    await asyncio.wait_for(run(), BOUND)


async def test_gemini_interrupted_clears_the_carrier_buffer(tmp_path: Path) -> None:
    async def run() -> None:
        async with FakeGeminiLive(script=[LONG], pace_s=0.08) as gm, \
                rig(tmp_path, callee=CalleeScript(replies=["What are your hours?"]),
                    **google_cfg(gm)) as r:
            sid, fake_call = await r.inbound()
            await r.fake.wait_for(lambda: len(fake_call.outbound_audio) > (400 + 800) * 8, 10)
            await r.fake.speak(sid, "hold on a second")
            await r.fake.wait_for(lambda: gm.interruptions and fake_call.clears, 5)
            await asyncio.sleep(0.5)
            # Nothing of the interrupted turn is played after the clear.
            assert len(fake_call.outbound_audio) < (400 + 4000) * 8 * 0.8
            call = r.manager.get(sid)
            assert call is not None and not call.terminal
    await asyncio.wait_for(run(), BOUND)


async def test_gemini_go_away_resumes_and_the_call_continues(tmp_path: Path) -> None:
    async def run() -> None:
        async with FakeGeminiLive(script=[Speech("Still here.", ms=500)],
                                  go_away_grace_s=0.2) as gm, \
                rig(tmp_path, **google_cfg(gm)) as r:
            sid, fake_call = await r.inbound()
            await r.fake.wait_for(lambda: gm.replies and fake_call.marks_echoed, 10)
            gm.send_go_away()
            await r.fake.wait_for(lambda: gm.resumed_handles, 5)
            assert len(gm.connections) == 2
            await r.fake.speak(sid, "are you still there")
            call = r.manager.get(sid)
            assert call is not None
            call = await r.wait_call(call.call_id, lambda c: any(
                t.text == "Still here." for t in c.transcript), timeout=8)
            assert not call.terminal
    await asyncio.wait_for(run(), BOUND)


async def test_dtmf_mid_call_reaches_the_model_and_does_not_end_the_call(
        tmp_path: Path) -> None:
    async def run() -> None:
        async with FakeOpenAIRealtime(script=[Speech("Got your code.", ms=400)]) as oa, \
                rig(tmp_path, **openai_cfg(oa)) as r:
            sid, fake_call = await r.inbound()
            await r.fake.wait_for(lambda: oa.replies and fake_call.marks_echoed, 10)
            await r.fake.press(sid, "42#")
            call = r.manager.get(sid)
            assert call is not None
            call = await r.wait_call(call.call_id, lambda c: "".join(c.dtmf) == "42#")
            await r.fake.wait_for(lambda: any(
                m.get("type") == "conversation.item.create"
                and "42#" in str(m.get("item")) for m in oa.last.messages), 5)
            call = await r.wait_call(call.call_id, lambda c: any(
                t.text == "Got your code." for t in c.transcript))
            await asyncio.sleep(0.3)
            assert not r.manager.get(sid).terminal  # type: ignore[union-attr]
            assert not fake_call.is_terminal
    await asyncio.wait_for(run(), BOUND)


async def test_realtime_stream_tokens_are_checked_before_the_upgrade(tmp_path: Path) -> None:
    async def run() -> None:
        async with FakeOpenAIRealtime() as oa, rig(tmp_path, **openai_cfg(oa)) as r:
            url = f"ws://127.0.0.1:{r.webhook_port}/voice/stream/realtime/not-a-token"
            with pytest.raises(websockets.InvalidStatus) as denied:
                await websockets.connect(url)
            assert denied.value.response.status_code == 403
            sid, fake_call = await r.inbound()
            await r.fake.wait_for(lambda: oa.replies, 10)
            # The token was single-use: dialling the same URL again is refused.
            stream = fake_call.stream
            assert stream is not None
            path = stream.url.split("voice.example.com", 1)[1]
            with pytest.raises(websockets.InvalidStatus) as reused:
                await websockets.connect(f"ws://127.0.0.1:{r.webhook_port}{path}")
            assert reused.value.response.status_code == 403
            assert sid
    await asyncio.wait_for(run(), BOUND)


async def test_unknown_realtime_provider_warns_and_the_gateway_stays_up(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def run() -> None:
        caplog.set_level(logging.WARNING, logger="voicecall.runtime")
        async with rig(tmp_path, realtime={"enabled": True, "provider": "nope"}) as r:
            assert any("nope" in rec.getMessage() and "skipped" in rec.getMessage()
                       for rec in caplog.records)
            sid, fake_call = await r.inbound()
            await r.fake.wait_for(lambda: fake_call.twiml_executed, 5)
            # Realtime media skipped: the call is answered the classic way.
            assert not any("/stream/realtime/" in d for d in fake_call.twiml_executed)
            assert (await r.rpc("voicecall.list"))["calls"]
    await asyncio.wait_for(run(), BOUND)


async def test_provider_session_end_ends_the_call(tmp_path: Path) -> None:
    async def run() -> None:
        async with FakeOpenAIRealtime() as oa, rig(tmp_path, **openai_cfg(oa)) as r:
            sid, fake_call = await r.inbound()
            await r.fake.wait_for(lambda: oa.replies and fake_call.marks_echoed, 10)
            oa.expire()          # session_expired, then the server closes the socket
            call = r.manager.get(sid)
            assert call is not None
            ended = await r.wait_call(call.call_id, lambda c: c.terminal, timeout=8)
            assert ended.state is CallState.ERROR
            assert "session_expired" in str(ended.metadata.get("endNote"))
            await r.fake.wait_for(lambda: fake_call.is_terminal, 5)
    await asyncio.wait_for(run(), BOUND)
