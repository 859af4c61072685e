"""The webhook security pipeline against the fake Telnyx: Ed25519, freshness, replay, limits."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from txe_kit import CALLEE, CALLER, OUR_NUMBER, PUBLIC_URL, rig

from voicecall.calls import CallState
from voicecall.carriers.telnyx import decode_client_state, encode_client_state
from voicecall.testing.fake_telnyx import CalleeScript, Timings

BOUND = 20.0


def initiated(ccid: str = "v3:forged-call-1") -> dict[str, object]:
    return {"call_control_id": ccid, "call_leg_id": "leg-1", "call_session_id": "sess-1",
            "connection_id": "x", "direction": "incoming", "state": "parked",
            "from": CALLER, "to": OUR_NUMBER, "client_state": None}


async def test_bad_and_missing_signatures_are_refused(tmp_path: Path) -> None:
    async def run() -> None:
        async with rig(tmp_path, inboundPolicy="open") as r:
            payload = initiated()
            wrong = await r.fake.send_webhook("call.initiated", payload,
                                              signature="bm90LXZhbGlk" * 8)
            assert wrong.status_code == 401
            unsigned = await r.fake.send_webhook("call.initiated", payload, sign=False)
            assert unsigned.status_code == 401
            no_timestamp = await r.fake.send_webhook("call.initiated", payload,
                                                     drop_headers=("telnyx-timestamp",))
            assert no_timestamp.status_code == 401
            r.fake.sign_with(os.urandom(32))  # somebody else's key
            other = await r.fake.send_webhook("call.initiated", payload)
            assert other.status_code == 401
            r.fake.sign_with(None)
            r.fake.tamper_next_webhook()
            tampered = await r.fake.send_webhook("call.initiated", payload)
            assert tampered.status_code == 401
            # Signed, then the body changed on the way (the signature covers the raw bytes).
            good_ts = await r.fake.send_webhook(
                "call.initiated", payload,
                body_override=json.dumps({"data": {"event_type": "call.initiated",
                                                   "payload": payload}}).encode())
            assert good_ts.status_code == 401
            # Nothing was registered or answered by any of them.
            assert r.manager.get(str(payload["call_control_id"])) is None
            assert not r.fake.requests
            ok = await r.fake.send_webhook("call.initiated", payload)
            assert ok.status_code == 200
            elsewhere = await r.fake.send_webhook("call.initiated", payload,
                                                  url=PUBLIC_URL.replace("/webhook", "/other"))
            assert elsewhere.status_code == 404
    await asyncio.wait_for(run(), BOUND)


async def test_timestamps_outside_the_tolerance_are_refused(tmp_path: Path) -> None:
    async def run() -> None:
        async with rig(tmp_path) as r:
            payload = {"call_control_id": "v3:nobody", "client_state": None}
            for skew, status in ((-301, 401), (301, 401), (-3600, 401), (-200, 200),
                                 (200, 200)):
                r.fake.timestamp_skew = skew
                resp = await r.fake.send_webhook("call.speak.ended", payload)
                assert resp.status_code == status, (skew, resp.text)
            r.fake.timestamp_skew = 0
            garbage = await r.fake.send_webhook("call.speak.ended", payload,
                                                timestamp="17e8")
            assert garbage.status_code == 401
    await asyncio.wait_for(run(), BOUND)


async def test_unsigned_and_oversized_bodies(tmp_path: Path) -> None:
    async def run() -> None:
        async with rig(tmp_path) as r:
            # Unsigned: refused from the headers alone, before the body is read (a server
            # that read the body first would wait here for 60000 bytes).
            reader, writer = await asyncio.open_connection("127.0.0.1", r.webhook_port)
            writer.write(b"POST /voice/webhook HTTP/1.1\r\nHost: voice.example.com\r\n"
                         b"Content-Type: application/json\r\n"
                         b"telnyx-timestamp: 1800000000\r\n"  # one header is not enough
                         b"Content-Length: 60000\r\n\r\n{\"data\":")
            await writer.drain()
            status = await asyncio.wait_for(reader.readline(), 3)
            assert status.startswith(b"HTTP/1.1 401")
            writer.close()
            big = {"call_control_id": "v3:big", "junk": "x" * (70 * 1024)}
            resp = await r.fake.send_webhook("call.speak.ended", big)
            assert resp.status_code == 413
            # (The 5 s slow-body deadline is the shared pipeline's; twilio_e2e times it.)
    await asyncio.wait_for(run(), BOUND)


async def test_replayed_webhook_is_acknowledged_without_side_effects(tmp_path: Path) -> None:
    callee = CalleeScript(replies=["Yes please.", "Goodbye."])

    async def run() -> None:
        async with rig(tmp_path, callee=callee) as r:
            placed = await r.rpc("voicecall.initiate", {
                "to": CALLEE, "message": "Shall I book it?", "mode": "conversation"})
            call = await r.wait_call(placed["callId"], lambda c: c.terminal)
            fake_call = r.fake.latest_call
            await r.fake.wait_for(lambda: fake_call.events("call.hangup"))
            await asyncio.sleep(0.1)  # let any last background command land
            before = len(call.transcript)
            events_before = len(r.events())
            requests_before = len(r.fake.requests)
            for kind in ("call.transcription", "call.answered", "call.hangup"):
                sent = fake_call.events(kind)[0]
                # The captured request, byte for byte: same timestamp, same signature.
                resp = await r.fake.replay(sent)
                assert resp.status_code == 200 and resp.text == "OK"
            # Telnyx's own redelivery: same event id, fresh timestamp and signature.
            first = fake_call.events("call.transcription")[0]
            event = json.loads(first.body)["data"]
            redelivered = await r.fake.send_webhook("call.transcription", event["payload"],
                                                    event_id=event["id"])
            assert redelivered.status_code == 200
            after = r.manager.get(placed["callId"])
            assert after is not None and len(after.transcript) == before
            assert len(r.events()) == events_before
            assert len(r.fake.requests) == requests_before  # nothing was said or done again
    await asyncio.wait_for(run(), BOUND)


async def test_stale_turn_token_does_not_satisfy_a_newer_turn(tmp_path: Path) -> None:
    callee = CalleeScript(replies=["First answer."])

    async def run() -> None:
        async with rig(tmp_path, callee=callee) as r:
            placed = await r.rpc("voicecall.initiate", {
                "to": CALLEE, "message": "Question one?", "mode": "conversation"})
            call_id = placed["callId"]
            fake_call = r.fake.latest_call
            await r.fake.wait_for(lambda: len(fake_call.action_bodies("transcription_start"))
                                  >= 2, 5)
            starts = fake_call.action_bodies("transcription_start")
            old = decode_client_state(starts[0]["client_state"]).turn_token
            new = decode_client_state(starts[1]["client_state"]).turn_token
            assert old and new and old != new
            base = json.loads(fake_call.events("call.transcription")[0].body)["data"]["payload"]
            # Forged-but-validly-signed transcripts: the old turn's token, and none at all.
            for state in (encode_client_state(call_id, turn_token=old),
                          encode_client_state(call_id)):
                resp = await r.fake.send_webhook("call.transcription", dict(
                    base, client_state=state,
                    transcription_data={"transcript": "Injected words", "is_final": True}))
                assert resp.status_code == 200
            await asyncio.sleep(0.2)
            call = r.manager.get(call_id)
            assert call is not None
            assert "Injected words" not in [t.text for t in call.transcript]
            # The current turn's token does get through.
            resp = await r.fake.send_webhook("call.transcription", dict(
                base, client_state=encode_client_state(call_id, turn_token=new),
                transcription_data={"transcript": "Real answer", "is_final": True}))
            assert resp.status_code == 200
            await r.wait_call(call_id, lambda c: "Real answer" in [t.text for t in c.transcript])
    await asyncio.wait_for(run(), BOUND)


async def test_malformed_client_state_falls_back_to_the_call_control_id(tmp_path: Path) -> None:
    async def run() -> None:
        async with rig(tmp_path, callee=CalleeScript(replies=[])) as r:
            placed = await r.rpc("voicecall.initiate", {
                "to": CALLEE, "message": "Hello?", "mode": "conversation"})
            call = await r.wait_call(placed["callId"], lambda c: c.state is CallState.LISTENING)
            ccid = call.provider_call_id
            for i, state in enumerate(("%%% not base64 %%%", "bm90IGpzb24=", "WzEsMl0=", "")):
                resp = await r.fake.send_webhook("call.dtmf.received", {
                    "call_control_id": ccid, "client_state": state, "digit": str(i)})
                assert resp.status_code == 200
            pressed = await r.wait_call(call.call_id, lambda c: len(c.dtmf) >= 4)
            assert "".join(pressed.dtmf) == "0123"
            # Signed but malformed: a 400, not a crash; signed without an event: acknowledged.
            bad = await r.fake.send_webhook("raw", {}, raw_body=b"{not json")
            assert bad.status_code == 400
            empty = await r.fake.send_webhook("raw", {}, raw_body=b'{"meta": {"attempt": 1}}')
            assert empty.status_code == 200
            live = r.manager.get(call.call_id)
            assert live is not None and not live.terminal
    await asyncio.wait_for(run(), BOUND)


async def test_rest_retries_on_429_and_5xx_with_the_same_command_id(tmp_path: Path) -> None:
    async def run() -> None:
        async with rig(tmp_path) as r:
            r.fake.fail_next(429, count=1, retry_after=0.05, action="dial")
            r.fake.fail_next(503, count=1, action="dial")
            r.fake.fail_next(500, count=1, action="speak")
            placed = await r.rpc("voicecall.initiate", {
                "to": CALLEE, "message": "Retry me.", "mode": "notify"})
            call = await r.wait_call(placed["callId"], lambda c: c.terminal)
            assert call.state is CallState.COMPLETED
            dials = [q for q in r.fake.requests if q.action == "dial"]
            assert [q.status for q in dials] == [429, 503, 200]
            assert len({q.command_id for q in dials}) == 1
            assert len(r.fake.calls) == 1 and r.fake.latest_call.heard == ["Retry me."]
            assert all(q.headers["authorization"].startswith("Bearer ") for q in dials)
    await asyncio.wait_for(run(), BOUND)


async def test_failed_answer_is_retried_through_webhook_redelivery(tmp_path: Path) -> None:
    timings = Timings(webhook_retries=3)

    async def run() -> None:
        async with rig(tmp_path, timings=timings, inboundPolicy="open",
                       callee=CalleeScript(replies=["Hello."], hangup_when_done=True)) as r:
            r.fake.fail_next(500, count=3, action="answer")  # all REST retries of one try
            ccid = await r.fake.place_inbound(CALLER, OUR_NUMBER)
            fake_call = r.fake.calls[ccid]
            await r.fake.wait_for(lambda: len(fake_call.events("call.initiated")) >= 2, 5)
            assert fake_call.answered is not None
            first = fake_call.events("call.initiated")
            assert [w.status_code for w in first] == [500, 200]  # redelivered, then answered
            answers = [q for q in fake_call.requests if q.action == "answer"]
            assert [q.status for q in answers] == [500, 500, 500, 200]
            assert len({q.command_id for q in answers}) == 1
            call = r.manager.get(ccid)
            assert call is not None and call.direction == "inbound"
            await r.fake.wait_for(lambda: fake_call.heard, 5)
    await asyncio.wait_for(run(), BOUND)
