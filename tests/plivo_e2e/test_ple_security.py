"""The webhook security pipeline against the fake Plivo: signatures, replay, retries."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from ple_kit import CALLEE, CALLER, OUR_NUMBER, PUBLIC_URL, rig

from voicecall.calls import CallState
from voicecall.testing.fake_plivo import CalleeScript

BOUND = 20.0
UUID = "5d2f8a6e-0000-4000-8000-00000000c0de"
RINGING = {"CallUUID": UUID, "CallStatus": "ringing", "Direction": "inbound",
           "From": CALLER[1:], "To": OUR_NUMBER[1:], "Event": "StartApp"}


async def test_bad_and_missing_signatures_are_refused(tmp_path: Path) -> None:
    async def run() -> None:
        async with rig(tmp_path, inboundPolicy="open") as r:
            fake = r.fake
            forged = await fake.send_webhook(PUBLIC_URL, RINGING, headers={
                "X-Plivo-Signature-V3": "bm90LXZhbGlk"})
            assert forged.status_code == 401
            assert (await fake.send_webhook(PUBLIC_URL, RINGING, sign=False)).status_code == 401
            no_nonce = await fake.send_webhook(PUBLIC_URL, RINGING,
                                               drop_headers=["X-Plivo-Signature-V3-Nonce"])
            assert no_nonce.status_code == 401
            fake.sign_with("some-other-token")
            assert (await fake.send_webhook(PUBLIC_URL, RINGING)).status_code == 401
            fake.sign_with(None)
            fake.tamper_next_webhook()
            assert (await fake.send_webhook(PUBLIC_URL, RINGING)).status_code == 401
            # Signed for the URL without our query, delivered with it: refused.
            signed_elsewhere = fake.sign(PUBLIC_URL, RINGING, "42")
            moved = await fake.send_webhook(PUBLIC_URL + "?flow=answer", RINGING, headers={
                "X-Plivo-Signature-V3": signed_elsewhere, "X-Plivo-Signature-V3-Nonce": "42"})
            assert moved.status_code == 401
            assert r.manager.get(UUID) is None  # nothing was registered by any of them
            ok = await fake.send_webhook(PUBLIC_URL, RINGING)
            assert ok.status_code == 200 and "<Response" in ok.text
            assert r.manager.get(UUID) is not None
    await asyncio.wait_for(run(), BOUND)


async def test_unsigned_request_is_refused_before_its_body_is_read(tmp_path: Path) -> None:
    async def run() -> None:
        async with rig(tmp_path) as r:
            reader, writer = await asyncio.open_connection("127.0.0.1", r.webhook_port)
            writer.write(b"POST /voice/webhook HTTP/1.1\r\nHost: voice.example.com\r\n"
                         b"Content-Type: application/x-www-form-urlencoded\r\n"
                         b"X-Plivo-Signature-V2: abc\r\n"  # a signature without its nonce
                         b"Content-Length: 60000\r\n\r\nCallUUID=u1")
            await writer.drain()
            status = await asyncio.wait_for(reader.readline(), 3)
            assert status.startswith(b"HTTP/1.1 401")
            writer.close()
    await asyncio.wait_for(run(), BOUND)


async def test_oversized_body_is_refused(tmp_path: Path) -> None:
    async def run() -> None:
        async with rig(tmp_path) as r:
            big = dict(RINGING, Junk="x" * (70 * 1024))
            assert (await r.fake.send_webhook(PUBLIC_URL, big)).status_code == 413
    await asyncio.wait_for(run(), BOUND)


async def test_several_signatures_pass_and_v2_only_stops_at_the_gate(tmp_path: Path) -> None:
    async def run() -> None:
        async with rig(tmp_path, inboundPolicy="open") as r:
            # An account with two auth tokens: one signature per token, any may match.
            r.fake.sign_also_with(["an-old-token", "another-token"])
            placed = await r.rpc("voicecall.initiate", {
                "to": CALLEE, "message": "Multi-token.", "mode": "notify"})
            await r.wait_call(placed["callId"], lambda c: c.terminal)
            answer = r.fake.latest_call.callbacks("answer")[0]
            assert (answer.signature or "").count(",") == 2 and answer.status_code == 200
            # V2 only (no V3 headers): the header gate accepts V2 + nonce too, and the
            # V2 signature is then verified like V3.
            r.fake.signature_versions(v3=False, v2=True)
            v2_only = await r.fake.send_webhook(PUBLIC_URL, RINGING)
            assert v2_only.status_code == 200
            assert r.manager.get(UUID) is not None
    await asyncio.wait_for(run(), BOUND)


async def test_replay_gets_the_same_xml_without_side_effects(tmp_path: Path) -> None:
    callee = CalleeScript(replies=["Yes please.", "Goodbye."])

    async def run() -> None:
        async with rig(tmp_path, callee=callee) as r:
            placed = await r.rpc("voicecall.initiate", {
                "to": CALLEE, "message": "Shall I book it?", "mode": "conversation"})
            call = await r.wait_call(placed["callId"], lambda c: c.terminal)
            fake_call = r.fake.latest_call
            await r.fake.wait_for(lambda: fake_call.callbacks("hangup"))
            before = len(call.transcript)
            events_before = len(r.events())
            requests_before = len(r.fake.requests)
            for original in (fake_call.callbacks("answer")[0],
                             fake_call.callbacks("getinput")[0]):
                for fresh_nonce in (False, True):
                    # Byte-for-byte (an attacker's replay: the gateway's replay cache) or
                    # re-signed with a fresh nonce (Plivo's retry: the carrier's cache).
                    resp = await r.fake.replay(original, fresh_nonce=fresh_nonce)
                    assert resp.status_code == 200
                    assert resp.text == original.response_body
            after = r.manager.get(placed["callId"])
            assert after is not None and len(after.transcript) == before
            assert len(r.events()) == events_before
            assert len(r.fake.requests) == requests_before  # no REST side effects either
    await asyncio.wait_for(run(), BOUND)


async def test_plivo_retry_during_a_call_is_answered_once(tmp_path: Path) -> None:
    callee = CalleeScript(replies=["Yes, go on.", "Goodbye."])

    async def run() -> None:
        async with rig(tmp_path, callee=callee) as r:
            r.fake.retry_next("answer")
            r.fake.retry_next("getinput")
            placed = await r.rpc("voicecall.initiate", {
                "to": CALLEE, "message": "Hello there.", "mode": "conversation"})
            call = await r.wait_call(placed["callId"], lambda c: c.terminal)
            fake_call = r.fake.latest_call
            for kind in ("answer", "getinput"):
                first = fake_call.callbacks(kind)[0]
                [retry] = fake_call.callbacks(kind + "-retry")
                assert retry.nonce != first.nonce and retry.status_code == 200
                assert retry.response_body == first.response_body
            users = [t.text for t in call.transcript if t.speaker == "user"]
            assert users == ["Yes, go on.", "Goodbye."]
            assert [t.text for t in call.transcript].count("Hello there.") == 1
    await asyncio.wait_for(run(), BOUND)


async def test_stale_turn_token_does_not_satisfy_a_newer_turn(tmp_path: Path) -> None:
    callee = CalleeScript(replies=["First answer."])

    async def run() -> None:
        async with rig(tmp_path, callee=callee) as r:
            placed = await r.rpc("voicecall.initiate", {
                "to": CALLEE, "message": "Question one?", "mode": "conversation"})
            call_id = placed["callId"]
            fake_call = r.fake.latest_call
            await r.fake.wait_for(lambda: len(fake_call.callbacks("getinput")) == 1)
            await r.wait_call(call_id, lambda c: c.state is CallState.LISTENING
                              and len(c.transcript) >= 3)
            first = fake_call.callbacks("getinput")[0]
            # A validly signed callback carrying the old turn's token.
            started = time.monotonic()
            resp = await r.fake.send_webhook(first.url, dict(first.params,
                                                             Speech="Injected words"))
            assert resp.status_code == 200 and "<GetInput" in resp.text
            assert time.monotonic() - started < 2.0  # answered at once, not held
            await asyncio.sleep(0.2)
            call = r.manager.get(call_id)
            assert call is not None
            assert "Injected words" not in [t.text for t in call.transcript]
            await r.rpc("voicecall.end", {"callId": call_id})
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
            assert [x.status for x in r.fake.requests] == [429, 503, 201]
    await asyncio.wait_for(run(), BOUND)
