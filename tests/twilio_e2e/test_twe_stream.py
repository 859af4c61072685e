"""Twilio Media Streams end to end: paced playback, marks, barge-in, grace, DTMF, caps."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import websockets
from twe_kit import CALLEE, rig

from voicecall.calls import CallState
from voicecall.carriers.twilio import media
from voicecall.speech import registry
from voicecall.testing import fake_speech
from voicecall.testing.fake_twilio import CalleeScript

BOUND = 25.0
STREAMING = {"streaming": {"enabled": True, "provider": "fake"}, "tts": {"provider": "fake"}}


@pytest.fixture
def speech() -> Iterator[tuple[fake_speech.ScriptedSTT, fake_speech.ToneTTS]]:
    stt = fake_speech.ScriptedSTT(["Yes, go ahead.", "What time do you open?", "Bye now."])
    tts = fake_speech.ToneTTS(word_ms=60)
    fake_speech.register(stt, tts)
    yield stt, tts
    registry.unregister("fake")


async def test_conversation_over_a_media_stream(tmp_path: Path, speech: tuple[
        fake_speech.ScriptedSTT, fake_speech.ToneTTS]) -> None:
    stt, tts = speech
    callee = CalleeScript(replies=["a", "b", "c"], hangup_when_done=True)

    async def run() -> None:
        async with rig(tmp_path, callee=callee, **STREAMING) as r:
            placed = await r.rpc("voicecall.initiate", {
                "to": CALLEE, "message": "Hello, this is the clinic.",
                "mode": "conversation"})
            call = await r.wait_call(placed["callId"], lambda c: c.terminal, timeout=15)
            fake_call = r.fake.latest_call
            # <Connect><Stream> with the token as a <Parameter>, never a query string.
            connect_doc = next(d for d in fake_call.twiml_executed if "<Connect>" in d)
            assert '<Parameter name="token"' in connect_doc and "?token" not in connect_doc
            stream = fake_call.streams[0]
            assert stream.custom_parameters["token"]
            assert tts.spoken[0] == "Hello, this is the clinic."
            assert len(fake_call.outbound_audio) > 0 and len(fake_call.outbound_audio) % 160 == 0
            assert fake_call.marks_echoed  # each playback ended with a mark Twilio echoed
            users = [t.text for t in call.transcript if t.speaker == "user"]
            assert users[:2] == ["Yes, go ahead.", "What time do you open?"]
            # Speech went over the stream only: the only REST updates are hangups.
            updates = [q for q in fake_call.requests if q.method == "POST"
                       and q.path.endswith(f"/Calls/{fake_call.sid}.json")]
            assert all("Twiml" not in u.form for u in updates)
            assert call.state in (CallState.HANGUP_BOT, CallState.COMPLETED)
    await asyncio.wait_for(run(), BOUND)


async def test_barge_in_clears_playback_every_time(tmp_path: Path, speech: tuple[
        fake_speech.ScriptedSTT, fake_speech.ToneTTS]) -> None:
    stt, tts = speech
    callee = CalleeScript(replies=[])

    async def run() -> None:
        async with rig(tmp_path, callee=callee, inboundPolicy="open", **STREAMING) as r:
            sid = await r.fake.place_inbound("+15550001111", "+15550009999",
                                             "https://voice.example.com/voice/webhook")
            fake_call = r.fake.calls[sid]
            await r.fake.wait_for(lambda: fake_call.streams, 5)
            call = r.manager.get(sid)
            assert call is not None
            await r.wait_call(call.call_id, lambda c: c.state is CallState.LISTENING)
            for round_no in (1, 2):
                long_text = " ".join(["word"] * 60)  # ~6 s of audio
                speaking = asyncio.create_task(r.rpc("voicecall.speak", {
                    "callId": call.call_id, "message": long_text}))
                await r.fake.wait_for(lambda n=round_no: len(tts.spoken) >= n + 1)
                await asyncio.sleep(0.3)
                await r.fake.speak(sid, "interrupting you")
                await r.fake.wait_for(lambda n=round_no: len(fake_call.clears) >= n, 5)
                result = await asyncio.wait_for(speaking, 5)
                assert result == {"success": True}  # skipped, not failed
            heard_ms = len(fake_call.outbound_audio) / 8
            assert heard_ms < 2 * 6000  # both long messages were cut short
    await asyncio.wait_for(run(), BOUND)


async def test_stream_disconnect_grace(tmp_path: Path, speech: tuple[
        fake_speech.ScriptedSTT, fake_speech.ToneTTS]) -> None:
    async def run() -> None:
        async with rig(tmp_path, callee=CalleeScript(replies=[]), inboundPolicy="open",
                       **STREAMING) as r:
            sid = await r.fake.place_inbound("+15550001111", "+15550009999",
                                             "https://voice.example.com/voice/webhook")
            fake_call = r.fake.calls[sid]
            await r.fake.wait_for(lambda: fake_call.streams, 5)
            call = r.manager.get(sid)
            assert call is not None
            await r.wait_call(call.call_id, lambda c: c.state is CallState.LISTENING)
            # Drop and come back inside the 2 s window: the call goes on.
            await r.fake.drop_stream(sid)
            await asyncio.sleep(0.5)
            await r.fake.reconnect_stream(sid)
            await asyncio.sleep(2.0)
            live = r.manager.get(sid)
            assert live is not None and not live.terminal
            # Drop for good: ended after the grace period.
            await r.fake.drop_stream(sid)
            ended = await r.wait_call(call.call_id, lambda c: c.terminal, timeout=5)
            assert ended.state is CallState.COMPLETED
            assert (ended.ended_at or 0) - ended.started_at >= 2.0
    await asyncio.wait_for(run(), BOUND)


async def test_dtmf_both_ways_over_a_stream(tmp_path: Path, speech: tuple[
        fake_speech.ScriptedSTT, fake_speech.ToneTTS]) -> None:
    async def run() -> None:
        async with rig(tmp_path, callee=CalleeScript(replies=[]), inboundPolicy="open",
                       **STREAMING) as r:
            sid = await r.fake.place_inbound("+15550001111", "+15550009999",
                                             "https://voice.example.com/voice/webhook")
            fake_call = r.fake.calls[sid]
            await r.fake.wait_for(lambda: fake_call.streams, 5)
            call = r.manager.get(sid)
            assert call is not None
            await r.wait_call(call.call_id, lambda c: c.state is CallState.LISTENING)
            await r.fake.press(sid, "42#")
            pressed = await r.wait_call(call.call_id, lambda c: len(c.dtmf) >= 3)
            assert "".join(pressed.dtmf) == "42#"
            before = len(fake_call.outbound_audio)
            assert await r.rpc("voicecall.dtmf", {"callId": call.call_id,
                                                  "digits": "1w2"}) == {"success": True}
            # Tones went down the stream; the live TwiML was never replaced.
            assert len(fake_call.outbound_audio) - before >= 8 * (100 + 500 + 100)
            assert not any("<Play" in d for d in fake_call.twiml_executed)
            assert fake_call.streams[-1].stream_sid == fake_call.streams[0].stream_sid
    await asyncio.wait_for(run(), BOUND)


async def test_no_twiml_fallback_while_a_stream_is_active(tmp_path: Path) -> None:
    stt = fake_speech.ScriptedSTT([])
    registry.register_stt("fake-stt-only", lambda cfg: stt)
    try:
        async def run() -> None:
            async with rig(tmp_path, callee=CalleeScript(replies=[]), inboundPolicy="open",
                           streaming={"enabled": True, "provider": "fake-stt-only"},
                           tts={"provider": "missing"}) as r:
                sid = await r.fake.place_inbound("+15550001111", "+15550009999",
                                                 "https://voice.example.com/voice/webhook")
                fake_call = r.fake.calls[sid]
                await r.fake.wait_for(lambda: fake_call.streams, 5)
                call = r.manager.get(sid)
                assert call is not None
                await asyncio.sleep(0.3)
                # The greeting could not play and did not fall back to <Say>.
                assert not any("<Say" in d for d in fake_call.twiml_executed)
                assert call.metadata.get("initialMessage")  # kept for a retry
        await asyncio.wait_for(run(), BOUND)
    finally:
        registry.unregister("fake-stt-only")


async def test_stream_connection_caps(tmp_path: Path, speech: tuple[
        fake_speech.ScriptedSTT, fake_speech.ToneTTS]) -> None:
    caps = {"streaming": {"enabled": True, "provider": "fake", "maxConnections": 3,
                          "maxPendingConnections": 2, "maxPendingConnectionsPerIp": 1,
                          "preStartTimeoutMs": 300},
            "tts": {"provider": "fake"}}

    async def run() -> None:
        async with rig(tmp_path, **caps) as r:
            url = f"ws://127.0.0.1:{r.webhook_port}/voice/stream"
            first = await websockets.connect(url)
            # Second pending socket from the same IP: closed 1013.
            second = await websockets.connect(url)
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(second.recv(), 2)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
            # The first never sends start: closed 1008 after preStartTimeoutMs.
            with pytest.raises(websockets.ConnectionClosed) as timed_out:
                await asyncio.wait_for(first.recv(), 2)
            assert timed_out.value.rcvd is not None and timed_out.value.rcvd.code == 1008
            # A start for an unknown call with a made-up token: closed 1008.
            third = await websockets.connect(url)
            await third.send(media.encode_connected())
            await third.send(media.encode_start("MZ" + "0" * 32, "CA" + "9" * 32,
                                                "AC" + "1" * 32,
                                                custom_parameters={"token": "nope"}))
            with pytest.raises(websockets.ConnectionClosed) as refused:
                await asyncio.wait_for(third.recv(), 2)
            assert refused.value.rcvd is not None and refused.value.rcvd.code == 1008
            await first.close()
            await second.close()
            await third.close()
    await asyncio.wait_for(run(), BOUND)


async def test_stream_max_connections_refuses_the_upgrade(tmp_path: Path, speech: tuple[
        fake_speech.ScriptedSTT, fake_speech.ToneTTS]) -> None:
    caps = {"streaming": {"enabled": True, "provider": "fake", "maxConnections": 2,
                          "maxPendingConnectionsPerIp": 4, "preStartTimeoutMs": 5000},
            "tts": {"provider": "fake"}}

    async def run() -> None:
        async with rig(tmp_path, **caps) as r:
            url = f"ws://127.0.0.1:{r.webhook_port}/voice/stream"
            held = [await websockets.connect(url) for _ in range(2)]
            with pytest.raises(websockets.InvalidStatus) as denied:
                await websockets.connect(url)
            assert denied.value.response.status_code == 503
            await held[0].close()
            await asyncio.sleep(0.1)
            again = await websockets.connect(url)  # a slot freed up
            await again.close()
            await held[1].close()
    await asyncio.wait_for(run(), BOUND)


async def test_outbound_greeting_is_not_cut_but_inbound_greeting_is(tmp_path: Path, speech: tuple[
        fake_speech.ScriptedSTT, fake_speech.ToneTTS]) -> None:
    stt, tts = speech
    greeting = " ".join(["hello"] * 25)  # ~2.5 s at 60 ms + 40 ms per word

    async def run() -> None:
        # Outbound conversation: the callee talks over the greeting; it keeps sounding.
        async with rig(tmp_path / "out", callee=CalleeScript(replies=[]), **STREAMING) as r:
            placed = await r.rpc("voicecall.initiate", {
                "to": CALLEE, "message": greeting, "mode": "conversation"})
            fake_call = r.fake.latest_call
            await r.fake.wait_for(lambda: len(fake_call.outbound_audio) > 1600, 5)
            await r.fake.speak(fake_call.sid, "hello? hello?")
            await r.fake.wait_for(lambda: fake_call.marks_echoed, 8)  # greeting heard out
            assert placed["callId"]
            assert fake_call.clears == []
            assert len(fake_call.outbound_audio) >= 25 * 100 * 8 * 0.95  # all of it played
        # Inbound: the greeting is not protected; caller speech clears it.
        async with rig(tmp_path / "in", callee=CalleeScript(replies=[]), inboundPolicy="open",
                       inboundGreeting=greeting, **STREAMING) as r:
            sid = await r.fake.place_inbound("+15550001111", "+15550009999",
                                             "https://voice.example.com/voice/webhook")
            fake_call = r.fake.calls[sid]
            await r.fake.wait_for(lambda: len(fake_call.outbound_audio) > 1600, 5)
            await r.fake.speak(sid, "hello? hello?")
            await r.fake.wait_for(lambda: fake_call.clears, 5)
    (tmp_path / "out").mkdir()
    (tmp_path / "in").mkdir()
    await asyncio.wait_for(run(), BOUND)


async def test_greeting_waits_for_transcription_and_early_media_is_queued(tmp_path: Path) -> None:
    stt = fake_speech.ScriptedSTT([], ready_delay_s=0.6)
    tts = fake_speech.ToneTTS(word_ms=40)
    fake_speech.register(stt, tts, name="slow")
    try:
        async def run() -> None:
            async with rig(tmp_path, callee=CalleeScript(replies=[]), inboundPolicy="open",
                           streaming={"enabled": True, "provider": "slow"},
                           tts={"provider": "slow"}) as r:
                sid = await r.fake.place_inbound("+15550001111", "+15550009999",
                                                 "https://voice.example.com/voice/webhook")
                fake_call = r.fake.calls[sid]
                stream = await r.fake.wait_for_stream(sid)
                await asyncio.sleep(0.3)
                # Transcription is still connecting: no greeting yet, caller audio queued.
                assert len(fake_call.outbound_audio) == 0
                assert stt.sessions and stt.sessions[0].audio_bytes > 0
                await r.fake.wait_for(lambda: len(fake_call.outbound_audio) > 0, 3)
                assert tts.spoken == ["Hello! How can I help you today?"]
                assert stream.stream_sid
        await asyncio.wait_for(run(), BOUND)
    finally:
        registry.unregister("slow")


async def test_unknown_stt_provider_skips_media_without_failing(tmp_path: Path) -> None:
    tts = fake_speech.ToneTTS(word_ms=40)
    registry.register_tts("tone2", lambda cfg: tts)
    try:
        async def run() -> None:
            async with rig(tmp_path, callee=CalleeScript(replies=[]), inboundPolicy="open",
                           streaming={"enabled": True, "provider": "no-such-stt"},
                           tts={"provider": "tone2"}) as r:
                sid = await r.fake.place_inbound("+15550001111", "+15550009999",
                                                 "https://voice.example.com/voice/webhook")
                fake_call = r.fake.calls[sid]
                await r.fake.wait_for_stream(sid)
                # The gateway is up, the call is connected and greeted; media is just
                # not transcribed.
                await r.fake.wait_for(lambda: len(fake_call.outbound_audio) > 0, 3)
                assert (await r.rpc("voicecall.list"))["calls"]
        await asyncio.wait_for(run(), BOUND)
    finally:
        registry.unregister("tone2")
