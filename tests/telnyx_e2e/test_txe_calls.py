"""Outbound and inbound Telnyx calls end to end through the fake, over real sockets."""

from __future__ import annotations

import asyncio
from pathlib import Path

from txe_kit import CALLEE, CALLER, CONNECTION_ID, OUR_NUMBER, PUBLIC_URL, rig

from voicecall.calls import CallState
from voicecall.carriers.telnyx import decode_client_state
from voicecall.testing.fake_telnyx import CalleeScript, Press

BOUND = 20.0


async def test_notify_call_speaks_then_hangs_up(tmp_path: Path) -> None:
    async def run() -> None:
        async with rig(tmp_path) as r:
            placed = await r.rpc("voicecall.initiate", {
                "to": CALLEE, "message": "Your table is ready.", "mode": "notify"})
            call = await r.wait_call(placed["callId"], lambda c: c.terminal)
            assert call.state is CallState.COMPLETED
            fake_call = r.fake.latest_call
            dial = fake_call.dial_body
            assert dial["connection_id"] == CONNECTION_ID
            assert (dial["to"], dial["from"]) == (CALLEE, OUR_NUMBER)
            assert dial["webhook_url"] == PUBLIC_URL and dial["webhook_url_method"] == "POST"
            assert decode_client_state(dial["client_state"]).call_id == placed["callId"]
            assert dial["command_id"] == f"voicecall-dial-{placed['callId']}"
            assert "stream_url" not in dial  # streaming is off
            # Spoken with actions/speak, heard to the end (call.speak.ended), then hung up.
            assert fake_call.actions == ["dial", "speak", "hangup"]
            assert fake_call.heard == ["Your table is ready."]
            assert fake_call.hung_up_by == "api" and fake_call.hangup_cause == "normal_clearing"
            assert [t.text for t in call.transcript] == ["Your table is ready."]
            # Every webhook the fake sent was accepted (Ed25519-signed with its key).
            assert fake_call.webhooks and all(w.status_code == 200 for w in fake_call.webhooks)
            assert fake_call.errors == []
    await asyncio.wait_for(run(), BOUND)


async def test_conversation_call_over_transcription_turns(tmp_path: Path) -> None:
    callee = CalleeScript(replies=["Hi, yes, this is a good time.",
                                   "Could you tell me the opening hours?",
                                   "Great, thank you. Goodbye."], interim=True)

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
            assert "9" in speakers[4][1]
            # Interim results are not turns: exactly three user entries.
            assert len([s for s in speakers if s[0] == "user"]) == 3
            # One transcription window per turn, each with a new turn token in client_state,
            # opened only after the speech before it was heard (speak.ended).
            starts = fake_call.action_bodies("transcription_start")
            tokens = [decode_client_state(b["client_state"]).turn_token for b in starts]
            assert len(tokens) == 3 and len(set(tokens)) == 3 and None not in tokens
            assert starts[0]["transcription_engine_config"]["language"] == "en"
            await r.fake.wait_for(lambda: fake_call.actions.count("transcription_stop") == 3)
            kinds = [w.kind for w in fake_call.webhooks]
            first_transcript = kinds.index("call.transcription")
            assert "call.speak.ended" in kinds[:first_transcript]
            # Speak command ids are distinct (Telnyx drops a repeated one).
            speak_ids = [b["command_id"] for b in fake_call.action_bodies("speak")]
            assert len(set(speak_ids)) == len(speak_ids) == 4
            turns = [e for e in r.events() if e["type"] == "turn"]
            assert [t["turn"] for t in turns] == [1, 2, 3]
            assert fake_call.errors == []
    await asyncio.wait_for(run(), BOUND)


async def test_inbound_allowlisted_caller_is_answered_and_greeted(tmp_path: Path) -> None:
    callee = CalleeScript(replies=["What are your opening hours?", "Thanks, goodbye."])

    async def run() -> None:
        async with rig(tmp_path, callee=callee, inboundPolicy="allowlist",
                       allowFrom=[CALLER], inboundGreeting="Silver Fox Cards, how can I help?",
                       ) as r:
            ccid = await r.fake.place_inbound(CALLER, OUR_NUMBER)
            fake_call = r.fake.calls[ccid]
            await r.fake.wait_for(lambda: not fake_call.is_alive, 10)
            registered = r.manager.get(ccid)
            assert registered is not None and registered.direction == "inbound"
            call = await r.wait_call(registered.call_id, lambda c: c.terminal)
            # The reference plugin's most reported bug: the call must be answered.
            assert fake_call.actions[0] == "answer" and fake_call.answered is not None
            answer = fake_call.action_bodies("answer")[0]
            assert answer["command_id"] == f"voicecall-answer-{call.call_id}"
            assert decode_client_state(answer["client_state"]).call_id == call.call_id
            assert fake_call.heard[0] == "Silver Fox Cards, how can I help?"
            assert [t.text for t in call.transcript if t.speaker == "user"] == [
                "What are your opening hours?", "Thanks, goodbye."]
            assert fake_call.errors == []
    await asyncio.wait_for(run(), BOUND)


async def test_inbound_rejected_when_policy_disabled(tmp_path: Path) -> None:
    async def run() -> None:
        async with rig(tmp_path) as r:
            ccid = await r.fake.place_inbound(CALLER, OUR_NUMBER)
            fake_call = r.fake.calls[ccid]
            await r.fake.wait_for(lambda: not fake_call.is_alive)
            # Refused before it was ever answered: actions/reject, never actions/answer.
            assert fake_call.actions == ["reject"]
            assert fake_call.rejected_cause == "CALL_REJECTED"
            assert fake_call.answered is None and fake_call.hangup_cause == "call_rejected"
            call = r.manager.get(ccid)
            assert call is not None and call.state is CallState.HANGUP_BOT
            assert call.metadata["rejectionReason"] == "inbound-policy"
            assert fake_call.heard == []
    await asyncio.wait_for(run(), BOUND)


async def test_inbound_allowlist_rejects_unlisted_and_suffix(tmp_path: Path) -> None:
    async def run() -> None:
        async with rig(tmp_path, inboundPolicy="allowlist", allowFrom=["+15550001111"]) as r:
            for caller in ("+15550003333", "+5550001111"):
                ccid = await r.fake.place_inbound(caller, OUR_NUMBER)
                fake_call = r.fake.calls[ccid]
                await r.fake.wait_for(lambda fc=fake_call: not fc.is_alive)
                assert fake_call.actions == ["reject"] and fake_call.answered is None
    await asyncio.wait_for(run(), BOUND)


async def test_pre_connect_dtmf_then_greeting_and_dtmf_after_connect(tmp_path: Path) -> None:
    callee = CalleeScript(replies=["I'm in the meeting now."])

    async def run() -> None:
        async with rig(tmp_path, callee=callee, ringTimeoutMs=45000) as r:
            # Digits only make sense in a conversation: refused before anything is dialled.
            doc = await r.rpc_raw("voicecall.initiate", {
                "to": CALLEE, "message": "x", "mode": "notify", "dtmfSequence": "123"})
            assert doc["error"]["code"] == -32602 and "conversation" in doc["error"]["message"]
            assert not r.fake.calls
            placed = await r.rpc("voicecall.start", {
                "to": CALLEE, "message": "Hi, joining now.", "mode": "conversation",
                "dtmfSequence": "1,2#"})
            fake_call = r.fake.latest_call
            await r.fake.wait_for(lambda: fake_call.heard, 10)
            assert fake_call.dial_body["timeout_secs"] == 45  # ringTimeoutMs honoured
            # Not silently dropped (reference issue #152577): sent once answered, and the
            # greeting only started after the digits had played.
            assert fake_call.timeline[:2] == [("dtmf", "1w2#"), ("speak", "Hi, joining now.")]
            assert fake_call.errors == []  # no speech over our DTMF
            await r.wait_call(placed["callId"], lambda c: len(c.transcript) >= 3
                              and c.state is CallState.LISTENING)
            result = await r.rpc("voicecall.dtmf", {"callId": placed["callId"],
                                                    "digits": "9,9"})
            assert result == {"success": True}
            await r.fake.wait_for(lambda: "9w9" in fake_call.dtmf_received, 5)
            bodies = fake_call.action_bodies("send_dtmf")
            assert [b["digits"] for b in bodies] == ["1w2#", "9w9"]
            assert len({b["command_id"] for b in bodies}) == 2
            assert await r.rpc("voicecall.end", {"callId": placed["callId"]}) == {
                "success": True}
            await r.fake.wait_for(lambda: not fake_call.is_alive, 5)
    await asyncio.wait_for(run(), BOUND)


async def test_caller_keypad_reply_reaches_the_agent(tmp_path: Path) -> None:
    callee = CalleeScript(replies=[Press("42#"), "Goodbye."])

    async def run() -> None:
        async with rig(tmp_path, callee=callee) as r:
            placed = await r.rpc("voicecall.initiate", {
                "to": CALLEE, "message": "Enter your PIN.", "mode": "conversation"})
            call = await r.wait_call(placed["callId"], lambda c: len(c.dtmf) >= 3)
            assert "".join(call.dtmf) == "42#"
            session = call.session_key or call.call_id
            await r.fake.wait_for(lambda: any(
                t.text == "[keypad] 42#" for t in r.manager.memory.history(session)), 5)
            # The agent answered the keypad turn and the caller's next turn was opened.
            await r.wait_call(placed["callId"], lambda c: c.terminal)
            assert r.fake.latest_call.callee_said == ["dtmf:42#", "Goodbye."]
    await asyncio.wait_for(run(), BOUND)


async def test_busy_and_unanswered_outbound_calls_end_with_the_carrier_reason(
        tmp_path: Path) -> None:
    async def run() -> None:
        async with rig(tmp_path, maxConcurrentCalls=3) as r:
            cases = {"+15550003001": ("busy", CallState.BUSY),
                     "+15550003002": ("no-answer", CallState.NO_ANSWER),
                     "+15550003003": ("rejected", CallState.BUSY)}
            for number, (answer, _) in cases.items():
                r.fake.callees[number] = CalleeScript(answer=answer)
            placed = {number: await r.rpc("voicecall.initiate", {
                "to": number, "message": "Hello?", "mode": "notify"}) for number in cases}
            for number, (_, state) in cases.items():
                call = await r.wait_call(placed[number]["callId"], lambda c: c.terminal)
                assert call.state is state, number
            assert all(c.heard == [] for c in r.fake.calls.values())
    await asyncio.wait_for(run(), BOUND)
