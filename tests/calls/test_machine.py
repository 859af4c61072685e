import pytest

from voicecall.calls import (
    TERMINAL_STATES,
    TRANSITIONS,
    Call,
    CallEvent,
    CallState,
    can_transition,
    session_key_for,
    transition,
)
from voicecall.calls.machine import state_diagram
from voicecall.errors import CallStateError

S = CallState


def make(state: CallState = S.INITIATED, **kw: object) -> Call:
    base = dict(call_id="c1", provider="mock", direction="outbound", state=state,
                from_number="+15550000001", to_number="+15550000002", started_at=1.0)
    base.update(kw)
    return Call(**base)  # type: ignore[arg-type]


def ev(kind: str, **kw: object) -> CallEvent:
    return CallEvent(type=kind, call_id="c1", timestamp=10.0, **kw)  # type: ignore[arg-type]


def test_forward_path_and_cycle() -> None:
    call = make()
    for kind, state in [("call.ringing", S.RINGING), ("call.answered", S.ANSWERED),
                        ("call.active", S.ACTIVE), ("call.speaking", S.SPEAKING),
                        ("call.listening", S.LISTENING), ("call.speaking", S.SPEAKING),
                        ("call.listening", S.LISTENING)]:
        call, _ = transition(call, ev(kind))
        assert call.state is state


def test_answered_sets_time_and_effect_once() -> None:
    call, effects = transition(make(S.RINGING), ev("call.answered"))
    assert call.answered_at == 10.0
    assert [e.kind for e in effects] == ["answered"]
    again, effects2 = transition(call, ev("call.answered"))
    assert again is call and effects2 == []


@pytest.mark.parametrize("src,dst", [(S.ANSWERED, "call.ringing"), (S.ACTIVE, "call.initiated"),
                                     (S.SPEAKING, "call.answered")])
def test_backward_moves_raise(src: CallState, dst: str) -> None:
    with pytest.raises(CallStateError, match="illegal transition"):
        transition(make(src), ev(dst))


@pytest.mark.parametrize("terminal", sorted(TERMINAL_STATES, key=lambda s: s.value))
def test_terminal_absorbs(terminal: CallState) -> None:
    assert TRANSITIONS[terminal] == frozenset()
    with pytest.raises(CallStateError, match="already ended"):
        transition(make(terminal), ev("call.ringing"))


@pytest.mark.parametrize("terminal", sorted(TERMINAL_STATES, key=lambda s: s.value))
def test_every_live_state_may_end(terminal: CallState) -> None:
    for live in (S.INITIATED, S.RINGING, S.ANSWERED, S.ACTIVE, S.SPEAKING, S.LISTENING):
        assert can_transition(live, terminal)
        call, effects = transition(make(live), ev("call.ended", reason=terminal))
        assert call.state is terminal and call.end_reason is terminal and call.ended_at == 10.0
        assert effects[0].kind == "finalize"


def test_end_reason_must_be_terminal() -> None:
    with pytest.raises(CallStateError):
        transition(make(), ev("call.ended", reason=S.RINGING))


def test_final_speech_appends_transcript_and_resolves() -> None:
    call, effects = transition(make(S.SPEAKING),
                               ev("call.speech", transcript="hello", turn_token="t1"))
    assert call.state is S.LISTENING
    assert call.transcript[-1].speaker == "user" and call.transcript[-1].text == "hello"
    assert effects[0].kind == "transcript-final"
    assert effects[0].data == {"transcript": "hello", "turn_token": "t1"}


def test_interim_speech_moves_to_listening_without_transcript() -> None:
    call, effects = transition(make(S.SPEAKING),
                               ev("call.speech", transcript="hel", is_final=False))
    assert call.state is S.LISTENING and call.transcript == () and effects == []


def test_speaking_records_bot_text() -> None:
    call, _ = transition(make(S.ANSWERED), ev("call.speaking", text="Hi there"))
    assert call.transcript[-1].speaker == "bot" and call.transcript[-1].text == "Hi there"


def test_dtmf_recorded_without_state_change() -> None:
    call, effects = transition(make(S.LISTENING), ev("call.dtmf", digits="12#"))
    assert call.state is S.LISTENING and call.dtmf == ("12#",)
    assert effects[0].data == {"digits": "12#"}


def test_error_retryable_vs_fatal() -> None:
    same, effects = transition(make(S.ACTIVE), ev("call.error", error="x", retryable=True))
    assert same.state is S.ACTIVE and effects == []
    dead, _ = transition(make(S.ACTIVE), ev("call.error", error="boom"))
    assert dead.state is S.ERROR and dead.metadata["error"] == "boom"


def test_transition_is_pure() -> None:
    call = make(S.RINGING)
    transition(call, ev("call.answered"))
    assert call.state is S.RINGING and call.answered_at is None


def test_record_round_trip() -> None:
    call, _ = transition(make(S.SPEAKING), ev("call.speech", transcript="hi"))
    call = call.with_metadata(mode="x")
    assert Call.from_dict(call.to_dict()) == call


def test_diagram_is_generated_from_table() -> None:
    text = state_diagram()
    assert "speaking --> listening" in text and "listening --> speaking" in text


@pytest.mark.parametrize("scope,direction,expected", [
    ("per-phone", "outbound", "agent:main:voice:15550000002"),
    ("per-phone", "inbound", "agent:main:voice:15550000001"),
    ("per-call", "outbound", "agent:main:voice:call:abc"),
    ("main", "inbound", "agent:main:main"),
])
def test_session_keys(scope: str, direction: str, expected: str) -> None:
    assert session_key_for(scope, "ABC", direction, "+1 555 000 0001",  # type: ignore[arg-type]
                           "+15550000002") == expected


def test_per_phone_without_number_falls_back_to_call() -> None:
    assert session_key_for("per-phone", "X", "inbound", None, None) == "agent:main:voice:call:x"
    assert session_key_for("per-call", "X", "inbound", None, None, explicit="s1") == \
        "agent:main:s1"
