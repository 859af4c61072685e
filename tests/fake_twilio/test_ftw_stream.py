"""Media Streams: the fake dials the stand-in gateway's WebSocket like Twilio does.

Frames the fake sends are also run through the gateway's own parser
(``carriers.twilio.media.parse_frame``) so both ends agree on the shapes.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from typing import Any

import httpx
from conftest import (
    ACCOUNT_SID,
    PUBLIC,
    PUBLIC_HOST,
    STREAM_URL,
    FakeFactory,
    MiniGateway,
    WsSession,
    client_for,
    create_call,
    twiml,
)

from voicecall.carriers.twilio.media import Dtmf, Media, Start, parse_frame
from voicecall.carriers.twilio.twiml import connect_stream
from voicecall.testing.fake_twilio import CalleeScript, FakeTwilio, Timings, rms, tone_burst

STREAM_SID = re.compile(r"^MZ[0-9a-f]{32}$")
LOUD = bytes([0x00]) * 160  # mu-law 0x00 is near full scale


def media(stream_sid: str, payload: bytes) -> dict[str, Any]:
    return {"event": "media", "streamSid": stream_sid,
            "media": {"payload": base64.b64encode(payload).decode()}}


def mark(stream_sid: str, name: str) -> dict[str, Any]:
    return {"event": "mark", "streamSid": stream_sid, "mark": {"name": name}}


def payload(frame: dict[str, Any]) -> bytes:
    return base64.b64decode(frame["media"]["payload"])


async def start_stream(gateway: MiniGateway, fake: FakeTwilio) -> tuple[str, WsSession, str]:
    """Place a call whose TwiML is <Connect><Stream>; return (CallSid, session, streamSid)."""
    gateway.twiml("/voice", connect_stream(STREAM_URL,
                                           parameters={"token": "tok-1", "callId": "c1"}))
    async with client_for(fake) as rest:
        body = await create_call(rest, Url=f"{PUBLIC}/voice")
    n = len(gateway.sessions)
    await fake.wait_for(lambda: len(gateway.sessions) > n, what="stream connected")
    session = gateway.sessions[n]
    start = await session.recv_event("start")
    return body["sid"], session, start["streamSid"]


async def test_connected_start_and_paced_media(gateway: MiniGateway, fake: FakeTwilio) -> None:
    sid, session, stream_sid = await start_stream(gateway, fake)
    t0 = time.monotonic()
    await asyncio.sleep(0.2)
    n_media = len(session.of("media"))
    # Real-time pacing: ~10 frames in 0.2 s, certainly not hundreds.
    assert 5 <= n_media <= 20, n_media

    assert session.valid  # X-Twilio-Signature on the upgrade, over the public wss URL
    assert session.headers["host"] == PUBLIC_HOST
    first, start = session.frames[:2]
    assert first == {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    assert STREAM_SID.match(stream_sid) and start["sequenceNumber"] == "1"
    assert start["start"] == {
        "streamSid": stream_sid, "accountSid": ACCOUNT_SID, "callSid": sid,
        "tracks": ["inbound"], "customParameters": {"token": "tok-1", "callId": "c1"},
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
    }
    parsed = [parse_frame(json.dumps(f)) for f in session.frames]
    assert isinstance(parsed[1], Start) and parsed[1].custom_parameters["token"] == "tok-1"
    frames = [p for p in parsed if isinstance(p, Media)]
    assert [f.chunk for f in frames[:3]] == [1, 2, 3]
    assert [f.timestamp_ms for f in frames[:3]] == [0, 20, 40]
    assert all(len(f.payload) == 160 and set(f.payload) == {0xFF} for f in frames)
    seqs = [int(f["sequenceNumber"]) for f in session.frames[1:]]
    assert seqs == list(range(1, len(seqs) + 1))
    call = fake.calls[sid]
    assert call.stream is not None and call.stream.stream_sid == stream_sid
    assert call.stream.custom_parameters == {"token": "tok-1", "callId": "c1"}
    assert time.monotonic() - t0 < 2


async def test_marks_echo_after_playback_then_callee_replies(
        gateway: MiniGateway, make_fake: FakeFactory) -> None:
    fake = await make_fake(CalleeScript(replies=["yes please"], dtmf=[(0.05, "1#")]),
                           timings=Timings(turn_gap=0.1))
    sid, session, stream_sid = await start_stream(gateway, fake)
    for _ in range(10):  # 200 ms of audio, sent faster than real time
        await session.send(media(stream_sid, LOUD))
    await session.send(mark(stream_sid, "greeting"))
    sent_at = time.monotonic()
    echo = await session.recv_event("mark")
    # Echoed only once the 200 ms queued before it have "played".
    assert time.monotonic() - sent_at >= 0.15
    assert echo["mark"] == {"name": "greeting"} and echo["streamSid"] == stream_sid
    assert isinstance(echo["sequenceNumber"], str)

    call = fake.calls[sid]
    assert call.marks_echoed == ["greeting"] and bytes(call.outbound_audio) == LOUD * 10
    # Our side went quiet: the callee answers with audible speech.
    async with asyncio.timeout(3):
        while True:
            frame = await session.recv_event("media")
            if rms(payload(frame)) > 0.05:
                break
    assert call.callee_said == ["yes please"]
    digits = [parse_frame(json.dumps(f)) for f in session.of("dtmf")]
    assert [d.digit for d in digits if isinstance(d, Dtmf)] == ["1", "#"]
    assert session.of("dtmf")[0]["dtmf"]["track"] == "inbound_track"
    await fake.press(sid, "9")
    assert (await session.recv_event("dtmf"))["dtmf"]["digit"] == "9"


async def test_clear_drops_audio_and_flushes_marks(gateway: MiniGateway, fake: FakeTwilio) -> None:
    sid, session, stream_sid = await start_stream(gateway, fake)
    for _ in range(100):  # 2 s of audio
        await session.send(media(stream_sid, LOUD))
    await session.send(mark(stream_sid, "long"))
    await asyncio.sleep(0.1)
    await fake.speak(sid, "wait, stop")  # the callee barges in; the gateway clears
    await session.send({"event": "clear", "streamSid": stream_sid})
    cleared_at = time.monotonic()
    echo = await session.recv_event("mark")
    assert echo["mark"]["name"] == "long" and time.monotonic() - cleared_at < 0.5
    call = fake.calls[sid]
    [clear] = call.clears
    assert clear.marks_flushed == ("long",) and clear.stream_sid == stream_sid
    assert 8000 < clear.dropped_bytes <= 16000  # most of the 2 s never played
    assert call.marks_echoed == ["long"] and call.callee_said == ["wait, stop"]
    # Garbage from the gateway is recorded as Twilio would log it, not fatal.
    await session.ws.send_bytes(b"\x00\x01")
    await session.send(mark("MZ" + "0" * 32, "wrong-stream"))
    await fake.wait_for(lambda: len(call.errors) == 2)
    assert [e.code for e in call.errors] == [31950, 31951]
    assert call.stream_frames_in[-1]["mark"]["name"] == "wrong-stream"


async def test_rest_twiml_update_stops_the_stream(gateway: MiniGateway, fake: FakeTwilio) -> None:
    sid, session, stream_sid = await start_stream(gateway, fake)
    async with client_for(fake) as rest:
        response = await rest.post(f"/Calls/{sid}.json",
                                   data={"Twiml": twiml("<Say>moved on</Say>", "<Hangup/>")})
    assert response.status_code == 200
    stop = await session.recv_event("stop")
    assert stop["streamSid"] == stream_sid
    assert stop["stop"] == {"accountSid": ACCOUNT_SID, "callSid": sid}
    await asyncio.wait_for(session.closed.wait(), 2)
    assert session.close_code == 1000
    call = await fake.wait_for_status(sid, "completed")
    assert call.heard == ["moved on"] and call.stream is not None
    assert call.stream.end_reason == "stop"


async def test_drop_and_reconnect(gateway: MiniGateway, fake: FakeTwilio) -> None:
    sid, first, first_sid = await start_stream(gateway, fake)
    await fake.drop_stream(sid)
    await asyncio.wait_for(first.closed.wait(), 2)
    # No stop frame and no close frame: the server sees an abnormal end (1005/1006).
    assert "stop" not in first.events() and first.close_code in (1005, 1006)
    call = fake.calls[sid]
    assert call.status == "in-progress" and call.streams[0].end_reason == "dropped"

    new_sid = await fake.reconnect_stream(sid)
    await fake.wait_for(lambda: len(gateway.sessions) == 2)
    second = gateway.sessions[1]
    start = await second.recv_event("start")
    assert start["streamSid"] == new_sid != first_sid
    assert start["start"]["customParameters"] == {"token": "tok-1", "callId": "c1"}
    assert second.valid

    async with client_for(fake) as rest:
        await rest.post(f"/Calls/{sid}.json", data={"Status": "completed"})
    assert (await second.recv_event("stop"))["streamSid"] == new_sid
    await fake.wait_for(lambda: gateway.hits_for("/status")[-1:] and
                        gateway.hits_for("/status")[-1].params["CallStatus"] == "completed")
    assert call.hung_up_by == "api" and [s.end_reason for s in call.streams] == [
        "dropped", "stop"]


async def test_gateway_close_continues_with_connect_action(
        gateway: MiniGateway, fake: FakeTwilio) -> None:
    async def close_after_start(session: WsSession) -> None:
        for _ in range(2):
            session.frames.append(json.loads(await session.ws.receive_text()))
        await session.ws.close()

    gateway.ws_handler = close_after_start
    gateway.twiml("/after", twiml("<Say>after the stream</Say>"))
    doc = connect_stream(STREAM_URL).replace("<Connect>", '<Connect action="/after">')
    gateway.twiml("/voice", doc)
    async with client_for(fake) as rest:
        body = await create_call(rest, Url=f"{PUBLIC}/voice")
    call = await fake.wait_for_status(body["sid"], "completed")
    assert gateway.sessions[0].events() == ["connected", "start"]
    assert call.stream is not None and call.stream.end_reason == "closed-by-gateway"
    assert call.heard == ["after the stream"] and gateway.hits_for("/after")[0].valid


async def test_refused_upgrade_falls_through(gateway: MiniGateway, fake: FakeTwilio) -> None:
    gateway.refuse_streams = True
    gateway.twiml("/voice", connect_stream(STREAM_URL).replace(
        "</Response>", "<Say>stream failed</Say></Response>"))
    async with client_for(fake) as rest:
        body = await create_call(rest, Url=f"{PUBLIC}/voice")
    call = await fake.wait_for_status(body["sid"], "completed")
    assert call.stream is not None and call.stream.handshake_status == 403
    assert call.errors[0].code == 31920 and call.heard == ["stream failed"]


async def test_fast_mode_and_callee_hangup(gateway: MiniGateway, make_fake: FakeFactory) -> None:
    fake = await make_fake(CalleeScript(replies=["hello"], speak_first=True,
                                        hangup_when_done=True),
                           timings=Timings(realtime=False, turn_gap=0.05))
    sid, session, stream_sid = await start_stream(gateway, fake)
    expected = len(tone_burst("hello")) // 160
    await fake.wait_for(lambda: len(session.of("media")) >= expected)
    await asyncio.sleep(0.05)
    # As fast as possible, and no idle silence once the reply has been sent.
    assert len(session.of("media")) == expected
    assert b"".join(payload(f) for f in session.of("media")) == tone_burst("hello")
    # Instant playback: a mark after 10 s of audio comes straight back...
    for _ in range(500):
        await session.send(media(stream_sid, LOUD))
    await session.send(mark(stream_sid, "m"))
    await asyncio.wait_for(session.recv_event("mark"), 1)
    # ...and with no replies left, the callee hangs up at its next turn.
    stop = await session.recv_event("stop")
    assert stop["stop"]["callSid"] == sid
    call = await fake.wait_for_status(sid, "completed")
    assert call.hung_up_by == "callee"


async def test_hangup_via_rest_sends_stop_then_completed_callback(
        gateway: MiniGateway, fake: FakeTwilio, rest: httpx.AsyncClient) -> None:
    sid, session, _ = await start_stream(gateway, fake)
    await rest.post(f"/Calls/{sid}.json", data={"Status": "completed"})
    await session.recv_event("stop")
    call = fake.calls[sid]
    await fake.wait_for(lambda: call.status_callbacks()[-1].params["CallStatus"] == "completed")
    kinds = [e.kind for e in fake.events if e.call_sid == sid]
    # Twilio order: the stream stops before the completed callback goes out.
    assert kinds.index("stream.ended") < len(kinds) - 1 - kinds[::-1].index("webhook")
    assert call.stream is not None and call.stream.end_reason == "stop"


async def test_stream_controls_wait_for_a_dial_in_flight(gateway: MiniGateway,
                                                        fake: FakeTwilio) -> None:
    gateway.twiml("/voice", connect_stream(STREAM_URL))
    sid = await fake.place_inbound("+15551230000", "+15557654321", f"{PUBLIC}/voice")
    call = fake.calls[sid]
    await fake.wait_for(lambda: call.streams)  # dialling has begun, maybe not finished
    await fake.drop_stream(sid)  # waits for the dial instead of failing
    assert call.streams[0].end_reason == "dropped"
    await fake.reconnect_stream(sid)
    record = await fake.wait_for_stream(sid)
    assert record is call.streams[1] and record.connected
    await fake.hangup(sid)  # the caller hangs up: stop, then the call is over
    await fake.wait_for(lambda: record.end_reason == "stop")
    assert call.status == "completed" and call.hung_up_by == "callee"
