"""build_system_prompt and SessionMemory."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from voicecall.agent import SPOKEN_OUTPUT_CONTRACT, SessionMemory, Turn, build_system_prompt
from voicecall.agent.base import ResponseRequest

MakeRequest = Callable[..., ResponseRequest]


def test_default_prompt_follows_reference_then_contract(make_request: MakeRequest) -> None:
    prompt = build_system_prompt(make_request())
    assert prompt == (
        "You are OpenClaw, a helpful voice assistant on a phone call. Keep responses brief "
        "and conversational (1-2 sentences max). Be natural and friendly. The caller's phone "
        "number is +15550001111.\n\n" + SPOKEN_OUTPUT_CONTRACT
    )


def test_history_lines_between_base_and_contract(make_request: MakeRequest) -> None:
    req = make_request(history=[Turn("bot", "Hi, is this a good time?"), Turn("user", "Yes.")])
    prompt = build_system_prompt(req, agent_name="Ava")
    assert prompt.startswith("You are Ava, ")
    assert "\n\nConversation so far:\nYou: Hi, is this a good time?\nCaller: Yes.\n\n" in prompt
    assert prompt.endswith(SPOKEN_OUTPUT_CONTRACT)
    assert build_system_prompt(req, agent_name="Ava") == prompt  # deterministic


def test_override_replaces_base_but_keeps_history_and_contract(make_request: MakeRequest) -> None:
    req = make_request(system_prompt="You are a concise baseball card specialist.",
                       history=[Turn("user", "Got any rookies?")])
    assert build_system_prompt(req) == (
        "You are a concise baseball card specialist.\n\nConversation so far:\n"
        "Caller: Got any rookies?\n\n" + SPOKEN_OUTPUT_CONTRACT
    )


def test_history_can_be_left_to_chat_messages(make_request: MakeRequest) -> None:
    req = make_request(history=[Turn("user", "Hi")])
    assert "Conversation so far" not in build_system_prompt(req, include_history=False)


def test_unknown_caller_and_tools_sentence(make_request: MakeRequest) -> None:
    req = make_request(caller_number=None)
    assert "phone number" not in build_system_prompt(req)
    assert "You have access to tools - use them when helpful." not in build_system_prompt(req)
    assert "You have access to tools - use them when helpful." in build_system_prompt(
        req, has_tools=True)


def test_memory_per_phone_key_survives_calls_per_call_key_starts_fresh() -> None:
    memory = SessionMemory()
    phone = "agent:main:voice:15550001111"
    memory.add(phone, "user", "My name is Ana.")
    memory.add(phone, "bot", "Nice to meet you, Ana.")
    # A second call from the same phone resolves to the same key.
    assert memory.history(phone) == (Turn("user", "My name is Ana."),
                                     Turn("bot", "Nice to meet you, Ana."))
    assert memory.history("agent:main:voice:call:call-2") == ()
    memory.clear(phone)
    assert phone not in memory and memory.history(phone) == ()


def test_memory_keeps_only_the_last_turns() -> None:
    memory = SessionMemory(max_turns=3)
    for i in range(5):
        memory.append("k", Turn("user", str(i)))
    assert [t.text for t in memory.history("k")] == ["2", "3", "4"]


def test_memory_defaults_are_bounded() -> None:
    memory = SessionMemory()
    assert (memory.max_sessions, memory.max_turns) == (1000, 50)
    for i in range(1001):
        memory.add(f"s{i}", "user", "hi")
    for _ in range(60):
        memory.add("s1000", "user", "again")
    assert len(memory) == 1000 and "s0" not in memory
    assert len(memory.history("s1000")) == 50


def test_memory_evicts_least_recently_used() -> None:
    memory = SessionMemory(max_sessions=2)
    memory.add("a", "user", "1")
    memory.add("b", "user", "2")
    memory.history("a")  # reading counts as use
    memory.add("c", "user", "3")
    assert "a" in memory and "c" in memory and "b" not in memory


def test_memory_rejects_nonsense_bounds() -> None:
    with pytest.raises(ValueError):
        SessionMemory(max_turns=0)


def test_public_names() -> None:
    import voicecall.agent as agent

    assert sorted(agent.__all__) == sorted([
        "extract_spoken", "SPOKEN_OUTPUT_CONTRACT", "Turn", "ResponseRequest", "ResponseResult",
        "Responder", "SessionMemory", "build_system_prompt", "OpenAICompatResponder",
        "ScriptedResponder", "make_responder",
    ])
    assert all(hasattr(agent, name) for name in agent.__all__)
