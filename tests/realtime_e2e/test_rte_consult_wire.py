"""Tool-result continuation on each provider's wire (provider sessions against the fakes)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from voicecall.speech.realtime import google, openai
from voicecall.speech.realtime.base import (
    RealtimeEvent,
    RealtimeSession,
    RealtimeSetup,
    RealtimeTool,
)
from voicecall.testing.fake_gemini_live import FakeGeminiLive
from voicecall.testing.fake_openai_realtime import (
    CHECKING,
    FakeOpenAIRealtime,
    FunctionCall,
)

PARAMS = {"type": "object", "properties": {"question": {"type": "string"}}}
SLOW = RealtimeTool("slow_lookup", "Takes a while.", PARAMS, interim_results=True)
QUICK = RealtimeTool("quick_lookup", "Answers at once.", PARAMS)
WORKING = json.dumps({"status": "working"})


class Events:
    def __init__(self, session: RealtimeSession) -> None:
        self.items: list[RealtimeEvent] = []
        self.task = asyncio.get_running_loop().create_task(self._pump(session))

    async def _pump(self, session: RealtimeSession) -> None:
        async for ev in session.events():
            self.items.append(ev)

    async def wait(self, pred: Callable[[RealtimeEvent], bool], n: int = 1) -> RealtimeEvent:
        for _ in range(2500):
            hits = [e for e in self.items if pred(e)]
            if len(hits) >= n:
                return hits[n - 1]
            await asyncio.sleep(0.002)
        raise AssertionError(f"event never came; got {[e.type for e in self.items]}")


def said(text: str) -> Callable[[RealtimeEvent], bool]:
    return lambda e: e.type == "transcript" and e.role == "assistant" and e.final \
        and e.text == text


def tool_call(e: RealtimeEvent) -> bool:
    return e.type == "tool-call"


@asynccontextmanager
async def opened(provider: Any, tools: list[RealtimeTool]) -> AsyncIterator[
        tuple[RealtimeSession, Events]]:
    session = await provider.open("call-1", RealtimeSetup("Help.", tools=tools))
    events = Events(session)
    try:
        await session.wait_ready()
        yield session, events
    finally:
        await session.aclose()
        events.task.cancel()


async def test_openai_interim_output_then_final_message() -> None:
    async def run() -> None:
        script = [FunctionCall("slow_lookup"), FunctionCall("quick_lookup")]
        async with FakeOpenAIRealtime(script=script) as fake, \
                opened(openai.create({"apiKey": fake.api_key, "baseUrl": fake.base_url}),
                       [SLOW, QUICK]) as (session, events):
            assert openai.Provider.capabilities.tool_continuation
            await session.send_text("hello")            # the fake answers with a tool call
            call = await events.wait(tool_call)
            assert call.call_id
            await session.send_tool_result(call.call_id, WORKING, will_continue=True)
            await events.wait(said(CHECKING))
            await session.send_tool_result(call.call_id, "more", will_continue=True)  # no-op
            await session.send_tool_result(call.call_id, "Nine o'clock.")
            await events.wait(said("Result: Nine o'clock."))
            assert fake.tool_outputs == [{"call_id": call.call_id, "name": "slow_lookup",
                                          "output": WORKING}]
            assert fake.continued_results == [{"call_id": call.call_id, "name": "slow_lookup",
                                               "role": "system", "output": "Nine o'clock."}]
            late = [m for m in fake.last.messages if m["type"] == "conversation.item.create"
                    and m["item"]["type"] == "message" and m["item"]["role"] == "system"]
            assert late[0]["item"]["content"][0]["text"] == openai.continued_result_text(
                "slow_lookup", call.call_id, "Nine o'clock.")
            # respond=False: the output goes, no response.create follows it.
            await session.send_text("again")
            second = await events.wait(tool_call, 2)
            assert second.call_id
            await events.wait(lambda e: e.type == "response-done", 4)   # its response is over
            await session.send_tool_result(second.call_id, "done", respond=False)
            await asyncio.sleep(0.2)
            kinds = [m["type"] for m in fake.last.messages]
            assert kinds[-1] == "conversation.item.create"
            assert fake.last.messages[-1]["item"]["type"] == "function_call_output"
            assert not [e for e in fake.last.sent if e["type"] == "error"]
    await asyncio.wait_for(run(), 20)


async def test_gemini_non_blocking_tool_continues_and_blocking_tool_does_not() -> None:
    async def run() -> None:
        script = [FunctionCall("quick_lookup"), FunctionCall("slow_lookup")]
        async with FakeGeminiLive(script=script) as fake, \
                opened(google.create({"apiKey": fake.api_key, "endpoint": fake.url}),
                       [SLOW, QUICK]) as (session, events):
            decls = {d["name"]: d for d in fake.last.config["tools"][0]["functionDeclarations"]}
            assert decls["slow_lookup"]["behavior"] == "NON_BLOCKING"
            assert "behavior" not in decls["quick_lookup"]
            # A blocking call takes one response: the interim one is not sent.
            await session.send_text("hello")
            quick = await events.wait(tool_call)
            assert quick.call_id
            await session.send_tool_result(quick.call_id, WORKING, will_continue=True)
            await session.send_tool_result(quick.call_id, "Nine.")
            await events.wait(said("Result: Nine."))
            assert fake.tool_outputs == [{"id": quick.call_id, "name": "quick_lookup",
                                          "response": {"output": "Nine."}, "known": True}]
            # A NON_BLOCKING call: willContinue first, then the final; SILENT gets no reply.
            await session.send_text("again")
            slow = await events.wait(tool_call, 2)
            assert slow.call_id
            await session.send_tool_result(slow.call_id, WORKING, will_continue=True)
            await events.wait(said(CHECKING))
            await session.send_tool_result(slow.call_id, "Ten.", respond=False)
            await asyncio.sleep(0.3)
            interim, final = fake.tool_outputs[1:]
            assert interim == {"id": slow.call_id, "name": "slow_lookup",
                               "response": {"output": {"status": "working"}}, "known": True,
                               "will_continue": True, "scheduling": "WHEN_IDLE"}
            assert final == {"id": slow.call_id, "name": "slow_lookup",
                             "response": {"output": "Ten."}, "known": True,
                             "scheduling": "SILENT"}
            assert not [e for e in events.items if said("Result: Ten.")(e)]
    await asyncio.wait_for(run(), 20)


def test_gemini_continuation_needs_asynchronous_function_calling() -> None:
    assert google.create({"apiKey": "k"}).capabilities.tool_continuation
    late = google.create({"apiKey": "k", "model": "gemini-3.1-flash-live-preview"})
    assert not late.capabilities.tool_continuation
    assert not google.supports_async_tools("models/gemini-3.1-flash-live-preview")
    assert google.function_declaration(SLOW, non_blocking=True)["behavior"] == "NON_BLOCKING"
    assert "behavior" not in google.function_declaration(SLOW)
