"""The webhook security pipeline against the fake Twilio: signatures, replay, body limits."""

from __future__ import annotations

import asyncio
from pathlib import Path

from twe_kit import CALLEE, PUBLIC_URL, rig

from voicecall.calls import CallState
from voicecall.testing.fake_twilio import CalleeScript

BOUND = 20.0


async def test_bad_and_missing_signatures_are_refused(tmp_path: Path) -> None:
    async def run() -> None:
        async with rig(tmp_path) as r:
            params = {"CallSid": "CA" + "1" * 32, "CallStatus": "ringing",
                      "Direction": "inbound", "From": "+15550001111", "To": "+15550009999"}
            wrong = await r.fake.send_webhook(PUBLIC_URL, params, signature="bm90LXZhbGlk")
            assert wrong.status_code == 401
            unsigned = await r.fake.send_webhook(PUBLIC_URL, params, sign=False)
            assert unsigned.status_code == 401
            r.fake.sign_with("some-other-token")
            other = await r.fake.send_webhook(PUBLIC_URL, params)
            assert other.status_code == 401
            r.fake.sign_with(None)
            # Nothing was registered by any of them.
            assert r.manager.get(params["CallSid"]) is None
            ok = await r.fake.send_webhook(PUBLIC_URL, params)
            assert ok.status_code == 200
    await asyncio.wait_for(run(), BOUND)


async def test_unsigned_request_is_refused_before_its_body_is_read(tmp_path: Path) -> None:
    async def run() -> None:
        async with rig(tmp_path) as r:
            # Raw socket: headers and a few body bytes, then nothing. A server that read
            # the body first would wait here; ours answers from the headers alone.
            reader, writer = await asyncio.open_connection("127.0.0.1", r.webhook_port)
            writer.write(b"POST /voice/webhook HTTP/1.1\r\nHost: voice.example.com\r\n"
                         b"Content-Type: application/x-www-form-urlencoded\r\n"
                         b"Content-Length: 60000\r\n\r\nCallSid=CA1")
            await writer.drain()
            status = await asyncio.wait_for(reader.readline(), 3)
            assert status.startswith(b"HTTP/1.1 401")
            writer.close()
    await asyncio.wait_for(run(), BOUND)


async def test_oversized_and_slow_bodies(tmp_path: Path) -> None:
    async def run() -> None:
        async with rig(tmp_path) as r:
            big = {"CallSid": "CA" + "2" * 32, "Junk": "x" * (70 * 1024)}
            resp = await r.fake.send_webhook(PUBLIC_URL, big)
            assert resp.status_code == 413

            async def trickle():  # type: ignore[no-untyped-def]
                yield b"CallSid=CA3"
                await asyncio.sleep(6)  # past the 5 s pre-auth body deadline
                yield b"&CallStatus=ringing"

            slow = await asyncio.wait_for(r.fake.send_webhook(
                PUBLIC_URL, {"CallSid": "CA3", "CallStatus": "ringing"},
                body_override=trickle()), 9)
            assert slow.status_code == 408
    await asyncio.wait_for(run(), BOUND)


async def test_replayed_webhook_is_acknowledged_without_side_effects(tmp_path: Path) -> None:
    callee = CalleeScript(replies=["Yes please.", "Goodbye."])

    async def run() -> None:
        async with rig(tmp_path, callee=callee) as r:
            placed = await r.rpc("voicecall.initiate", {
                "to": CALLEE, "message": "Shall I book it?", "mode": "conversation"})
            call = await r.wait_call(placed["callId"], lambda c: c.terminal)
            before = len(call.transcript)
            events_before = len(r.events())
            gather = next(w for w in r.fake.latest_call.webhooks if w.kind == "gather")
            for same_token in (False, True):
                resp = await r.fake.replay(gather, same_token=same_token)
                assert resp.status_code == 200
                assert "<Response" in resp.text and "<Say" not in resp.text
            after = r.manager.get(placed["callId"])
            assert after is not None and len(after.transcript) == before
            assert len(r.events()) == events_before
    await asyncio.wait_for(run(), BOUND)


async def test_stale_turn_token_does_not_satisfy_a_newer_turn(tmp_path: Path) -> None:
    callee = CalleeScript(replies=["First answer."])

    async def run() -> None:
        async with rig(tmp_path, callee=callee) as r:
            placed = await r.rpc("voicecall.initiate", {
                "to": CALLEE, "message": "Question one?", "mode": "conversation"})
            call_id = placed["callId"]
            fake_call = r.fake.latest_call
            await r.fake.wait_for(lambda: any(w.kind == "gather" for w in fake_call.webhooks))
            first = next(w for w in fake_call.webhooks if w.kind == "gather")
            # A forged-but-validly-signed callback carrying the old turn's token.
            params = dict(first.params, SpeechResult="Injected words")
            resp = await r.fake.send_webhook(first.url, params)
            assert resp.status_code == 200
            await asyncio.sleep(0.2)
            call = r.manager.get(call_id)
            assert call is not None
            assert "Injected words" not in [t.text for t in call.transcript]
    await asyncio.wait_for(run(), BOUND)


async def test_rest_retries_on_429_and_5xx(tmp_path: Path) -> None:
    async def run() -> None:
        async with rig(tmp_path) as r:
            r.fake.fail_next(429, count=1, retry_after=0.05)
            r.fake.fail_next(503, count=1)
            placed = await r.rpc("voicecall.initiate", {
                "to": CALLEE, "message": "Retry me.", "mode": "notify"})
            call = await r.wait_call(placed["callId"], lambda c: c.terminal)
            assert call.state is CallState.COMPLETED
    await asyncio.wait_for(run(), BOUND)
