"""Outbound and inbound Twilio calls end to end through the fake, over real sockets."""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from twe_kit import CALLEE, CALLER, OUR_NUMBER, rig

from voicecall.calls import CallState
from voicecall.testing.fake_twilio import CalleeScript

BOUND = 20.0


async def test_notify_call_sends_inline_twiml_and_completes(tmp_path: Path) -> None:
    async def run() -> None:
        async with rig(tmp_path) as r:
            placed = await r.rpc("voicecall.initiate", {
                "to": CALLEE, "message": "Your table is ready.", "mode": "notify"})
            call = await r.wait_call(placed["callId"], lambda c: c.terminal)
            assert call.state is CallState.COMPLETED
            fake_call = r.fake.latest_call
            create = next(q for q in fake_call.requests if q.method == "POST")
            form = create.form
            # Inline TwiML: no webhook fetch needed for the first message.
            assert "Twiml" in form and "Url" not in form
            assert "<Say" in form["Twiml"] and "<Hangup" in form["Twiml"]
            assert create.getlist("StatusCallbackEvent") == [
                "initiated", "ringing", "answered", "completed"]
            status_url = form["StatusCallback"]
            assert parse_qs(urlsplit(status_url).query)["type"] == ["status"]
            assert fake_call.heard == ["Your table is ready."]
            assert [t.text for t in call.transcript] == ["Your table is ready."]
            # Every webhook the fake sent was accepted (signed against the public URL).
            assert fake_call.webhooks and all(w.status_code == 200 for w in fake_call.webhooks)
    await asyncio.wait_for(run(), BOUND)


async def test_conversation_call_over_gather_turns(tmp_path: Path) -> None:
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
            assert fake_call.heard[0] == "Hello from the clinic. Is now a good time?"
            assert len(fake_call.heard) == 4
            speakers = [(t.speaker, t.text) for t in call.transcript]
            assert speakers[1] == ("user", "Hi, yes, this is a good time.")
            assert speakers[3] == ("user", "Could you tell me the opening hours?")
            assert "9" in speakers[4][1]  # the scripted agent's opening-hours answer
            # Each <Gather> action carried a turn token, a new one per turn.
            gathers = [w for w in fake_call.webhooks if w.kind == "gather"]
            tokens = [parse_qs(urlsplit(w.url).query)["turnToken"][0] for w in gathers]
            assert len(tokens) == 3 and len(set(tokens)) == 3
            # Replies went back in the Gather responses: no REST update per turn.
            updates = [q for q in fake_call.requests if q.method == "POST"
                       and q.path.endswith(f"/Calls/{fake_call.sid}.json")]
            assert all(u.form.get("Status") == "completed" for u in updates)
            turns = [e for e in r.events() if e["type"] == "turn"]
            assert [t["turn"] for t in turns] == [1, 2, 3]
    await asyncio.wait_for(run(), BOUND)


async def test_inbound_allowlisted_caller_gets_greeting_and_answers(tmp_path: Path) -> None:
    callee = CalleeScript(replies=["What are your opening hours?", "Thanks, goodbye."])

    async def run() -> None:
        async with rig(tmp_path, callee=callee, inboundPolicy="allowlist",
                       allowFrom=[CALLER], inboundGreeting="Silver Fox Cards, how can I help?",
                       ) as r:
            sid = await r.fake.place_inbound(CALLER, OUR_NUMBER, r.fake_public_url
                                             if hasattr(r, "fake_public_url") else
                                             "https://voice.example.com/voice/webhook")
            fake_call = r.fake.calls[sid]
            await r.fake.wait_for(lambda: fake_call.status == "completed", 10)
            assert fake_call.heard[0] == "Silver Fox Cards, how can I help?"
            call = r.manager.get(sid)
            assert call is not None and call.direction == "inbound"
            assert call.terminal
            assert [t.text for t in call.transcript if t.speaker == "user"] == [
                "What are your opening hours?", "Thanks, goodbye."]
    await asyncio.wait_for(run(), BOUND)


async def test_inbound_rejected_when_policy_disabled(tmp_path: Path) -> None:
    async def run() -> None:
        async with rig(tmp_path) as r:
            sid = await r.fake.place_inbound(CALLER, OUR_NUMBER,
                                             "https://voice.example.com/voice/webhook")
            fake_call = r.fake.calls[sid]
            await r.fake.wait_for(lambda: fake_call.status not in ("ringing", "in-progress"))
            assert "<Reject" in fake_call.twiml_executed[0]
            call = r.manager.get(sid)
            assert call is not None and call.state is CallState.HANGUP_BOT
            assert call.metadata["rejectionReason"] == "inbound-policy"
            assert fake_call.heard == []
    await asyncio.wait_for(run(), BOUND)


async def test_inbound_allowlist_rejects_unlisted_and_suffix(tmp_path: Path) -> None:
    async def run() -> None:
        async with rig(tmp_path, inboundPolicy="allowlist", allowFrom=["+15550001111"]) as r:
            for caller in ("+15550003333", "+5550001111"):
                sid = await r.fake.place_inbound(caller, OUR_NUMBER,
                                                 "https://voice.example.com/voice/webhook")
                fake_call = r.fake.calls[sid]
                await r.fake.wait_for(lambda fc=fake_call: fc.twiml_executed)
                assert "<Reject" in fake_call.twiml_executed[0]
    await asyncio.wait_for(run(), BOUND)


async def test_pre_connect_dtmf_then_greeting_and_dtmf_after_connect(tmp_path: Path) -> None:
    callee = CalleeScript(replies=["I'm in the meeting now.", "Goodbye."])

    async def run() -> None:
        async with rig(tmp_path, callee=callee, ringTimeoutMs=45000) as r:
            placed = await r.rpc("voicecall.start", {
                "to": CALLEE, "message": "Hi, joining now.", "mode": "conversation",
                "dtmfSequence": "ww1234#"})
            fake_call = r.fake.latest_call
            await r.fake.wait_for(lambda: fake_call.heard, 10)
            create = next(q for q in fake_call.requests if q.method == "POST")
            assert create.form["Timeout"] == "45"  # ringTimeoutMs honoured
            # The digits were played first, then the greeting.
            assert fake_call.digits_played == ["ww1234#"]
            assert fake_call.heard[0] == "Hi, joining now."
            first_doc = fake_call.twiml_executed[0]
            assert "<Play" in first_doc and "<Redirect" in first_doc and "<Say" not in first_doc
            # DTMF after connect (no stream): <Play digits> then back to the webhook.
            # Once the agent has answered and the caller's turn is open:
            await r.wait_call(placed["callId"], lambda c: len(c.transcript) >= 3
                              and c.state is CallState.LISTENING)
            await r.fake.wait_for(lambda: fake_call.verbs[-1:] == ["Redirect"]
                                  or "Gather" in fake_call.verbs[-2:], 5)
            result = await r.rpc("voicecall.dtmf", {"callId": placed["callId"],
                                                    "digits": "9,9"})
            assert result == {"success": True}
            await r.fake.wait_for(lambda: "9w9" in fake_call.digits_played, 5)
            # Control came back to the webhook, which reopened the caller's turn.
            await r.fake.wait_for(lambda: fake_call.verbs[-2:] == ["Gather", "Redirect"]
                                  or "Gather" in fake_call.verbs[-1:], 5)
            assert await r.rpc("voicecall.end", {"callId": placed["callId"]}) == {
                "success": True}
            await r.fake.wait_for(lambda: fake_call.status == "completed", 5)
    await asyncio.wait_for(run(), BOUND)


async def test_dtmf_sequence_requires_conversation_mode(tmp_path: Path) -> None:
    async def run() -> None:
        async with rig(tmp_path) as r:
            import httpx

            from voicecall.gateway.token import read_token
            async with httpx.AsyncClient(trust_env=False) as http:
                resp = await http.post(r.gateway.control_url, headers={
                    "Authorization": f"Bearer {read_token(r.home)}"}, json={
                    "jsonrpc": "2.0", "id": 1, "method": "voicecall.initiate",
                    "params": {"to": CALLEE, "message": "x", "mode": "notify",
                               "dtmfSequence": "123"}})
            err = resp.json()["error"]
            assert err["code"] == -32602 and "conversation" in err["message"]
            assert not r.fake.calls  # nothing was dialled
    await asyncio.wait_for(run(), BOUND)
