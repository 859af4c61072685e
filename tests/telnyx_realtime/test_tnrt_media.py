"""Realtime media over Telnyx: barge-in (truncate / interrupted), DTMF, stream token binding."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import websockets
from tnrt_kit import BOUND, CALLER, OUR_NUMBER, google_cfg, media_ms, openai_cfg, rig

from voicecall.carriers.telnyx.media import encode_connected, encode_start
from voicecall.testing.fake_gemini_live import FakeGeminiLive
from voicecall.testing.fake_openai_realtime import FakeOpenAIRealtime, Speech
from voicecall.testing.fake_telnyx import CalleeScript

LONG = Speech("Here is a very long answer about our opening hours and holidays.", ms=4000)


def played_before_clear(frames: list[dict[str, Any]], dropped_bytes: int) -> int:
    """Audio of the interrupted item the callee actually heard (fake Telnyx's view).

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
            ccid, fake_call = await r.inbound()
            # The long answer starts; let about a second of it play, then talk over it.
            await r.fake.wait_for(lambda: len(fake_call.outbound_audio) > (400 + 1000) * 8, 10)
            await r.fake.speak(ccid, "wait, wait, stop")
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
            assert not fake_call.errors
    await asyncio.wait_for(run(), BOUND)


async def test_gemini_interrupted_clears_the_carrier_buffer(tmp_path: Path) -> None:
    async def run() -> None:
        async with FakeGeminiLive(script=[LONG], pace_s=0.08) as gm, \
                rig(tmp_path, callee=CalleeScript(replies=["What are your hours?"]),
                    **google_cfg(gm)) as r:
            ccid, fake_call = await r.inbound()
            await r.fake.wait_for(lambda: len(fake_call.outbound_audio) > (400 + 800) * 8, 10)
            await r.fake.speak(ccid, "hold on a second")
            await r.fake.wait_for(lambda: gm.interruptions and fake_call.clears, 5)
            await asyncio.sleep(0.5)
            # Nothing of the interrupted turn is sent after the clear but, at most, the
            # one frame PlaybackQueue was pacing when the clear came (it checks for a
            # clear before pacing a frame, not after).
            stream = fake_call.stream
            assert stream is not None
            clear = next(i for i, f in enumerate(stream.frames_in) if f.get("event") == "clear")
            assert media_ms(stream.frames_in[clear + 1:]) <= 20
            assert gm.replies[-1]["status"] == "interrupted"
            at_clear = media_ms(stream.frames_in[:clear + 1]) * 8
            assert at_clear < (400 + 4000) * 8 * 0.8
            call = r.manager.get(ccid)
            assert call is not None and not call.terminal
    await asyncio.wait_for(run(), BOUND)


async def test_dtmf_reaches_the_model_and_never_ends_the_call(tmp_path: Path) -> None:
    async def run() -> None:
        async with FakeOpenAIRealtime(script=[Speech("Got your code.", ms=400)]) as oa, \
                rig(tmp_path, **openai_cfg(oa)) as r:
            ccid, fake_call = await r.inbound()
            await r.fake.wait_for(lambda: oa.replies and fake_call.marks_echoed, 10)
            call_id = r.call_id(ccid)

            def keypad(keys: str) -> bool:
                return any(m.get("type") == "conversation.item.create"
                           and f"keypad: {keys}" in str(m.get("item"))
                           for m in oa.last.messages)

            # Each key arrives twice (a stream dtmf frame and a call.dtmf.received
            # webhook): recorded once, and handed to the model as one keypad turn.
            await r.fake.press(ccid, "42#")
            await r.wait_call(call_id, lambda c: "".join(c.dtmf) == "42#")
            await r.fake.wait_for(lambda: keypad("42#"), 5)
            await r.wait_call(call_id, lambda c: any(
                t.text == "Got your code." for t in c.transcript))
            # A keypress reported only by webhook gets there too; a redelivery of that
            # webhook (re-signed with a later timestamp) is not a second press.
            payload = {"call_control_id": ccid, "call_leg_id": fake_call.call_leg_id,
                       "call_session_id": fake_call.call_session_id,
                       "client_state": fake_call.client_state, "from": CALLER,
                       "to": OUR_NUMBER, "digit": "7"}
            event_id = str(uuid.uuid4())
            for ts in (int(time.time()) - 2, int(time.time())):
                resp = await r.fake.send_webhook("call.dtmf.received", payload,
                                                 event_id=event_id, timestamp=str(ts))
                assert resp.status_code == 200
            await r.fake.wait_for(lambda: keypad("7"), 5)
            await asyncio.sleep(0.2)
            call = r.manager.get(ccid)
            assert call is not None and call.dtmf == ("4", "2", "#", "7")
            # Our own DTMF goes out with Telnyx send_dtmf; the stream stays up.
            await r.rpc("voicecall.dtmf", {"callId": call_id, "digits": "123"})
            await r.fake.wait_for(lambda: fake_call.dtmf_received == ["123"], 5)
            await asyncio.sleep(0.3)
            assert not r.manager.get(ccid).terminal  # type: ignore[union-attr]
            assert fake_call.is_alive and len(fake_call.streams) == 1
            assert fake_call.stream is not None and fake_call.stream.end_reason is None
            assert len(oa.connections) == 1
    await asyncio.wait_for(run(), BOUND)


async def test_stream_tokens_are_single_use_bound_and_expire(tmp_path: Path) -> None:
    async def run() -> None:
        async with FakeOpenAIRealtime() as oa, \
                rig(tmp_path, maxConcurrentCalls=2, **openai_cfg(oa)) as r:
            base = f"ws://127.0.0.1:{r.webhook_port}/voice/stream/realtime/"
            # Unknown token: refused before the upgrade.
            with pytest.raises(websockets.InvalidStatus) as denied:
                await websockets.connect(base + "not-a-token")
            assert denied.value.response.status_code == 403
            ccid, fake_call = await r.inbound()
            other, other_call = await r.inbound()
            await r.fake.wait_for(lambda: len(oa.replies) >= 2, 10)
            # Single use: the live stream's URL does not open a second socket.
            assert fake_call.stream is not None
            with pytest.raises(websockets.InvalidStatus) as reused:
                await websockets.connect(r.local(fake_call.stream.url))
            assert reused.value.response.status_code == 403
            # Expired: a token not used within its lifetime is refused.
            rt = r.carrier.rt
            assert rt is not None
            ttl, rt.token_ttl_s = rt.token_ttl_s, 0.05
            try:
                stale = r.carrier.realtime_stream_url(r.carrier.issue_realtime_token(ccid))
            finally:
                rt.token_ttl_s = ttl
            await asyncio.sleep(0.1)
            with pytest.raises(websockets.InvalidStatus) as expired:
                await websockets.connect(r.local(stale))
            assert expired.value.response.status_code == 403
            # Bound: a valid token for one call, with a start frame naming another call.
            url = r.carrier.realtime_stream_url(r.carrier.issue_realtime_token(ccid))
            async with websockets.connect(r.local(url)) as ws:
                await ws.send(encode_connected())
                await ws.send(encode_start(str(uuid.uuid4()), other))
                with pytest.raises(websockets.ConnectionClosed):
                    while True:
                        await asyncio.wait_for(ws.recv(), 5)
                assert ws.close_code == 1008
            # Neither call was touched: one model session each, both streams up.
            assert len(oa.connections) == 2
            for fc in (fake_call, other_call):
                assert fc.is_alive and len(fc.streams) == 1 and fc.stream is not None
                assert fc.stream.end_reason is None
            assert not r.manager.get(ccid).terminal  # type: ignore[union-attr]
            assert not r.manager.get(other).terminal  # type: ignore[union-attr]
    await asyncio.wait_for(run(), BOUND)
