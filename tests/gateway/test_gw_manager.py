"""CallManager on the mock carrier: outbound, inbound, operator actions, timers, memory."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from gw_helpers import (
    CALLEE,
    CALLER,
    FAST,
    OUR_NUMBER,
    FakeClock,
    RecordingCarrier,
    RecordingResponder,
    bounded,
    events_of,
    make_config,
    running_manager,
    states_of,
    wait_ended,
    wait_state,
    wait_until,
)

from voicecall.calls import CallEvent, CallState
from voicecall.carriers.mock import MockTimings
from voicecall.config import load_config
from voicecall.errors import (
    CallNotFoundError,
    CallStateError,
    CarrierError,
    StoreError,
    UsageError,
)
from voicecall.store import SqliteCallStore

SLOW_REPLY = MockTimings(ring_delay_ms=5, answer_delay_ms=5, reply_delay_ms=300,
                         speak_ms_per_char=0)


# ---------------------------------------------------------------------------- outbound

@bounded(8)
async def test_conversation_call_completes_with_ordered_transcript_and_turns(
        tmp_path: Path) -> None:
    # Config from a JSON5 file, the way the gateway loads it.
    cfg_file = tmp_path / "config.json5"
    cfg_file.write_text("""{
      provider: "mock",          // offline carrier
      fromNumber: "+15550100100",
      outbound: {defaultMode: "conversation"},
    }""")
    cfg = load_config(cfg_file, env={}).config
    replies = ["Hi, yes, this is a good time.", "Could you tell me the opening hours?",
               "Great, thank you. Goodbye."]
    carrier = RecordingCarrier(FAST, replies)
    responder = RecordingResponder()
    async with running_manager(tmp_path, cfg, carrier, responder) as m:
        call = await m.initiate(CALLEE, "Hello! Is now a good time?")
        assert call.mode == "conversation" and call.provider_call_id == f"mock-{call.call_id}"
        ended = await wait_ended(m, call.call_id)

    # The scripted agent says goodbye and hangs up after the third caller turn.
    assert ended.state is CallState.HANGUP_BOT and ended.end_reason is CallState.HANGUP_BOT
    spoken = [(t.speaker, t.text) for t in ended.transcript]
    assert spoken == [
        ("bot", "Hello! Is now a good time?"),
        ("user", replies[0]),
        ("bot", "Wonderful. I'm calling to share our updated opening hours and answer any "
                "questions. What would you like to know?"),
        ("user", replies[1]),
        ("bot", "Of course. We're open from 9 a.m. to 5 p.m., Monday to Friday."),
        ("user", replies[2]),
        ("bot", "Thank you for your time. Goodbye!"),
    ]
    callee = carrier.callees[ended.provider_call_id or ""]
    # Replies are played sentence by sentence, so speech starts after the first one.
    assert " ".join(callee.heard) == " ".join(text for who, text in spoken if who == "bot")
    assert callee.heard[1:3] == [
        "Wonderful. I'm calling to share our updated opening hours and answer any questions.",
        "What would you like to know?"]
    assert [r.user_text for r in responder.requests] == replies

    states = states_of(tmp_path, call.call_id)
    assert states[:4] == ["initiated", "ringing", "answered", "speaking"]
    assert states[-1] == "hangup-bot"
    turns = events_of(tmp_path, call.call_id, "turn")
    assert [t["turn"] for t in turns] == [1, 2, 3]
    assert all(t["kind"] == "auto" and t["latencyMs"] >= 0 and t["listenWaitMs"] >= 0
               for t in turns)
    transcript = [(r["speaker"], r["text"]) for r in events_of(tmp_path, call.call_id,
                                                               "transcript")]
    assert transcript == spoken
    # Events carry strictly increasing seq numbers.
    seqs = [r["seq"] for r in events_of(tmp_path)]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    # The snapshot in SQLite agrees with the live view.
    with SqliteCallStore(tmp_path) as store:
        stored = store.get(call.call_id)
    assert stored is not None and stored.transcript == ended.transcript


@bounded()
async def test_notify_speaks_then_hangs_up_completed(tmp_path: Path) -> None:
    cfg = make_config(outbound={"defaultMode": "notify", "notifyHangupDelaySec": 0})
    carrier = RecordingCarrier(FAST, ["this should never be asked for"])
    async with running_manager(tmp_path, cfg, carrier) as m:
        call = await m.initiate(CALLEE, "Your order has shipped.")
        assert call.mode == "notify"
        ended = await wait_ended(m, call.call_id)
    assert ended.end_reason is CallState.COMPLETED
    assert [(t.speaker, t.text) for t in ended.transcript] == [
        ("bot", "Your order has shipped.")]
    assert carrier.callees[f"mock-{call.call_id}"].heard == ["Your order has shipped."]
    assert carrier.listen_tokens == []  # a notify call never listens
    assert carrier.hangups == [f"mock-{call.call_id}"]
    assert "initialMessage" not in ended.metadata  # deleted after a successful playback
    assert states_of(tmp_path, call.call_id) == [
        "initiated", "ringing", "answered", "speaking", "completed"]


@bounded()
async def test_notify_requires_a_message(tmp_path: Path) -> None:
    async with running_manager(tmp_path, make_config()) as m:
        with pytest.raises(UsageError, match="message is required"):
            await m.initiate(CALLEE, None, "notify")
        with pytest.raises(UsageError, match="E.164"):
            await m.initiate("5550002222", "hi", "notify")
        with pytest.raises(UsageError, match="no destination"):
            await m.initiate(None, "hi", "notify")
        assert m.active_calls() == []


@pytest.mark.parametrize("answer", ["busy", "no-answer", "voicemail"])
@bounded()
async def test_unanswered_outcomes_end_with_their_reason(tmp_path: Path, answer: str) -> None:
    carrier = RecordingCarrier(FAST, answer=answer)
    async with running_manager(tmp_path, make_config(), carrier) as m:
        call = await m.initiate(CALLEE, "hello", "conversation")
        ended = await wait_ended(m, call.call_id)
        assert m.active_calls() == []
    assert ended.state.value == answer and ended.end_reason is CallState(answer)
    assert ended.answered_at is None and ended.transcript == ()
    assert states_of(tmp_path, call.call_id) == ["initiated", "ringing", answer]
    last = events_of(tmp_path, call.call_id, "call.state")[-1]
    assert last["reason"] == answer and last["prev"] == "ringing"


@bounded()
async def test_events_arriving_while_the_dial_is_being_recorded_are_not_lost(
        tmp_path: Path) -> None:
    # Zero delays: the carrier reports ringing/answered while initiate() is still
    # saving the carrier's call id. They must still find the call.
    instant = MockTimings(ring_delay_ms=0, answer_delay_ms=0, reply_delay_ms=0,
                          speak_ms_per_char=0)
    carrier = RecordingCarrier(instant)
    cfg = make_config(outbound={"notifyHangupDelaySec": 0})
    async with running_manager(tmp_path, cfg, carrier) as m:
        for _ in range(20):
            call = await m.initiate(CALLEE, "Quick note.", "notify")
            ended = await wait_ended(m, call.call_id)
            assert ended.end_reason is CallState.COMPLETED


@bounded()
async def test_dtmf_sequence_only_with_conversation(tmp_path: Path) -> None:
    carrier = RecordingCarrier(FAST)
    async with running_manager(tmp_path, make_config(), carrier) as m:
        with pytest.raises(UsageError, match='only valid with mode: "conversation"'):
            await m.initiate(CALLEE, "hi", "notify", dtmf_sequence="123#")
        with pytest.raises(UsageError, match="digits may only contain"):
            await m.initiate(CALLEE, "hi", "conversation", dtmf_sequence="12a")
        assert carrier.dials == [] and m.active_calls() == []
        call = await m.initiate(CALLEE, "hi", "conversation", dtmf_sequence="ww123#")
        assert carrier.dials[0].dtmf_sequence == "ww123#"
        await wait_until(lambda: carrier.callees[f"mock-{call.call_id}"].dtmf_received,
                         what="dtmf on the callee")
        assert carrier.callees[f"mock-{call.call_id}"].dtmf_received == ["ww123#"]


@bounded()
async def test_send_dtmf_validates_and_records(tmp_path: Path) -> None:
    carrier = RecordingCarrier(FAST, hangup_after_replies=False)
    async with running_manager(tmp_path, make_config(), carrier) as m:
        call = await m.initiate(CALLEE, "hi", "conversation")
        await wait_state(m, call.call_id, CallState.LISTENING)
        for bad in ("", "12a", "1 2"):
            with pytest.raises(UsageError, match="digits may only contain"):
                await m.send_dtmf(call.call_id, bad)
        await m.send_dtmf(call.call_id, "12#")
        await m.send_dtmf(call.call_id, "w9,p*")  # pauses the validator accepts
        with pytest.raises(CallNotFoundError):
            await m.send_dtmf("no-such-call", "1")
        assert carrier.callees[f"mock-{call.call_id}"].dtmf_received == ["12#", "w9,p*"]
    out = events_of(tmp_path, call.call_id, "dtmf")
    assert [(r["digits"], r["direction"]) for r in out] == [("12#", "out"), ("w9,p*", "out")]


@bounded()
async def test_inbound_dtmf_from_the_callee_is_recorded(tmp_path: Path) -> None:
    carrier = RecordingCarrier(FAST, hangup_after_replies=False)
    async with running_manager(tmp_path, make_config(), carrier) as m:
        call = await m.initiate(CALLEE, "hi", "conversation")
        await wait_state(m, call.call_id, CallState.LISTENING)
        await carrier.press(f"mock-{call.call_id}", "42")
        assert m.get(call.call_id).dtmf == ("42",)  # type: ignore[union-attr]
    assert [r["digits"] for r in events_of(tmp_path, call.call_id, "dtmf")] == ["42"]


@bounded()
async def test_carrier_errors_and_out_of_order_events(tmp_path: Path) -> None:
    carrier = RecordingCarrier(FAST, hangup_after_replies=False)
    async with running_manager(tmp_path, make_config(), carrier) as m:
        call = await m.initiate(CALLEE, "hi", "conversation")
        await wait_state(m, call.call_id, CallState.LISTENING)
        # Carriers reorder callbacks: a late "ringing" is ignored, not an error.
        await m.handle_event(CallEvent("call.ringing", call_id=call.call_id, timestamp=1.0,
                                       dedupe_key="late-ring"))
        assert m.get(call.call_id).state is CallState.LISTENING  # type: ignore[union-attr]
        # A retryable error changes nothing and stays replayable.
        flaky = CallEvent("call.error", call_id=call.call_id, timestamp=2.0,
                          dedupe_key="err-1", error="try again", retryable=True)
        await m.handle_event(flaky)
        assert not m.store.is_processed("err-1")
        assert m.get(call.call_id).state is CallState.LISTENING  # type: ignore[union-attr]
        await m.handle_event(CallEvent("call.error", call_id=call.call_id, timestamp=3.0,
                                       dedupe_key="err-2", error="SIP 500"))
        ended = m.get(call.call_id)
        assert ended is not None and ended.end_reason is CallState.ERROR
        assert ended.metadata["error"] == "SIP 500"
        assert m.active_calls() == []
    last = events_of(tmp_path, call.call_id, "call.state")[-1]
    assert last["state"] == "error" and last["prev"] == "listening"


@bounded()
async def test_handover_keeps_the_call_for_the_next_start(tmp_path: Path) -> None:
    carrier = RecordingCarrier(FAST, hangup_after_replies=False)
    async with running_manager(tmp_path, make_config(), carrier) as m:
        call = await m.initiate(CALLEE, "hi", "conversation")
        await wait_state(m, call.call_id, CallState.LISTENING)
        await m.aclose(handover=True)  # as a carrier whose calls outlive us would
        assert carrier.hangups == []
        with SqliteCallStore(tmp_path) as store:
            kept = store.get(call.call_id)
        assert kept is not None and not kept.terminal
        assert kept.metadata["handedOverAt"] > 0
    assert carrier.hangups == []
    successor = RecordingCarrier(FAST, remote_status="active")
    async with running_manager(tmp_path, make_config(), successor) as m2:
        assert [c.call_id for c in m2.active_calls()] == [call.call_id]
        await m2.end(call.call_id)
    assert successor.hangups == [f"mock-{call.call_id}"]


# ---------------------------------------------------------------------------- inbound

def _only_call(tmp_path: Path) -> tuple[str, dict[str, object]]:
    with SqliteCallStore(tmp_path) as store:
        calls = store.list(limit=None)
    assert len(calls) == 1, calls
    return calls[0].call_id, calls[0].to_dict()


@bounded()
async def test_inbound_disabled_is_rejected_and_hung_up_once(tmp_path: Path) -> None:
    carrier = RecordingCarrier(FAST, ["hello?"])
    async with running_manager(tmp_path, make_config(), carrier) as m:
        assert m.config.inbound_policy == "disabled"
        pid = await carrier.simulate_inbound(CALLER, OUR_NUMBER)
        assert carrier.hangups == [pid]
        first = carrier.emitted[0]
        # A carrier retrying the same webhook (same dedupe key) ...
        await m.handle_event(first)
        # ... or resending it without one must not hang up a second time.
        await m.handle_event(CallEvent("call.initiated", provider_call_id=pid,
                                       direction="inbound", from_number=CALLER,
                                       to_number=OUR_NUMBER))
        assert carrier.hangups == [pid]
        assert m.active_calls() == []
        await asyncio.sleep(0.03)  # the simulated caller never gets answered
        assert not any(e.type == "call.answered" for e in carrier.emitted)
    call_id, rec = _only_call(tmp_path)
    assert rec["state"] == "hangup-bot" and rec["endReason"] == "hangup-bot"
    assert rec["direction"] == "inbound" and rec["providerCallId"] == pid
    assert rec["metadata"] == {"rejectionReason": "inbound-policy"}
    assert states_of(tmp_path, call_id) == ["hangup-bot"]


@bounded()
async def test_rejection_hangup_is_retried_when_the_carrier_failed(tmp_path: Path) -> None:
    carrier = RecordingCarrier(FAST)
    carrier.fail_hangups = 1
    async with running_manager(tmp_path, make_config(), carrier) as m:
        ev = CallEvent("call.initiated", provider_call_id="PX-1", timestamp=1.0,
                       dedupe_key="wh-1", direction="inbound", from_number=CALLER,
                       to_number=OUR_NUMBER)
        with pytest.raises(CarrierError):
            await m.handle_event(ev)  # the webhook fails; the carrier will retry it
        assert not m.store.is_processed("wh-1")
        await m.handle_event(ev)
        assert carrier.hangups == ["PX-1", "PX-1"]  # tried again, and it worked
        assert m.store.is_processed("wh-1")
        await m.handle_event(ev)
        await m.handle_event(CallEvent("call.ringing", provider_call_id="PX-1", timestamp=2.0))
        assert carrier.hangups == ["PX-1", "PX-1"]
    _, rec = _only_call(tmp_path)  # one record, not one per delivery
    assert rec["metadata"] == {"rejectionReason": "inbound-policy"}


@bounded()
async def test_concurrent_duplicate_inbound_deliveries_register_one_call(
        tmp_path: Path) -> None:
    carrier = RecordingCarrier(FAST, hangup_after_replies=False)
    async with running_manager(tmp_path, make_config(inboundPolicy="open",
                                                     maxConcurrentCalls=5), carrier) as m:
        for key in ("wh-dup", None):
            pid = f"PX-{key}"
            ev = CallEvent("call.initiated", provider_call_id=pid, timestamp=1.0,
                           dedupe_key=key, direction="inbound", from_number=CALLER,
                           to_number=OUR_NUMBER)
            await asyncio.gather(*(m.handle_event(ev) for _ in range(3)))
            assert [c.provider_call_id for c in m.active_calls()].count(pid) == 1
        assert len(m.active_calls()) == 2


@bounded()
async def test_inbound_allowlist_normalises_and_rejects_suffix_match(tmp_path: Path) -> None:
    cfg = make_config(inboundPolicy="allowlist", allowFrom=[CALLER], inboundGreeting="Hi there!")
    carrier = RecordingCarrier(FAST, ["bye"], hangup_after_replies=True)
    async with running_manager(tmp_path, cfg, carrier) as m:
        # A suffix of an allowed number is a different number.
        stranger = await carrier.simulate_inbound("+5550001111", OUR_NUMBER)
        assert carrier.hangups == [stranger]
        # Formatting noise around an allowed number is fine.
        pid = await carrier.simulate_inbound("+1 555 000 1111", OUR_NUMBER)
        call = m.get(pid)
        assert call is not None and not call.terminal and call.direction == "inbound"
        assert call.mode == "conversation" and call.state is CallState.RINGING
        await wait_until(lambda: carrier.callees[pid].heard, what="the greeting")
        assert carrier.callees[pid].heard[0] == "Hi there!"
        assert carrier.hangups == [stranger]
        rejected = m.get(stranger)
        assert rejected is not None and rejected.metadata["rejectionReason"] == "inbound-policy"


@bounded()
async def test_inbound_open_accepts_anyone_and_converses(tmp_path: Path) -> None:
    cfg = make_config(inboundPolicy="open")
    carrier = RecordingCarrier(FAST, ["What are your opening hours?", "Goodbye"])
    async with running_manager(tmp_path, cfg, carrier) as m:
        pid = await carrier.simulate_inbound("+447700900123", OUR_NUMBER)
        call = m.get(pid)
        assert call is not None
        ended = await wait_ended(m, call.call_id)
    assert [t.speaker for t in ended.transcript] == ["bot", "user", "bot", "user", "bot"]
    assert ended.transcript[0].text == "Hello! How can I help you today?"
    assert ended.end_reason is CallState.HANGUP_BOT
    assert carrier.hangups == [pid]


@bounded()
async def test_inbound_number_route_greeting_and_route_key(tmp_path: Path) -> None:
    cfg = make_config(inboundPolicy="open", inboundGreeting="Main line, hello.",
                      numbers={OUR_NUMBER: {"inboundGreeting": "Sales desk, how can I help?",
                                            "responseSystemPrompt": "You sell things."}})
    carrier = RecordingCarrier(FAST, ["Do you have any prices?"], hangup_after_replies=False)
    responder = RecordingResponder()
    async with running_manager(tmp_path, cfg, carrier, responder) as m:
        routed = await carrier.simulate_inbound(CALLER, "+1 (555) 000-9999")
        await wait_until(lambda: responder.requests, what="the agent to be asked")
        call = m.get(routed)
        assert call is not None
        assert call.number_route_key == OUR_NUMBER
        assert call.metadata["numberRouteKey"] == OUR_NUMBER
        assert carrier.callees[routed].heard[0] == "Sales desk, how can I help?"
        assert responder.requests[0].system_prompt == "You sell things."
        assert responder.requests[0].caller_number == CALLER
        await m.end(call.call_id)

        other = await carrier.simulate_inbound(CALLER, "+15550007777")
        await wait_until(lambda: carrier.callees[other].heard, what="the main greeting")
        assert carrier.callees[other].heard[0] == "Main line, hello."
        other_call = m.get(other)
        assert other_call is not None and other_call.number_route_key is None
    with SqliteCallStore(tmp_path) as store:
        stored = store.get(call.call_id)
    assert stored is not None and stored.number_route_key == OUR_NUMBER


@bounded()
async def test_max_concurrent_calls(tmp_path: Path) -> None:
    cfg = make_config(maxConcurrentCalls=1, inboundPolicy="open")
    carrier = RecordingCarrier(FAST, hangup_after_replies=False)
    async with running_manager(tmp_path, cfg, carrier) as m:
        first = await m.initiate(CALLEE, "hi", "conversation")
        with pytest.raises(CallStateError) as err:
            await m.initiate("+15550003333", "hi", "conversation")
        assert str(err.value) == "Maximum concurrent calls (1) reached"
        pid = await carrier.simulate_inbound(CALLER, OUR_NUMBER)
        rejected = m.get(pid)
        assert rejected is not None and rejected.metadata["rejectionReason"] == "capacity"
        assert carrier.hangups == [pid]
        await m.end(first.call_id)
        second = await m.initiate("+15550003333", "hi", "conversation")  # capacity is back
        assert [c.call_id for c in m.active_calls()] == [second.call_id]


@bounded()
async def test_dedupe_key_applies_an_event_once(tmp_path: Path) -> None:
    carrier = RecordingCarrier(FAST, hangup_after_replies=False)
    async with running_manager(tmp_path, make_config(), carrier) as m:
        call = await m.initiate(CALLEE, "hi", "conversation")
        await wait_state(m, call.call_id, CallState.LISTENING)
        ev = CallEvent("call.dtmf", provider_call_id=f"mock-{call.call_id}", timestamp=1.0,
                       dedupe_key="carrier-event-7", digits="5")
        await m.handle_event(ev)
        await m.handle_event(ev)
        await m.handle_event(CallEvent("call.dtmf", call_id=call.call_id, timestamp=2.0,
                                       dedupe_key="carrier-event-7", digits="5"))
        assert m.get(call.call_id).dtmf == ("5",)  # type: ignore[union-attr]
        await m.handle_event(CallEvent("call.dtmf", call_id=call.call_id, timestamp=3.0,
                                       dedupe_key="carrier-event-8", digits="6"))
        assert m.get(call.call_id).dtmf == ("5", "6")  # type: ignore[union-attr]
    assert [r["digits"] for r in events_of(tmp_path, call.call_id, "dtmf")] == ["5", "6"]


@bounded()
async def test_stale_turn_token_speech_is_ignored(tmp_path: Path) -> None:
    carrier = RecordingCarrier(FAST, hangup_after_replies=False)  # the callee stays silent
    responder = RecordingResponder()
    async with running_manager(tmp_path, make_config(), carrier, responder) as m:
        call = await m.initiate(CALLEE, "hi", "conversation")
        await wait_state(m, call.call_id, CallState.LISTENING)
        await wait_until(lambda: carrier.listen_tokens, what="a listening turn")
        pid = f"mock-{call.call_id}"
        await m.handle_event(CallEvent("call.speech", provider_call_id=pid, timestamp=1.0,
                                       transcript="from an old turn", turn_token="stale"))
        assert [t.text for t in m.get(call.call_id).transcript] == ["hi"]  # type: ignore[union-attr]
        assert responder.requests == []
        await m.handle_event(CallEvent("call.speech", provider_call_id=pid, timestamp=2.0,
                                       transcript="what are your hours",
                                       turn_token=carrier.listen_tokens[-1]))
        await wait_until(lambda: responder.requests, what="the agent")
        assert responder.requests[0].user_text == "what are your hours"


# ---------------------------------------------------------------------------- operator actions

# Notify calls with a long hangup delay sit quietly after their message: the
# cleanest background for operator-driven turns (no auto-responses interfere).

@bounded()
async def test_continue_returns_the_reply_and_records_a_turn(tmp_path: Path) -> None:
    cfg = make_config(outbound={"notifyHangupDelaySec": 60})
    carrier = RecordingCarrier(FAST, ["Yes, I have one question."])
    async with running_manager(tmp_path, cfg, carrier) as m:
        call = await m.initiate(CALLEE, "Your appointment is tomorrow.", "notify")
        pid = f"mock-{call.call_id}"
        await wait_until(lambda: pid in carrier.callees and carrier.callees[pid].heard,
                         what="the initial message")
        reply = await m.continue_call(call.call_id, "Any questions?")
        assert reply == "Yes, I have one question."
        live = m.get(call.call_id)
        assert live is not None and [t.text for t in live.transcript] == [
            "Your appointment is tomorrow.", "Any questions?", "Yes, I have one question."]
        assert carrier.callees[pid].heard == ["Your appointment is tomorrow.", "Any questions?"]
        # by provider id too
        reply2 = m.continue_call(pid, "")
        with pytest.raises(CallStateError, match="Call ended: hangup-user"):
            await reply2  # the callee has nothing left to say and hangs up
    turns = events_of(tmp_path, call.call_id, "turn")
    assert len(turns) == 1
    assert turns[0]["kind"] == "continue" and turns[0]["turn"] == 1
    assert turns[0]["latencyMs"] >= turns[0]["listenWaitMs"] >= 0


@bounded()
async def test_second_concurrent_continue_is_refused(tmp_path: Path) -> None:
    cfg = make_config(outbound={"notifyHangupDelaySec": 60})
    carrier = RecordingCarrier(SLOW_REPLY, ["First answer."])
    async with running_manager(tmp_path, cfg, carrier) as m:
        call = await m.initiate(CALLEE, "Note.", "notify")
        await wait_state(m, call.call_id, CallState.SPEAKING)
        first = asyncio.create_task(m.continue_call(call.call_id, "Question one?"))
        await wait_until(lambda: carrier.listen_tokens, what="the first turn to listen")
        with pytest.raises(CallStateError) as err:
            await m.continue_call(call.call_id, "Question two?")
        assert str(err.value) == "Already waiting for transcript"
        assert await first == "First answer."
        assert carrier.callees[f"mock-{call.call_id}"].heard == ["Note.", "Question one?"]


@bounded()
async def test_continue_timeout_message(tmp_path: Path) -> None:
    cfg = make_config(outbound={"notifyHangupDelaySec": 60}, transcriptTimeoutMs=60)
    carrier = RecordingCarrier(FAST, hangup_after_replies=False)  # silent callee
    async with running_manager(tmp_path, cfg, carrier) as m:
        call = await m.initiate(CALLEE, "Note.", "notify")
        await wait_state(m, call.call_id, CallState.SPEAKING, CallState.LISTENING)
        with pytest.raises(CallStateError) as err:
            await m.continue_call(call.call_id, "")
        assert str(err.value) == "Timed out waiting for transcript after 60ms"
        # The waiter is released: the next turn may wait again (and reports exact ms).
        with pytest.raises(CallStateError) as err:
            await m.continue_call(call.call_id, "", timeout_ms=1001)
        assert str(err.value) == "Timed out waiting for transcript after 1001ms"
    assert events_of(tmp_path, call.call_id, "turn") == []


@bounded()
async def test_speak_plays_and_records(tmp_path: Path) -> None:
    cfg = make_config(outbound={"notifyHangupDelaySec": 60})
    carrier = RecordingCarrier(FAST)
    async with running_manager(tmp_path, cfg, carrier) as m:
        call = await m.initiate(CALLEE, "Note.", "notify")
        await wait_until(lambda: carrier.callees[f"mock-{call.call_id}"].heard)
        await m.speak(call.call_id, "One more thing.")
        with pytest.raises(UsageError):
            await m.speak(call.call_id, "")
        assert carrier.callees[f"mock-{call.call_id}"].heard == ["Note.", "One more thing."]
    assert [r["text"] for r in events_of(tmp_path, call.call_id, "transcript")] == [
        "Note.", "One more thing."]


@bounded()
async def test_end_on_an_ended_call(tmp_path: Path) -> None:
    carrier = RecordingCarrier(FAST, hangup_after_replies=False)
    async with running_manager(tmp_path, make_config(), carrier) as m:
        call = await m.initiate(CALLEE, "hi", "conversation")
        await wait_state(m, call.call_id, CallState.LISTENING)
        ended = await m.end(call.call_id)
        assert ended.end_reason is CallState.HANGUP_BOT and ended.ended_at is not None
        with pytest.raises(CallStateError) as err:
            await m.end(call.call_id)
        assert str(err.value).startswith(
            "call is not active (last state=hangup-bot, endReason=hangup-bot, endedAt=20")
        with pytest.raises(CallNotFoundError):
            await m.end("nope")
        assert carrier.hangups == [f"mock-{call.call_id}"]


# ---------------------------------------------------------------------------- timers

@bounded()
async def test_max_duration_ends_with_timeout(tmp_path: Path) -> None:
    # maxDurationSeconds is a positive whole number in the file; tests shorten it directly.
    cfg = make_config().model_copy(update={"max_duration_seconds": 0.2})
    carrier = RecordingCarrier(FAST, hangup_after_replies=False)
    async with running_manager(tmp_path, cfg, carrier) as m:
        call = await m.initiate(CALLEE, "hi", "conversation")
        answered = await wait_state(m, call.call_id, CallState.LISTENING)
        ended = await wait_ended(m, call.call_id, limit_s=2.0)
    assert ended.end_reason is CallState.TIMEOUT
    assert answered.answered_at is not None and ended.ended_at is not None
    assert ended.ended_at - answered.answered_at >= 0.19
    assert carrier.hangups == [f"mock-{call.call_id}"]


@bounded()
async def test_stale_reaper_ends_unanswered_calls_only(tmp_path: Path) -> None:
    clock = FakeClock()
    cfg = make_config(staleCallReaperSeconds=1, maxConcurrentCalls=3)
    ghost = "+15550004444"
    carrier = RecordingCarrier(FAST, never_answer=[ghost], hangup_after_replies=False)
    async with running_manager(tmp_path, cfg, carrier, clock=clock) as m:
        stuck = await m.initiate(ghost, "hi", "conversation")
        live = await m.initiate(CALLEE, "hi", "conversation")
        await wait_state(m, stuck.call_id, CallState.RINGING)
        await wait_state(m, live.call_id, CallState.LISTENING)
        assert await m.reap_stale() == []  # nothing is old yet
        clock.advance(5)
        # The background reaper (every staleCallReaperSeconds/4) does the work.
        ended = await wait_ended(m, stuck.call_id, limit_s=2.0)
        assert ended.end_reason is CallState.TIMEOUT
        assert ended.metadata["endNote"] == "stale-call-reaper"
        live_now = m.get(live.call_id)
        assert live_now is not None and not live_now.terminal
        assert await m.reap_stale() == []
        assert carrier.hangups == [f"mock-{stuck.call_id}"]


# ---------------------------------------------------------------------------- memory

@pytest.mark.parametrize("scope", ["per-phone", "per-call"])
@bounded(8)
async def test_session_memory_scope(tmp_path: Path, scope: str) -> None:
    cfg = make_config(sessionScope=scope)
    carrier = RecordingCarrier(FAST, ["Yes, go ahead."])  # then the callee hangs up
    responder = RecordingResponder()
    async with running_manager(tmp_path, cfg, carrier, responder) as m:
        first = await m.initiate(CALLEE, "Hello there.", "conversation")
        await wait_ended(m, first.call_id)
        second = await m.initiate(CALLEE, "Hello again.", "conversation")
        await wait_ended(m, second.call_id)
    assert len(responder.requests) == 2
    r1, r2 = responder.requests
    assert [(t.role, t.text) for t in r1.history] == [("bot", "Hello there.")]
    wonderful = ("Wonderful. I'm calling to share our updated opening hours and answer any "
                 "questions. What would you like to know?")
    if scope == "per-phone":
        assert r1.session_key == r2.session_key == "agent:main:voice:15550002222"
        assert [(t.role, t.text) for t in r2.history] == [
            ("bot", "Hello there."), ("user", "Yes, go ahead."), ("bot", wonderful),
            ("bot", "Hello again.")]
    else:
        assert r1.session_key != r2.session_key
        assert [(t.role, t.text) for t in r2.history] == [("bot", "Hello again.")]


# ---------------------------------------------------------------------------- persistence

class FlakyStore(SqliteCallStore):
    """Fails the next ``fail_next`` snapshot writes, like a full disk would."""

    fail_next = 0

    def save(self, call, events=(), *, processed_key=None):  # type: ignore[no-untyped-def]
        if self.fail_next:
            self.fail_next -= 1
            raise StoreError("disk full")
        return super().save(call, events, processed_key=processed_key)


@bounded()
async def test_a_failed_event_write_stays_retryable(tmp_path: Path) -> None:
    carrier = RecordingCarrier(FAST, hangup_after_replies=False)
    store = FlakyStore(tmp_path)
    try:
        async with running_manager(tmp_path, make_config(), carrier, store=store) as m:
            call = await m.initiate(CALLEE, "hi", "conversation")
            await wait_state(m, call.call_id, CallState.LISTENING)
            ev = CallEvent("call.dtmf", call_id=call.call_id, timestamp=1.0,
                           dedupe_key="retry-me", digits="7")
            store.fail_next = 1
            with pytest.raises(StoreError):
                await m.handle_event(ev)  # the webhook answers 500; the carrier retries
            await m.handle_event(ev)
            assert m.get(call.call_id).dtmf == ("7",)  # type: ignore[union-attr]
            # The key went in with the snapshot: a third delivery is a replay.
            assert store.is_processed("retry-me")
            await m.handle_event(ev)
            assert m.get(call.call_id).dtmf == ("7",)  # type: ignore[union-attr]
    finally:
        store.close()


@bounded()
async def test_failed_initial_write_frees_capacity(tmp_path: Path) -> None:
    carrier = RecordingCarrier(FAST, hangup_after_replies=False)
    store = FlakyStore(tmp_path)
    try:
        async with running_manager(tmp_path, make_config(maxConcurrentCalls=1), carrier,
                                   store=store) as m:
            store.fail_next = 1
            with pytest.raises(StoreError):
                await m.initiate(CALLEE, "hi", "conversation")
            assert carrier.dials == []  # never dialled without a durable record
            assert m.statistics() == {"active": 0, "reserved": 0}
            call = await m.initiate(CALLEE, "hi", "conversation")
            await wait_state(m, call.call_id, CallState.LISTENING)
    finally:
        store.close()


@bounded()
async def test_caller_keypresses_reach_the_agent_as_one_turn(tmp_path: Path) -> None:
    cfg = make_config(inboundPolicy="open")
    carrier = RecordingCarrier(FAST, [], hangup_after_replies=False)
    responder = RecordingResponder()
    async with running_manager(tmp_path, cfg, carrier, responder) as m:
        pid = await carrier.simulate_inbound(CALLER, OUR_NUMBER)
        await wait_until(lambda: carrier.callees[pid].heard, what="the greeting")
        for key in "12":
            await carrier.press(pid, key)
        await carrier.press(pid, "#")  # '#' ends the entry at once
        await wait_until(lambda: responder.requests, what="the keypad turn")
        assert responder.requests[0].user_text == "[keypad] 12#"
        call = m.get(pid)
        assert call is not None and call.dtmf == ("1", "2", "#")
        # Without '#', digits are delivered after a short pause.
        await carrier.press(pid, "7")
        await wait_until(lambda: len(responder.requests) == 2, limit_s=4,
                         what="the timed keypad turn")
        assert responder.requests[1].user_text == "[keypad] 7"
        await m.end(call.call_id)
