"""Outbound and inbound Plivo calls end to end through the fake, over real sockets."""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
from ple_kit import CALLEE, CALLER, OUR_NUMBER, PUBLIC_URL, rig

from voicecall.calls import CallState
from voicecall.gateway.token import read_token
from voicecall.testing.fake_plivo import CalleeScript, Timings

BOUND = 20.0


def q(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query)


async def test_notify_call_speaks_in_the_answer_xml_and_completes(tmp_path: Path) -> None:
    async def run() -> None:
        async with rig(tmp_path, outbound={"notifyHangupDelaySec": 2}) as r:
            placed = await r.rpc("voicecall.initiate", {
                "to": CALLEE, "message": "Your table is ready.", "mode": "notify"})
            call = await r.wait_call(placed["callId"], lambda c: c.terminal)
            assert call.state is CallState.COMPLETED
            fake_call = r.fake.latest_call
            [create] = [q_ for q_ in fake_call.requests if q_.method == "POST"]
            body = create.body
            assert body["from"] == OUR_NUMBER[1:] and body["to"] == CALLEE[1:]  # no "+"
            for name, flow in (("answer_url", "answer"), ("ring_url", "ring"),
                               ("hangup_url", "hangup")):
                assert q(body[name]) == {"callId": [placed["callId"]], "flow": [flow]}
                assert body[name.replace("url", "method")] == "POST"
            assert body["ring_timeout"] == 30 and "hangup_on_ring" not in body
            # Plivo's create answer is a request uuid; the CallUUID came with the callbacks
            # and replaced it on the call record.
            assert call.provider_call_id == fake_call.call_uuid != fake_call.request_uuid
            await r.fake.wait_for(lambda: fake_call.callbacks("hangup"))
            answer = fake_call.callbacks("answer")[0]
            assert "<Speak" in answer.response_body and '<Wait length="2"' in \
                answer.response_body and "<Hangup" in answer.response_body
            assert fake_call.heard == ["Your table is ready."]
            assert [t.text for t in call.transcript] == ["Your table is ready."]
            assert all(w.status_code == 200 for w in fake_call.webhooks)
            assert fake_call.hangup_cause == "NORMAL_CLEARING" and not fake_call.errors
    await asyncio.wait_for(run(), BOUND)


async def test_conversation_over_getinput_turns(tmp_path: Path) -> None:
    callee = CalleeScript(replies=["Hi, yes, this is a good time.",
                                   "Could you tell me the opening hours?",
                                   "Great, thank you. Goodbye."])

    async def run() -> None:
        async with rig(tmp_path, callee=callee) as r:
            placed = await r.rpc("voicecall.initiate", {
                "to": CALLEE, "message": "Hello from the clinic. Is now a good time?",
                "mode": "conversation"})
            call = await r.wait_call(placed["callId"], lambda c: c.terminal)
            assert call.state is CallState.HANGUP_BOT  # the agent said goodbye and hung up
            fake_call = r.fake.latest_call
            await r.fake.wait_for(lambda: fake_call.is_terminal)
            assert fake_call.heard[0] == "Hello from the clinic. Is now a good time?"
            assert len(fake_call.heard) == 4 and fake_call.hung_up_by == "xml"
            speakers = [(t.speaker, t.text) for t in call.transcript]
            assert speakers[1] == ("user", "Hi, yes, this is a good time.")
            assert speakers[3] == ("user", "Could you tell me the opening hours?")
            assert "9" in speakers[4][1]
            # Each GetInput action carried a turn token, a new one per turn.
            actions = fake_call.callbacks("getinput")
            tokens = [q(w.url)["turnToken"][0] for w in actions]
            assert len(tokens) == 3 and len(set(tokens)) == 3
            assert all(w.params["InputType"] == "speech" for w in actions)
            # Replies went back in the action responses: no REST call per turn.
            assert [x.method for x in fake_call.requests] == ["POST"]
            turns = [e for e in r.events() if e["type"] == "turn"]
            assert [t["turn"] for t in turns] == [1, 2, 3]
    await asyncio.wait_for(run(), BOUND)


async def test_conversation_outlives_the_ring_timeout(tmp_path: Path) -> None:
    # ring_timeout (not hangup_on_ring, which the fake runs as a scheduled hang-up from
    # ringing, as Plivo's core does) bounds only the ringing.
    callee = CalleeScript(replies=["Yes.", "Tell me more.", "Goodbye."])

    async def run() -> None:
        async with rig(tmp_path, callee=callee, ringTimeoutMs=1500,
                       timings=Timings(reply_delay=0.4)) as r:
            placed = await r.rpc("voicecall.initiate", {
                "to": CALLEE, "message": "Hello?", "mode": "conversation"})
            call = await r.wait_call(placed["callId"], lambda c: c.terminal)
            fake_call = r.fake.latest_call
            await r.fake.wait_for(lambda: fake_call.is_terminal)
            assert fake_call.create_body["ring_timeout"] == 1
            assert (call.ended_at or 0) - (call.answered_at or 0) > 1.0
            assert call.state is CallState.HANGUP_BOT and fake_call.hung_up_by == "xml"
    await asyncio.wait_for(run(), BOUND)


async def test_unanswered_calls_end_with_their_reason(tmp_path: Path) -> None:
    async def run() -> None:
        async with rig(tmp_path) as r:
            for answer, state in (("busy", CallState.BUSY), ("no-answer", CallState.NO_ANSWER),
                                  ("failed", CallState.FAILED)):
                r.fake.callees[CALLEE] = CalleeScript(answer=answer)  # type: ignore[arg-type]
                placed = await r.rpc("voicecall.initiate", {
                    "to": CALLEE, "message": "x", "mode": "notify"})
                call = await r.wait_call(placed["callId"], lambda c: c.terminal)
                assert call.state is state and call.answered_at is None
    await asyncio.wait_for(run(), BOUND)


async def test_inbound_allowlisted_caller_gets_greeting_and_answers(tmp_path: Path) -> None:
    callee = CalleeScript(replies=["What are your opening hours?", "Thanks, goodbye."])

    async def run() -> None:
        async with rig(tmp_path, callee=callee, inboundPolicy="allowlist",
                       allowFrom=[CALLER], inboundGreeting="Silver Fox Cards, how can I help?",
                       ) as r:
            uid = await r.fake.place_inbound(CALLER, OUR_NUMBER, PUBLIC_URL,
                                             hangup_url=PUBLIC_URL + "?flow=hangup")
            fake_call = r.fake.calls[uid]
            await r.fake.wait_for(lambda: fake_call.status == "completed", 10)
            assert fake_call.heard[0] == "Silver Fox Cards, how can I help?"
            call = await r.wait_call(uid, lambda c: c.terminal)
            assert call.direction == "inbound" and call.from_number == CALLER
            assert call.provider_call_id == uid
            assert [t.text for t in call.transcript if t.speaker == "user"] == [
                "What are your opening hours?", "Thanks, goodbye."]
    await asyncio.wait_for(run(), BOUND)


async def test_inbound_rejected_before_answering_when_policy_disabled(tmp_path: Path) -> None:
    async def run() -> None:
        async with rig(tmp_path) as r:
            uid = await r.fake.place_inbound(CALLER, OUR_NUMBER, PUBLIC_URL)
            fake_call = r.fake.calls[uid]
            await r.fake.wait_for(lambda: fake_call.is_terminal)
            assert fake_call.xml_executed[0].endswith('<Response><Hangup reason="rejected" />'
                                                      '</Response>')
            assert fake_call.answered is None and fake_call.hangup_cause == "CALL_REJECTED"
            call = r.manager.get(uid)
            assert call is not None and call.state is CallState.HANGUP_BOT
            assert call.metadata["rejectionReason"] == "inbound-policy"
            assert fake_call.heard == [] and not r.fake.requests  # no REST hang-up needed
    await asyncio.wait_for(run(), BOUND)


async def test_inbound_allowlist_rejects_unlisted_and_suffix(tmp_path: Path) -> None:
    async def run() -> None:
        async with rig(tmp_path, inboundPolicy="allowlist", allowFrom=["+15550001111"]) as r:
            for caller in ("+15550003333", "+5550001111"):
                uid = await r.fake.place_inbound(caller, OUR_NUMBER, PUBLIC_URL)
                fake_call = r.fake.calls[uid]
                await r.fake.wait_for(lambda fc=fake_call: fc.is_terminal)
                assert "<Hangup reason=\"rejected\"" in fake_call.xml_executed[0]
                assert fake_call.answered is None
    await asyncio.wait_for(run(), BOUND)


async def test_pre_connect_dtmf_then_greeting_and_dtmf_after_connect(tmp_path: Path) -> None:
    callee = CalleeScript(replies=["I'm in the meeting now."])

    async def run() -> None:
        async with rig(tmp_path, callee=callee, ringTimeoutMs=45000) as r:
            placed = await r.rpc("voicecall.start", {
                "to": CALLEE, "message": "Hi, joining now.", "mode": "conversation",
                "dtmfSequence": "ww1234#"})
            fake_call = r.fake.latest_call
            await r.fake.wait_for(lambda: fake_call.heard, 10)
            assert fake_call.create_body["ring_timeout"] == 45  # ringTimeoutMs honoured
            # The digits went first (not silently dropped), then the greeting.
            assert fake_call.digits_sent == ["ww1234#"]
            assert fake_call.heard[0] == "Hi, joining now."
            first_doc = fake_call.xml_executed[0]
            assert '<DTMF async="false">ww1234#</DTMF><Redirect' in first_doc
            assert "<Speak" not in first_doc
            # DTMF after connect: the DTMF API, leaving the running GetInput alone.
            live = await r.wait_call(placed["callId"], lambda c: len(c.transcript) >= 3
                                     and c.state is CallState.LISTENING)
            # The CallUUID replaced the request uuid on the call record.
            assert live.provider_call_id == fake_call.call_uuid
            assert r.carrier.call_uuid(live) == fake_call.call_uuid
            result = await r.rpc("voicecall.dtmf", {"callId": placed["callId"],
                                                    "digits": "9,9"})
            assert result == {"success": True}
            await r.fake.wait_for(lambda: "9w9" in fake_call.digits_sent, 5)
            dtmf_req = [x for x in fake_call.requests if x.path.endswith("/DTMF/")]
            assert dtmf_req and dtmf_req[0].body == {"digits": "9w9", "leg": "aleg"}
            assert await r.rpc("voicecall.end", {"callId": placed["callId"]}) == {
                "success": True}
            await r.fake.wait_for(lambda: fake_call.status == "completed", 5)
            assert fake_call.hung_up_by == "api"
            deletes = [x for x in fake_call.requests if x.method == "DELETE"]
            assert deletes[0].path.endswith(f"/Call/{fake_call.call_uuid}/")
    await asyncio.wait_for(run(), BOUND)


async def test_speech_while_nothing_is_pending_goes_out_as_a_transfer(tmp_path: Path) -> None:
    async def run() -> None:
        async with rig(tmp_path, callee=CalleeScript(replies=[]), inboundPolicy="open") as r:
            uid = await r.fake.place_inbound(CALLER, OUR_NUMBER, PUBLIC_URL)
            fake_call = r.fake.calls[uid]
            call = await r.wait_call(uid, lambda c: c.state is CallState.LISTENING)
            await asyncio.sleep(0.3)  # the caller's turn is open, nothing pending
            assert await r.rpc("voicecall.speak", {"callId": call.call_id,
                                                   "message": "Your order shipped."}) == {
                "success": True}
            await r.fake.wait_for(lambda: "Your order shipped." in fake_call.heard, 5)
            transfer = [x for x in fake_call.requests if x.path.endswith(f"/Call/{uid}/")
                        and x.method == "POST"]
            assert transfer and transfer[0].body["legs"] == "aleg"
            assert q(transfer[0].body["aleg_url"])["flow"] == ["doc"]
            assert fake_call.callbacks("transfer")[0].status_code == 200
            assert not fake_call.errors
    await asyncio.wait_for(run(), BOUND)


async def test_dtmf_sequence_requires_conversation_mode(tmp_path: Path) -> None:
    async def run() -> None:
        async with rig(tmp_path) as r, httpx.AsyncClient(trust_env=False) as http:
            resp = await http.post(r.gateway.control_url, headers={
                "Authorization": f"Bearer {read_token(r.home)}"}, json={
                "jsonrpc": "2.0", "id": 1, "method": "voicecall.initiate",
                "params": {"to": CALLEE, "message": "x", "mode": "notify",
                           "dtmfSequence": "123"}})
            err = resp.json()["error"]
            assert err["code"] == -32602 and "conversation" in err["message"]
            assert not r.fake.calls
    await asyncio.wait_for(run(), BOUND)
