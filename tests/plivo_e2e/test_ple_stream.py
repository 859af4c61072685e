"""Plivo audio streams end to end: negotiated formats, paced playback with checkpoints,
barge-in, disconnect grace, DTMF both ways, and no XML fallback."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import websockets
from ple_kit import CALLEE, CALLER, OUR_NUMBER, PUBLIC_URL, rig

from voicecall.calls import CallState
from voicecall.carriers.plivo import media
from voicecall.speech import registry
from voicecall.testing import fake_speech
from voicecall.testing.fake_plivo import CalleeScript, tone_burst

BOUND = 20.0
STREAMING = {"streaming": {"enabled": True, "provider": "fake"}, "tts": {"provider": "fake"}}
Speech = tuple[fake_speech.ScriptedSTT, fake_speech.ToneTTS]


@pytest.fixture
def speech() -> Iterator[Speech]:
    stt = fake_speech.ScriptedSTT(["Yes, go ahead.", "Bye now."])
    tts = fake_speech.ToneTTS(word_ms=20)
    fake_speech.register(stt, tts)
    yield stt, tts
    registry.unregister("fake")


@pytest.mark.parametrize("fmt", [media.MULAW_8K, media.L16_16K],
                         ids=lambda f: f.content_type)
async def test_conversation_over_a_stream_in_each_format(tmp_path: Path, speech: Speech,
                                                         fmt: media.StreamFormat) -> None:
    stt, tts = speech
    callee = CalleeScript(replies=["a", "b"], hangup_when_done=True,
                          audio=lambda text: tone_burst(text, min_ms=200, tail_ms=450))

    async def run() -> None:
        async with rig(tmp_path, callee=callee, stream_format=fmt, **STREAMING) as r:
            placed = await r.rpc("voicecall.initiate", {
                "to": CALLEE, "message": "Hello, this is the clinic.",
                "mode": "conversation"})
            call = await r.wait_call(placed["callId"], lambda c: c.terminal, timeout=15)
            fake_call = r.fake.latest_call
            doc = next(d for d in fake_call.xml_executed if "<Stream" in d)
            assert 'bidirectional="true"' in doc and 'keepCallAlive="true"' in doc
            assert f'contentType="{fmt.content_type}"' in doc
            stream = fake_call.streams[0]
            assert stream.format == fmt and stream.requested_content_type == fmt.content_type
            token = stream.extra_headers.removeprefix("token=")
            assert token == r.carrier.stream_token(fake_call.call_uuid)
            plays = [f for f in stream.frames_in if f["event"] == "playAudio"]
            assert plays and all(f["media"]["contentType"] == fmt.encoding
                                 and f["media"]["sampleRate"] == fmt.sample_rate
                                 for f in plays)
            assert tts.spoken[0] == "Hello, this is the clinic."
            assert fake_call.checkpoints_played  # each playback ended with a checkpoint
            assert len(fake_call.outbound_raw) >= len(fake_call.outbound_audio) * (
                1 if fmt == media.MULAW_8K else 2 * fmt.sample_rate // 8000) * 0.95
            users = [t.text for t in call.transcript if t.speaker == "user"]
            assert users == ["Yes, go ahead.", "Bye now."]
            # Speech went over the stream only: no transfers, nothing but the dial and
            # (at most) the hang-up over REST.
            assert not [x for x in fake_call.requests if x.path.endswith("/Speak/")
                        or (x.method == "POST" and x.path.endswith(
                            f"/Call/{fake_call.call_uuid}/"))]
            assert not fake_call.errors
    await asyncio.wait_for(run(), BOUND)


async def test_format_reported_by_start_wins(tmp_path: Path, speech: Speech) -> None:
    # We ask for mu-law; the stream comes up as L16 8 kHz anyway (Plivo's default, as if
    # the attribute had been dropped): the gateway follows start.mediaFormat instead of
    # sending mu-law bytes labelled as something else.
    async def run() -> None:
        async with rig(tmp_path, callee=CalleeScript(replies=[]), inboundPolicy="open",
                       force_stream_format=media.L16_8K, **STREAMING) as r:
            uid = await r.fake.place_inbound(CALLER, OUR_NUMBER, PUBLIC_URL)
            fake_call = r.fake.calls[uid]
            stream = await r.fake.wait_for_stream(uid)
            await r.fake.wait_for(lambda: fake_call.checkpoints_played, 5)
            assert stream.requested_content_type == "audio/x-mulaw;rate=8000"
            plays = [f for f in stream.frames_in if f["event"] == "playAudio"]
            assert all(f["media"]["contentType"] == "audio/x-l16"
                       and f["media"]["sampleRate"] == 8000 for f in plays)
            assert len(fake_call.outbound_raw) == 2 * len(fake_call.outbound_audio)
            assert not fake_call.errors
            await r.fake.speak(uid, "hello there")
            call = await r.wait_call(uid, lambda c: any(t.speaker == "user"
                                                        for t in c.transcript))
            assert call.transcript[-1].text == "Yes, go ahead."
    await asyncio.wait_for(run(), BOUND)


async def test_barge_in_clears_playback_every_time(tmp_path: Path, speech: Speech) -> None:
    stt, tts = speech

    async def run() -> None:
        async with rig(tmp_path, callee=CalleeScript(replies=[]), inboundPolicy="open",
                       **STREAMING) as r:
            uid = await r.fake.place_inbound(CALLER, OUR_NUMBER, PUBLIC_URL)
            fake_call = r.fake.calls[uid]
            call = await r.wait_call(uid, lambda c: c.state is CallState.LISTENING)
            for round_no in (1, 2):
                long_text = " ".join(["word"] * 60)  # ~3.6 s of audio
                speaking = asyncio.create_task(r.rpc("voicecall.speak", {
                    "callId": call.call_id, "message": long_text}))
                await r.fake.wait_for(lambda n=round_no: len(tts.spoken) >= n + 1)
                await asyncio.sleep(0.3)
                await r.fake.speak(uid, "interrupting you")
                await r.fake.wait_for(lambda n=round_no: len(fake_call.clears) >= n, 5)
                assert await asyncio.wait_for(speaking, 5) == {"success": True}
            clears = [f for f in fake_call.stream_frames_in if f["event"] == "clearAudio"]
            cleared = [f for s in fake_call.streams for f in s.frames_out
                       if f["event"] == "clearedAudio"]
            # (The caller's words also reach the agent, whose reply may be cut in turn.)
            assert len(clears) >= 2 and len(cleared) == len(clears)
            assert len(fake_call.outbound_audio) / 8 < 2 * 3600  # both were cut short
    await asyncio.wait_for(run(), BOUND)


async def test_stream_disconnect_grace(tmp_path: Path, speech: Speech) -> None:
    async def run() -> None:
        async with rig(tmp_path, callee=CalleeScript(replies=[]), inboundPolicy="open",
                       **STREAMING) as r:
            uid = await r.fake.place_inbound(CALLER, OUR_NUMBER, PUBLIC_URL)
            fake_call = r.fake.calls[uid]
            call = await r.wait_call(uid, lambda c: c.state is CallState.LISTENING)
            # Drop and come back inside the 2 s window: the call goes on.
            await r.fake.drop_stream(uid)
            await asyncio.sleep(0.3)
            await r.fake.reconnect_stream(uid)
            await asyncio.sleep(1.9)  # past the first drop's grace: the reconnect saved it
            live = r.manager.get(uid)
            assert live is not None and not live.terminal
            assert len(fake_call.streams) == 2
            # Drop for good: ended after the grace period, and hung up at Plivo.
            await r.fake.drop_stream(uid)
            ended = await r.wait_call(call.call_id, lambda c: c.terminal, timeout=5)
            assert ended.state is CallState.COMPLETED
            assert (ended.ended_at or 0) - ended.started_at >= 2.0
            await r.fake.wait_for(lambda: fake_call.hung_up_by == "api", 3)
    await asyncio.wait_for(run(), BOUND)


async def test_dtmf_both_ways_over_a_stream(tmp_path: Path, speech: Speech) -> None:
    async def run() -> None:
        async with rig(tmp_path, callee=CalleeScript(replies=[]), inboundPolicy="open",
                       **STREAMING) as r:
            uid = await r.fake.place_inbound(CALLER, OUR_NUMBER, PUBLIC_URL)
            fake_call = r.fake.calls[uid]
            call = await r.wait_call(uid, lambda c: c.state is CallState.LISTENING)
            await r.fake.press(uid, "42#")
            pressed = await r.wait_call(call.call_id, lambda c: len(c.dtmf) >= 3)
            assert "".join(pressed.dtmf) == "42#"
            assert await r.rpc("voicecall.dtmf", {"callId": call.call_id,
                                                  "digits": "1w2#"}) == {"success": True}
            await r.fake.wait_for(lambda: len(fake_call.digits_sent) == 2, 3)
            # sendDTMF on the stream, split at the pause; the XML was never replaced.
            assert fake_call.digits_sent == ["1", "2#"]
            sends = [f for f in fake_call.stream_frames_in if f["event"] == "sendDTMF"]
            assert [f["dtmf"] for f in sends] == ["1", "2#"]
            assert not [x for x in fake_call.requests if x.path.endswith("/DTMF/")]
            assert len(fake_call.streams) == 1 and len(fake_call.xml_executed) == 1
    await asyncio.wait_for(run(), BOUND)


async def test_no_xml_fallback_while_a_stream_is_active(tmp_path: Path) -> None:
    stt = fake_speech.ScriptedSTT([])
    registry.register_stt("fake-stt-only", lambda cfg: stt)
    try:
        async def run() -> None:
            async with rig(tmp_path, callee=CalleeScript(replies=[]), inboundPolicy="open",
                           streaming={"enabled": True, "provider": "fake-stt-only"},
                           tts={"provider": "missing"}) as r:
                uid = await r.fake.place_inbound(CALLER, OUR_NUMBER, PUBLIC_URL)
                fake_call = r.fake.calls[uid]
                await r.fake.wait_for_stream(uid)
                await asyncio.sleep(0.3)
                # The greeting could not play and did not fall back to <Speak>.
                assert not any("<Speak" in d for d in fake_call.xml_executed)
                assert not [x for x in fake_call.requests if x.method == "POST"]
                call = r.manager.get(uid)
                assert call is not None and call.metadata.get("initialMessage")
        await asyncio.wait_for(run(), BOUND)
    finally:
        registry.unregister("fake-stt-only")


async def test_stream_with_a_bad_token_or_no_start_is_closed(tmp_path: Path,
                                                              speech: Speech) -> None:
    async def run() -> None:
        async with rig(tmp_path, streaming={"enabled": True, "provider": "fake",
                                            "preStartTimeoutMs": 300},
                       tts={"provider": "fake"}) as r:
            url = f"ws://127.0.0.1:{r.webhook_port}/voice/stream"
            async with websockets.connect(url) as ws:
                await ws.send(media.encode_start("s-1", "no-such-call", "MA1", media.MULAW_8K,
                                                 extra_headers="token=nope"))
                with pytest.raises(websockets.ConnectionClosed) as refused:
                    await asyncio.wait_for(ws.recv(), 2)
                assert refused.value.rcvd is not None and refused.value.rcvd.code == 1008
            async with websockets.connect(url) as ws:
                await ws.send(media.encode_media("s-1", b"\xff" * 160, sequence_number=1,
                                                 chunk=1, timestamp_ms=0))
                with pytest.raises(websockets.ConnectionClosed) as early:
                    await asyncio.wait_for(ws.recv(), 2)
                assert early.value.rcvd is not None and early.value.rcvd.code == 1008
            async with websockets.connect(url) as ws:
                with pytest.raises(websockets.ConnectionClosed) as silent:
                    await asyncio.wait_for(ws.recv(), 2)
                assert silent.value.rcvd is not None and silent.value.rcvd.code == 1008
    await asyncio.wait_for(run(), BOUND)
