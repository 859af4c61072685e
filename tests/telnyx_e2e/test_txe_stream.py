"""Telnyx media streaming end to end: paced playback, marks, barge-in, grace, DTMF, tokens."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import websockets
from txe_kit import CALLEE, CALLER, OUR_NUMBER, rig

from voicecall.calls import CallState
from voicecall.carriers.telnyx import media
from voicecall.speech import registry
from voicecall.testing import fake_speech
from voicecall.testing.fake_telnyx import CalleeScript

BOUND = 25.0
STREAMING = {"streaming": {"enabled": True, "provider": "fake"}, "tts": {"provider": "fake"}}


@pytest.fixture
def speech() -> Iterator[tuple[fake_speech.ScriptedSTT, fake_speech.ToneTTS]]:
    stt = fake_speech.ScriptedSTT(["Yes, go ahead.", "What time do you open?", "Bye now."])
    tts = fake_speech.ToneTTS(word_ms=30)  # 70 ms a word with the gap
    fake_speech.register(stt, tts)
    yield stt, tts
    registry.unregister("fake")


async def test_conversation_over_a_media_stream(tmp_path: Path, speech: tuple[
        fake_speech.ScriptedSTT, fake_speech.ToneTTS]) -> None:
    stt, tts = speech
    callee = CalleeScript(replies=["a", "b"], hangup_after_turns=2)

    async def run() -> None:
        async with rig(tmp_path, callee=callee, **STREAMING) as r:
            placed = await r.rpc("voicecall.initiate", {
                "to": CALLEE, "message": "Hello, this is the clinic.",
                "mode": "conversation"})
            call = await r.wait_call(placed["callId"], lambda c: c.terminal, timeout=15)
            fake_call = r.fake.latest_call
            dial = fake_call.dial_body
            # Bidirectional PCMU 8 kHz, requested on the dial itself.
            assert (dial["stream_bidirectional_mode"], dial["stream_bidirectional_codec"],
                    dial["stream_codec"], dial["stream_bidirectional_sampling_rate"],
                    dial["stream_track"]) == ("rtp", "PCMU", "PCMU", 8000, "inbound_track")
            url = urlsplit(dial["stream_url"])
            assert url.scheme == "wss" and url.path == "/voice/stream"
            token = parse_qs(url.query)["token"][0]
            assert dial["stream_auth_token"] == token
            assert parse_qs(url.query)["callId"] == [placed["callId"]]
            stream = fake_call.streams[0]
            assert stream.connected and stream.frames_out[0][media.AUTH_TOKEN_FIELD] == token
            assert tts.spoken[0] == "Hello, this is the clinic."
            assert len(fake_call.outbound_audio) > 0 and len(fake_call.outbound_audio) % 160 == 0
            assert fake_call.marks_echoed
            users = [t.text for t in call.transcript if t.speaker == "user"]
            assert users[:2] == ["Yes, go ahead.", "What time do you open?"]
            # Speech went over the stream only: no Telnyx TTS, no transcription windows.
            assert "speak" not in fake_call.actions
            assert "transcription_start" not in fake_call.actions
            # What we sent is what Telnyx takes: media/mark/clear, no stream_id needed.
            assert {f["event"] for f in stream.frames_in} <= {"media", "mark", "clear"}
            assert call.state in (CallState.HANGUP_BOT, CallState.COMPLETED)
            assert fake_call.errors == []
    await asyncio.wait_for(run(), BOUND)


async def test_barge_in_clears_playback_every_time(tmp_path: Path, speech: tuple[
        fake_speech.ScriptedSTT, fake_speech.ToneTTS]) -> None:
    stt, tts = speech

    async def run() -> None:
        async with rig(tmp_path, callee=CalleeScript(replies=[]), inboundPolicy="open",
                       **STREAMING) as r:
            ccid = await r.fake.place_inbound(CALLER, OUR_NUMBER)
            fake_call = r.fake.calls[ccid]
            await r.fake.wait_for_stream(ccid)
            # Answered with the stream parameters (the answer command has no auth token).
            answer = fake_call.action_bodies("answer")[0]
            assert answer["stream_bidirectional_mode"] == "rtp"
            assert "stream_auth_token" not in answer
            call = r.manager.get(ccid)
            assert call is not None
            await r.wait_call(call.call_id, lambda c: c.state is CallState.LISTENING)
            for round_no in (1, 2):
                long_text = " ".join(["word"] * 60)  # ~4.2 s of audio
                speaking = asyncio.create_task(r.rpc("voicecall.speak", {
                    "callId": call.call_id, "message": long_text}))
                await r.fake.wait_for(lambda n=round_no: len(tts.spoken) >= n + 1)
                await asyncio.sleep(0.3)
                await r.fake.speak(ccid, "interrupting you")
                await r.fake.wait_for(lambda n=round_no: len(fake_call.clears) >= n, 5)
                result = await asyncio.wait_for(speaking, 5)
                assert result == {"success": True}  # skipped, not failed
            assert len(fake_call.outbound_audio) / 8 < 2 * 4200  # both were cut short
    await asyncio.wait_for(run(), BOUND)


async def test_stream_disconnect_grace(tmp_path: Path, speech: tuple[
        fake_speech.ScriptedSTT, fake_speech.ToneTTS]) -> None:
    async def run() -> None:
        async with rig(tmp_path, callee=CalleeScript(replies=[]), inboundPolicy="open",
                       **STREAMING) as r:
            ccid = await r.fake.place_inbound(CALLER, OUR_NUMBER)
            fake_call = r.fake.calls[ccid]
            await r.fake.wait_for_stream(ccid)
            call = r.manager.get(ccid)
            assert call is not None
            await r.wait_call(call.call_id, lambda c: c.state is CallState.LISTENING)
            # Drop and come back inside the 2 s window: the call goes on.
            await r.fake.drop_stream(ccid)
            await asyncio.sleep(0.5)
            await r.fake.reconnect_stream(ccid)
            await asyncio.sleep(1.7)  # past where the first drop's grace would have ended
            live = r.manager.get(ccid)
            assert live is not None and not live.terminal and fake_call.is_alive
            # Drop for good: ended after the grace period, and hung up at Telnyx.
            await r.fake.drop_stream(ccid)
            ended = await r.wait_call(call.call_id, lambda c: c.terminal, timeout=5)
            assert ended.state is CallState.COMPLETED
            assert (ended.ended_at or 0) - ended.started_at >= 2.0
            await r.fake.wait_for(lambda: fake_call.hung_up_by == "api", 3)
    await asyncio.wait_for(run(), BOUND)


async def test_dtmf_both_ways_over_a_stream(tmp_path: Path, speech: tuple[
        fake_speech.ScriptedSTT, fake_speech.ToneTTS]) -> None:
    async def run() -> None:
        async with rig(tmp_path, callee=CalleeScript(replies=[]), inboundPolicy="open",
                       **STREAMING) as r:
            ccid = await r.fake.place_inbound(CALLER, OUR_NUMBER)
            fake_call = r.fake.calls[ccid]
            stream = await r.fake.wait_for_stream(ccid)
            call = r.manager.get(ccid)
            assert call is not None
            await r.wait_call(call.call_id, lambda c: c.state is CallState.LISTENING)
            # Each key is reported twice (stream frame + webhook) and counted once; a
            # repeated digit is still two keypresses.
            await r.fake.press(ccid, "4411#")
            pressed = await r.wait_call(call.call_id, lambda c: len(c.dtmf) >= 5)
            await asyncio.sleep(0.3)
            pressed = r.manager.get(call.call_id)
            assert pressed is not None and "".join(pressed.dtmf) == "4411#"
            assert len(fake_call.events("call.dtmf.received")) == 5
            assert sum(f["event"] == "dtmf" for f in stream.frames_out) == 5
            # Ours go out as send_dtmf: Telnyx plays them without touching the stream.
            assert await r.rpc("voicecall.dtmf", {"callId": call.call_id,
                                                  "digits": "1w2"}) == {"success": True}
            assert fake_call.dtmf_received == ["1w2"]
            assert len(fake_call.streams) == 1 and fake_call.stream is stream
            assert stream.end_reason is None
    await asyncio.wait_for(run(), BOUND)


async def test_speech_falls_back_to_telnyx_speak_without_telephony_tts(tmp_path: Path) -> None:
    stt = fake_speech.ScriptedSTT([])
    registry.register_stt("fake-stt-only", lambda cfg: stt)
    try:
        async def run() -> None:
            async with rig(tmp_path, callee=CalleeScript(replies=[]), inboundPolicy="open",
                           streaming={"enabled": True, "provider": "fake-stt-only"},
                           tts={"provider": "missing"}) as r:
                ccid = await r.fake.place_inbound(CALLER, OUR_NUMBER)
                fake_call = r.fake.calls[ccid]
                await r.fake.wait_for_stream(ccid)
                # Unlike a TwiML <Say>, a Telnyx speak leaves the stream up.
                await r.fake.wait_for(lambda: fake_call.heard, 5)
                assert fake_call.heard == ["Hello! How can I help you today?"]
                assert fake_call.stream is not None and fake_call.stream.end_reason is None
                # The stream's STT listens: no transcription window was opened.
                call = r.manager.get(ccid)
                assert call is not None
                await r.wait_call(call.call_id, lambda c: c.state is CallState.LISTENING)
                assert "transcription_start" not in fake_call.actions
        await asyncio.wait_for(run(), BOUND)
    finally:
        registry.unregister("fake-stt-only")


async def test_unknown_stt_provider_listens_with_telnyx_transcription(tmp_path: Path) -> None:
    tts = fake_speech.ToneTTS(word_ms=40)
    registry.register_tts("tone2", lambda cfg: tts)
    try:
        async def run() -> None:
            async with rig(tmp_path, callee=CalleeScript(replies=["Opening hours?"]),
                           inboundPolicy="open",
                           streaming={"enabled": True, "provider": "no-such-stt"},
                           tts={"provider": "tone2"}) as r:
                ccid = await r.fake.place_inbound(CALLER, OUR_NUMBER)
                fake_call = r.fake.calls[ccid]
                await r.fake.wait_for_stream(ccid)
                # Greeted over the stream; the caller's turn uses Telnyx transcription.
                await r.fake.wait_for(lambda: len(fake_call.outbound_audio) > 0, 3)
                call = r.manager.get(ccid)
                assert call is not None
                answered = await r.wait_call(call.call_id, lambda c: any(
                    t.text == "Opening hours?" for t in c.transcript))
                assert "transcription_start" in fake_call.actions
                assert answered.direction == "inbound"
        await asyncio.wait_for(run(), BOUND)
    finally:
        registry.unregister("tone2")


async def test_stream_tokens_are_checked(tmp_path: Path, speech: tuple[
        fake_speech.ScriptedSTT, fake_speech.ToneTTS]) -> None:
    async def run() -> None:
        async with rig(tmp_path, callee=CalleeScript(replies=[]), inboundPolicy="open",
                       **STREAMING) as r:
            ccid = await r.fake.place_inbound(CALLER, OUR_NUMBER)
            await r.fake.wait_for_stream(ccid)
            call = r.manager.get(ccid)
            assert call is not None
            base = f"ws://127.0.0.1:{r.webhook_port}/voice/stream"
            cases = [
                (f"?callId={call.call_id}&token=nope", ccid),       # wrong token
                (f"?callId={call.call_id}", ccid),                  # no token at all
                ("?callId=unknown&token=x", "v3:unknown"),          # unknown call
            ]
            good = urlsplit(r.fake.calls[ccid].stream_params["stream_url"]).query
            cases.append((f"?{good}", "v3:some-other-call"))        # token for another leg
            for query, start_ccid in cases:
                ws = await websockets.connect(base + query)
                await ws.send(media.encode_connected())
                await ws.send(media.encode_start("s-1", start_ccid))
                with pytest.raises(websockets.ConnectionClosed) as refused:
                    await asyncio.wait_for(ws.recv(), 2)
                assert refused.value.rcvd is not None and refused.value.rcvd.code == 1008
            live = r.manager.get(ccid)
            assert live is not None and not live.terminal
    await asyncio.wait_for(run(), BOUND)


async def test_outbound_greeting_is_not_cut_but_inbound_greeting_is(tmp_path: Path, speech: tuple[
        fake_speech.ScriptedSTT, fake_speech.ToneTTS]) -> None:
    greeting = " ".join(["hello"] * 16)  # ~1.1 s at 30 ms + 40 ms per word

    async def run() -> None:
        async with rig(tmp_path / "out", callee=CalleeScript(replies=[]), **STREAMING) as r:
            await r.rpc("voicecall.initiate", {
                "to": CALLEE, "message": greeting, "mode": "conversation"})
            fake_call = r.fake.latest_call
            await r.fake.wait_for(lambda: len(fake_call.outbound_audio) > 1600, 5)
            await r.fake.speak(fake_call.call_control_id, "hello? hello?")
            await r.fake.wait_for(lambda: fake_call.marks_echoed, 8)  # greeting heard out
            assert fake_call.clears == []
            assert len(fake_call.outbound_audio) >= 16 * 70 * 8 * 0.95
        async with rig(tmp_path / "in", callee=CalleeScript(replies=[]), inboundPolicy="open",
                       inboundGreeting=greeting, **STREAMING) as r:
            ccid = await r.fake.place_inbound(CALLER, OUR_NUMBER)
            fake_call = r.fake.calls[ccid]
            await r.fake.wait_for(lambda: len(fake_call.outbound_audio) > 1600, 5)
            await r.fake.speak(ccid, "hello? hello?")
            await r.fake.wait_for(lambda: fake_call.clears, 5)
    await asyncio.wait_for(run(), BOUND)
