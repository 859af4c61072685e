"""The consult flow end to end: interim then final, settle, sharing, host-forced consults.

Fake Twilio + the real gateway + the fake OpenAI Realtime / Gemini Live over loopback.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from rte_kit import BOUND, RecordingResponder, google_cfg, openai_cfg, rig

from voicecall.agent import ResponseRequest, ResponseResult
from voicecall.agent.base import TextSink
from voicecall.calls import Call
from voicecall.gateway.realtime import CONSULT_TOOL_NAME, END_CALL_TOOL_NAME
from voicecall.gateway.realtime.consult_flow import (
    ALREADY_DELIVERED,
    BUSY,
    forced_prompt,
    working_result,
)
from voicecall.testing.fake_gemini_live import FakeGeminiLive
from voicecall.testing.fake_openai_realtime import (
    CHECKING,
    FakeOpenAIRealtime,
    FunctionCall,
    Speech,
)
from voicecall.testing.fake_twilio import CalleeScript

ASK = FunctionCall(CONSULT_TOOL_NAME, {"question": "When does the clinic open?"})
ANSWER = "The clinic opens at nine."
FORCED_HEAD = "Internal OpenClaw consult result is ready."


@dataclass
class TimedResponder(RecordingResponder):
    """Records when each consult reached the agent; answers after ``delay`` seconds."""

    delay: float = 0.0
    called_at: list[float] = field(default_factory=list)

    async def respond(self, req: ResponseRequest,
                      on_text: TextSink | None = None) -> ResponseResult:
        self.called_at.append(asyncio.get_running_loop().time())
        self.requests.append(req)
        await asyncio.sleep(self.delay)
        text = self.answers[min(len(self.requests), len(self.answers)) - 1]
        return ResponseResult(text, [{"text": text}], 1.0, 1.0)


def bot_lines(call: Call) -> list[str]:
    return [t.text for t in call.transcript if t.speaker != "user"]


def wire(messages: list[dict[str, Any]]) -> list[str]:
    """The OpenAI client events that matter here, as short labels."""
    out = []
    for m in messages:
        if m["type"] == "conversation.item.create":
            item = m["item"]
            out.append(f"message/{item['role']}" if item["type"] == "message" else item["type"])
        elif m["type"] == "response.create":
            out.append("response.create")
    return out


def user_texts(fake: FakeOpenAIRealtime) -> list[str]:
    messages = fake.last.messages if fake.connections else []
    return [c["text"] for m in messages if m["type"] == "conversation.item.create"
            and m["item"]["type"] == "message" and m["item"]["role"] == "user"
            for c in m["item"]["content"]]


async def first_seen(pred: Any, timeout: float = 10.0) -> float:
    """Loop time at which ``pred()`` first held (polled every 2 ms)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        if loop.time() > deadline:
            raise AssertionError("condition never held")
        await asyncio.sleep(0.002)
    return loop.time()


# --------------------------------------------------------------------------- interim result


async def test_openai_interim_output_then_final_as_a_message(tmp_path: Path) -> None:
    async def run() -> None:
        async with FakeOpenAIRealtime(script=[ASK], transcripts=["When do you open?"]) as oa, \
                rig(tmp_path, callee=CalleeScript(replies=["When do you open?"]),
                    **openai_cfg(oa)) as r:
            sid, _ = await r.inbound()
            await r.fake.wait_for(lambda: oa.continued_results, 10)
            # The call's one function_call_output is the interim "working" status ...
            assert len(oa.tool_outputs) == 1
            assert oa.tool_outputs[0]["output"] == working_result()
            assert json.loads(working_result()) == {
                "status": "working", "tool": CONSULT_TOOL_NAME,
                "message": "Tell the caller briefly that you are checking, then wait for the "
                           "final OpenClaw result before answering with the actual result."}
            # ... and the answer follows as a system message naming that call.
            late = oa.continued_results[0]
            assert late == {"call_id": oa.tool_outputs[0]["call_id"], "name": CONSULT_TOOL_NAME,
                            "role": "system", "output": ANSWER}
            call = r.manager.get(sid)
            assert call is not None
            done = await r.wait_call(call.call_id,
                                     lambda c: f"Result: {ANSWER}" in bot_lines(c))
            lines = bot_lines(done)
            assert lines.index(CHECKING) < lines.index(f"Result: {ANSWER}")
            labels = wire(oa.last.messages)
            out = labels.index("function_call_output")
            assert labels[out + 1] == "response.create"       # the model says it is checking
            late_at = labels.index("message/system", out)
            assert "response.create" in labels[late_at + 1:]  # then answers
            assert not [e for e in oa.last.sent if e["type"] == "error"]
    await asyncio.wait_for(run(), BOUND)


async def test_gemini_interim_response_will_continue_then_final(tmp_path: Path) -> None:
    async def run() -> None:
        async with FakeGeminiLive(script=[ASK], transcripts=["When do you open?"]) as gm, \
                rig(tmp_path, callee=CalleeScript(replies=["When do you open?"]),
                    **google_cfg(gm)) as r:
            sid, _ = await r.inbound()
            await r.fake.wait_for(lambda: len(gm.tool_outputs) == 2, 10)
            decls = {d["name"]: d for d in gm.last.config["tools"][0]["functionDeclarations"]}
            # Only the consult tool is asynchronous; the end-call tool stays blocking.
            assert decls[CONSULT_TOOL_NAME]["behavior"] == "NON_BLOCKING"
            assert "behavior" not in decls[END_CALL_TOOL_NAME]
            interim, final = gm.tool_outputs
            assert interim["id"] == final["id"] and interim["known"] and final["known"]
            assert interim["will_continue"] is True and interim["scheduling"] == "WHEN_IDLE"
            assert interim["response"] == {"output": json.loads(working_result())}
            assert final["response"] == {"output": ANSWER}
            assert final["scheduling"] == "WHEN_IDLE" and "will_continue" not in final
            call = r.manager.get(sid)
            assert call is not None
            done = await r.wait_call(call.call_id,
                                     lambda c: f"Result: {ANSWER}" in bot_lines(c))
            lines = bot_lines(done)
            assert lines.index(CHECKING) < lines.index(f"Result: {ANSWER}")
    await asyncio.wait_for(run(), BOUND)


@pytest.mark.parametrize("case", ["gemini-3.1", "fast-context"])
async def test_gemini_final_result_only(tmp_path: Path, case: str) -> None:
    """No continuation on Gemini 3.1 (no async function calling), nor with fast context."""
    async def run() -> None:
        async with FakeGeminiLive(script=[ASK], transcripts=["When do you open?"]) as gm:
            cfg = google_cfg(gm, **({"fastContext": {"enabled": True, "sources": ["sessions"],
                                                     "fallbackToConsult": True}}
                                    if case == "fast-context" else {}))
            if case == "gemini-3.1":
                cfg["realtime"]["providers"]["google"]["model"] = "gemini-3.1-flash-live-preview"
            async with rig(tmp_path, callee=CalleeScript(replies=["When do you open?"]),
                           **cfg) as r:
                await r.inbound()
                await r.fake.wait_for(lambda: gm.tool_outputs, 10)
                await asyncio.sleep(0.3)
                decls = gm.last.config["tools"][0]["functionDeclarations"]
                assert all("behavior" not in d for d in decls)
                assert gm.tool_outputs == [{"id": gm.tool_outputs[0]["id"],
                                            "name": CONSULT_TOOL_NAME,
                                            "response": {"output": ANSWER}, "known": True}]
    await asyncio.wait_for(run(), BOUND)


# --------------------------------------------------------------------------- settle


async def test_consult_waits_for_the_partial_transcript_to_settle(tmp_path: Path) -> None:
    """Gemini: the caller's words are still partial when the tool call comes: ~350 ms wait."""
    async def run() -> None:
        words = "When do you open on Saturday mornings for blood tests"
        responder = TimedResponder()
        # All words arrive as partial transcript chunks right before the tool call.
        async with FakeGeminiLive(script=[ASK], transcripts=[words], word_ms=60_000) as gm, \
                rig(tmp_path, callee=CalleeScript(replies=[words]), responder=responder,
                    **google_cfg(gm)) as r:
            await r.inbound()
            interim_at = await first_seen(lambda: gm.tool_outputs)
            await first_seen(lambda: responder.called_at)
            waited = responder.called_at[0] - interim_at
            assert 0.28 <= waited <= 0.6, waited
    await asyncio.wait_for(run(), BOUND)


async def test_consult_does_not_wait_when_the_transcript_is_final(tmp_path: Path) -> None:
    """OpenAI: the input transcription completed before the tool call: no wait."""
    async def run() -> None:
        responder = TimedResponder()
        async with FakeOpenAIRealtime(script=[ASK], transcripts=["When do you open?"]) as oa, \
                rig(tmp_path, callee=CalleeScript(replies=["When do you open?"]),
                    responder=responder, **openai_cfg(oa)) as r:
            await r.inbound()
            interim_at = await first_seen(lambda: oa.tool_outputs)
            await first_seen(lambda: responder.called_at)
            assert responder.called_at[0] - interim_at < 0.15
    await asyncio.wait_for(run(), BOUND)


# --------------------------------------------------------------------------- concurrency


@pytest.mark.parametrize("same", [True, False])
async def test_concurrent_tool_calls_share_one_consult(tmp_path: Path, same: bool) -> None:
    """The caller asks again while the consult runs and the model calls the tool again."""
    async def run() -> None:
        again = ASK if same else FunctionCall(CONSULT_TOOL_NAME,
                                              {"question": "Do you take walk-ins?"})
        responder = TimedResponder(delay=3.0)
        async with FakeOpenAIRealtime(script=[ASK, again],
                                      transcripts=["When do you open?", "Hello, are you there?"]
                                      ) as oa, \
                rig(tmp_path, callee=CalleeScript(replies=["When do you open?",
                                                           "Hello, are you there?"]),
                    responder=responder, **openai_cfg(oa)) as r:
            await r.inbound()
            await r.fake.wait_for(lambda: len(oa.tool_outputs) == 2, 10)
            assert len(responder.requests) == 1     # the second call started nothing
            first, second = oa.tool_outputs
            assert first["output"] == working_result()
            if same:
                # It shares the running consult: interim now, the same answer later.
                assert second["output"] == working_result()
                await r.fake.wait_for(lambda: len(oa.continued_results) == 2, 10)
                assert {c["call_id"]: c["output"] for c in oa.continued_results} == {
                    first["call_id"]: ANSWER, second["call_id"]: ANSWER}
            else:
                # A different request is not answered with someone else's result.
                assert second["output"] == BUSY
                await r.fake.wait_for(lambda: oa.continued_results, 10)
                assert [c["call_id"] for c in oa.continued_results] == [first["call_id"]]
            assert len(responder.requests) == 1
            assert "User request:\nWhen does the clinic open?" in responder.requests[0].user_text
    await asyncio.wait_for(run(), BOUND)


# --------------------------------------------------------------------------- forced consult


async def test_forced_consult_openai_when_the_model_answers_directly(tmp_path: Path) -> None:
    async def run() -> None:
        direct = Speech("We open at nine, I think, but let me see.", ms=2000)
        async with FakeOpenAIRealtime(script=[direct], transcripts=["When do you open?"]) as oa, \
                rig(tmp_path, callee=CalleeScript(replies=["When do you open?"]),
                    **openai_cfg(oa, consultPolicy="always")) as r:
            sid, fake_call = await r.inbound()
            await r.fake.wait_for(lambda: any(FORCED_HEAD in t
                                              for t in user_texts(oa)), 10)
            # The agent was consulted with the caller's words as the question ...
            assert len(r.responder.requests) == 1
            assert "User request:\nWhen do you open?" in r.responder.requests[0].user_text
            # ... the direct answer was cut (cleared at the carrier, truncated at the model) ...
            assert fake_call.clears
            assert oa.truncations and oa.truncations[0]["accepted"]
            # ... and the answer went in as a user message, then a response was requested.
            prompt = next(t for t in user_texts(oa) if FORCED_HEAD in t)
            assert prompt == forced_prompt(ANSWER) == (
                "Internal OpenClaw consult result is ready. Do not call tools for this "
                "internal result. Speak the following answer to the caller now, briefly and "
                f"naturally:\n{ANSWER}")
            labels = wire(oa.last.messages)
            assert "response.create" in labels[labels.index("message/user"):]
            assert oa.tool_outputs == []
            call = r.manager.get(sid)
            assert call is not None and not call.terminal
    await asyncio.wait_for(run(), BOUND)


async def test_forced_consult_gemini_when_the_model_answers_directly(tmp_path: Path) -> None:
    async def run() -> None:
        direct = Speech("We open at nine, I think, but let me see.", ms=2000)
        async with FakeGeminiLive(script=[direct], transcripts=["When do you open?"]) as gm, \
                rig(tmp_path, callee=CalleeScript(replies=["When do you open?"]),
                    **google_cfg(gm, consultPolicy="always")) as r:
            _, fake_call = await r.inbound()
            await r.fake.wait_for(lambda: any(FORCED_HEAD in t for t in gm.client_turns), 10)
            assert len(r.responder.requests) == 1
            assert "User request:\nWhen do you open?" in r.responder.requests[0].user_text
            assert fake_call.clears
            assert forced_prompt(ANSWER) in gm.client_turns
            assert gm.tool_outputs == []
    await asyncio.wait_for(run(), BOUND)


@pytest.mark.parametrize("provider", ["openai", "google"])
async def test_no_forced_consult_when_the_model_consults(tmp_path: Path, provider: str) -> None:
    async def run() -> None:
        fake: FakeOpenAIRealtime | FakeGeminiLive
        if provider == "openai":
            fake = FakeOpenAIRealtime(script=[ASK], transcripts=["When do you open?"])
        else:
            fake = FakeGeminiLive(script=[ASK], transcripts=["When do you open?"])
        async with fake:
            cfg = (openai_cfg if isinstance(fake, FakeOpenAIRealtime) else google_cfg)(
                fake, consultPolicy="always")   # type: ignore[operator]
            async with rig(tmp_path, callee=CalleeScript(replies=["When do you open?"]),
                           **cfg) as r:
                sid, _ = await r.inbound()
                call = r.manager.get(sid)
                assert call is not None
                await r.wait_call(call.call_id, lambda c: f"Result: {ANSWER}" in bot_lines(c)
                                  and any(t.speaker == "user" for t in c.transcript))
                await asyncio.sleep(0.6)        # well past the 200 ms fallback delay
                assert len(r.responder.requests) == 1
                if isinstance(fake, FakeOpenAIRealtime):
                    assert not any(FORCED_HEAD in t for t in user_texts(fake))
                else:
                    assert not any(FORCED_HEAD in t for t in fake.client_turns)
    await asyncio.wait_for(run(), BOUND)


@pytest.mark.parametrize("provider", ["openai", "google"])
async def test_late_tool_call_gets_already_delivered(tmp_path: Path, provider: str) -> None:
    """The model answered directly, the host consulted; then the model calls the tool."""
    async def run() -> None:
        script = [Speech("Hmm, let me think about that.", ms=1500), ASK]
        fake: FakeOpenAIRealtime | FakeGeminiLive
        if provider == "openai":
            fake = FakeOpenAIRealtime(script=script, transcripts=["When do you open?"])
        else:
            fake = FakeGeminiLive(script=script, transcripts=["When do you open?"])
        async with fake:
            cfg = (openai_cfg if isinstance(fake, FakeOpenAIRealtime) else google_cfg)(
                fake, consultPolicy="always")   # type: ignore[operator]
            async with rig(tmp_path, callee=CalleeScript(replies=["When do you open?"]),
                           **cfg) as r:
                await r.inbound()
                await r.fake.wait_for(lambda: fake.tool_outputs, 10)
                await asyncio.sleep(0.4)
                assert len(r.responder.requests) == 1     # no second agent run
                out = fake.tool_outputs[0]
                if isinstance(fake, FakeOpenAIRealtime):
                    assert fake.tool_outputs == [{"call_id": out["call_id"],
                                                  "name": CONSULT_TOOL_NAME,
                                                  "output": ALREADY_DELIVERED}]
                    # The call is answered without asking the model for another response.
                    labels = wire(fake.last.messages)
                    assert "response.create" not in labels[
                        labels.index("function_call_output"):]
                else:
                    assert out["response"] == {"output": json.loads(ALREADY_DELIVERED)}
                    assert out["scheduling"] == "SILENT" and "will_continue" not in out
                    assert len(fake.tool_outputs) == 1
                assert json.loads(ALREADY_DELIVERED) == {
                    "status": "already_delivered",
                    "message": "OpenClaw already delivered this consult result internally. "
                               "Do not repeat it."}
    await asyncio.wait_for(run(), BOUND)


async def test_no_forced_consult_with_tool_policy_none(tmp_path: Path) -> None:
    async def run() -> None:
        direct = Speech("We open at nine.", ms=600)
        async with FakeOpenAIRealtime(script=[direct], transcripts=["When do you open?"]) as oa, \
                rig(tmp_path, callee=CalleeScript(replies=["When do you open?"]),
                    **openai_cfg(oa, consultPolicy="always", toolPolicy="none")) as r:
            sid, _ = await r.inbound()
            call = r.manager.get(sid)
            assert call is not None
            await r.wait_call(call.call_id, lambda c: any(t.speaker == "user"
                                                          for t in c.transcript))
            await asyncio.sleep(0.6)
            assert r.responder.requests == []
            assert not any(FORCED_HEAD in t for t in user_texts(oa))
    await asyncio.wait_for(run(), BOUND)
