"""ConsultFlow timing rules in isolation (a stub bridge and agent): settle cap, no carry-over."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Mapping
from types import SimpleNamespace
from typing import Any

import pytest

from voicecall.config import VoiceCallConfig
from voicecall.gateway.realtime.consult import question_of
from voicecall.gateway.realtime.consult_flow import (
    ConsultFlow,
    forced_prompt,
    limit_speakable,
    same_question,
    working_result,
)
from voicecall.speech.realtime.base import RealtimeCapabilities


class StubSession:
    def __init__(self) -> None:
        self.results: list[tuple[str, str, bool, bool]] = []
        self.texts: list[str] = []

    async def send_tool_result(self, call_id: str, output: str, *, will_continue: bool = False,
                               respond: bool = True) -> None:
        self.results.append((call_id, output, will_continue, respond))

    async def send_text(self, text: str) -> None:
        self.texts.append(text)


class StubHost:
    def __init__(self, continuation: bool = True) -> None:
        self.provider = SimpleNamespace(
            capabilities=RealtimeCapabilities(tool_continuation=continuation))
        self.session = StubSession()
        self.clears = 0
        self.tasks: set[asyncio.Task[Any]] = set()

    def spawn_task(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        return task

    async def clear_outbound(self) -> None:
        self.clears += 1


class StubConsulter:
    """The agent side: answers ``answer`` after ``delay``; records the questions."""

    def __init__(self, delay: float = 0.0, **realtime: Any) -> None:
        self.config = VoiceCallConfig.model_validate({"realtime": realtime})
        self.call_id = "call-1"
        self.manager = SimpleNamespace(get=lambda _: SimpleNamespace(terminal=False))
        self.delay = delay
        self.asked: list[str] = []

    async def consult(self, args: Mapping[str, Any], fallback: str | None = None) -> str:
        self.asked.append(question_of(args, fallback or ""))
        await asyncio.sleep(self.delay)
        return "The answer."


def flow(host: StubHost, consulter: StubConsulter) -> ConsultFlow:
    return ConsultFlow(host, consulter)  # type: ignore[arg-type]


async def test_settle_is_capped_at_one_second_while_the_caller_keeps_talking() -> None:
    host, consulter = StubHost(), StubConsulter()
    f = flow(host, consulter)

    async def talk() -> None:
        for word in "and also on the weekend if you are open then".split() * 4:
            f.note_partial(f" {word}")
            await asyncio.sleep(0.05)

    f.note_partial("When do you open")
    talking = asyncio.get_running_loop().create_task(talk())
    await f.on_tool_call("c1", {})
    talking.cancel()
    assert 0.95 <= f.settle_waits[0] <= 1.15
    # The question the model left out is the caller's words, as far as heard.
    assert consulter.asked[0].startswith("When do you open and also")
    assert [(r[0], r[2]) for r in host.session.results] == [("c1", True), ("c1", False)]
    assert host.session.results[0][1] == working_result()


async def test_settle_waits_350_ms_after_the_last_partial() -> None:
    host, consulter = StubHost(), StubConsulter()
    f = flow(host, consulter)
    f.note_partial("When do you open")
    await asyncio.sleep(0.1)
    await f.on_tool_call("c1", {"question": "When do you open?"})
    assert 0.23 <= f.settle_waits[0] <= 0.3        # 350 ms after the partial, 100 ms spent
    f.note_final("When do you open?")              # a final transcript ends the wait
    await f.on_tool_call("c2", {"question": "Saturdays?"})
    assert f.settle_waits[1] < 0.02


async def test_no_interim_without_continuation_or_with_fast_context() -> None:
    for host, consulter in ((StubHost(continuation=False), StubConsulter()),
                            (StubHost(), StubConsulter(fastContext={"enabled": True}))):
        await flow(host, consulter).on_tool_call("c1", {"question": "q"})
        assert host.session.results == [("c1", "The answer.", False, True)]


async def test_an_armed_forced_consult_does_not_carry_over_to_the_next_turn() -> None:
    host, consulter = StubHost(), StubConsulter(consultPolicy="always")
    f = flow(host, consulter)
    f.note_final("When do you open?")
    await asyncio.sleep(0.05)
    f.note_final("Actually, do you take walk-ins?")   # next turn before the 200 ms passed
    await asyncio.sleep(0.5)
    assert consulter.asked == ["Actually, do you take walk-ins?"]
    assert f.forced_questions == ["Actually, do you take walk-ins?"]
    assert host.session.texts == [forced_prompt("The answer.")]
    assert host.clears == 2                # before the consult and before the answer


async def test_the_model_consulting_within_200_ms_cancels_the_forced_consult() -> None:
    host, consulter = StubHost(), StubConsulter(consultPolicy="always")
    f = flow(host, consulter)
    f.note_final("When do you open?")
    await asyncio.sleep(0.1)
    await f.on_tool_call("c1", {"question": "When does the clinic open?"})
    await asyncio.sleep(0.4)
    assert consulter.asked == ["When does the clinic open?"]
    assert f.forced_questions == [] and host.session.texts == [] and host.clears == 0


async def test_a_tool_call_during_the_forced_consult_shares_its_answer() -> None:
    host, consulter = StubHost(), StubConsulter(delay=0.4, consultPolicy="always")
    f = flow(host, consulter)
    f.note_final("When do you open?")
    await asyncio.sleep(0.3)                        # the forced consult is running
    await f.on_tool_call("c1", {"question": "opening hours"})
    await asyncio.sleep(0.1)
    assert consulter.asked == ["When do you open?"]
    assert host.session.results == [("c1", "The answer.", False, True)]
    assert host.session.texts == []                 # the tool result carried it instead


@pytest.mark.parametrize("policy", [{"consultPolicy": "auto"},
                                    {"consultPolicy": "always", "toolPolicy": "none"}])
async def test_no_forced_consult_unless_always_with_the_tool(policy: dict[str, str]) -> None:
    host, consulter = StubHost(), StubConsulter(**policy)
    f = flow(host, consulter)
    f.note_final("When do you open?")
    await asyncio.sleep(0.4)
    assert consulter.asked == [] and host.session.texts == []


def test_forced_result_is_bounded() -> None:
    long = "word " * 1000
    cut = limit_speakable(long)
    assert len(cut) <= 1800 and cut.endswith(" [truncated]")
    assert limit_speakable(" short ") == "short"
    assert forced_prompt(long).endswith(cut)


def test_question_matching() -> None:
    assert same_question("When do you open?", "when do you OPEN")
    assert same_question("clinic opening hours", "What are the clinic opening hours today?")
    assert same_question("Is the blood test lab open Saturday", "blood test lab Saturday hours")
    assert not same_question("When do you open?", "Do you take walk-ins?")
    assert not same_question("", "anything")
