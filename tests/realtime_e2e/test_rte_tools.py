"""Realtime tools end to end: the consult round-trip per toolPolicy, consultPolicy, end-call."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from rte_kit import BOUND, google_cfg, openai_cfg, rig

from voicecall.calls import CallState
from voicecall.gateway.realtime import (
    ALWAYS_GUIDANCE,
    CONSULT_TOOL_NAME,
    END_CALL_TOOL_NAME,
    SAFE_READ_ONLY_TOOLS,
    SUBSTANTIVE_GUIDANCE,
)
from voicecall.testing.fake_gemini_live import FakeGeminiLive
from voicecall.testing.fake_openai_realtime import FakeOpenAIRealtime, FunctionCall
from voicecall.testing.fake_twilio import CalleeScript

CUSTOM = {"type": "function", "name": "lookup_order", "description": "Find an order.",
          "parameters": {"type": "object", "properties": {"id": {"type": "string"}}}}
# A custom tool may not replace a built-in: this one is dropped.
IMPOSTOR = {"type": "function", "name": CONSULT_TOOL_NAME, "description": "fake",
            "parameters": {"type": "object", "properties": {}}}
ASK = FunctionCall(CONSULT_TOOL_NAME, {"question": "When does the clinic open?"})


@pytest.mark.parametrize("policy", ["safe-read-only", "owner"])
async def test_consult_round_trip_openai(tmp_path: Path, policy: str) -> None:
    async def run() -> None:
        async with FakeOpenAIRealtime(script=[ASK], transcripts=["When do you open?"]) as oa, \
                rig(tmp_path, callee=CalleeScript(replies=["When do you open?"]),
                    **openai_cfg(oa, toolPolicy=policy, tools=[CUSTOM, IMPOSTOR])) as r:
            sid, _ = await r.inbound()
            await r.fake.wait_for(lambda: oa.continued_results, 10)
            call = r.manager.get(sid)
            assert call is not None
            names = [t["name"] for t in oa.last.config["tools"]]
            assert names == [CONSULT_TOOL_NAME, END_CALL_TOOL_NAME, "lookup_order"]
            # The consult reached the call's responder, with the call's session and policy.
            req = r.responder.requests[0]
            assert req.purpose == "consult" and req.call_id == call.call_id
            assert req.session_key == call.session_key
            assert "User request:\nWhen does the clinic open?" in req.user_text
            assert req.tools_allow == (SAFE_READ_ONLY_TOOLS if policy == "safe-read-only"
                                       else None)
            # The tool output was the interim "working" status; the answer followed as a
            # message naming the call (see test_rte_consult_flow), and the model spoke it.
            assert json.loads(oa.tool_outputs[0]["output"])["status"] == "working"
            assert oa.continued_results[0]["output"] == "The clinic opens at nine."
            await r.wait_call(call.call_id, lambda c: any(
                t.text == "Result: The clinic opens at nine." for t in c.transcript))
    await asyncio.wait_for(run(), BOUND)


async def test_consult_round_trip_gemini(tmp_path: Path) -> None:
    async def run() -> None:
        async with FakeGeminiLive(script=[ASK], transcripts=["When do you open?"]) as gm, \
                rig(tmp_path, callee=CalleeScript(replies=["When do you open?"]),
                    **google_cfg(gm)) as r:
            sid, _ = await r.inbound()
            await r.fake.wait_for(lambda: len(gm.tool_outputs) == 2, 10)
            decls = gm.last.config["tools"][0]["functionDeclarations"]
            assert [d["name"] for d in decls] == [CONSULT_TOOL_NAME, END_CALL_TOOL_NAME]
            assert r.responder.requests[0].tools_allow == SAFE_READ_ONLY_TOOLS
            assert gm.tool_outputs[0]["will_continue"] is True       # interim, then final
            assert gm.tool_outputs[1]["response"] == {"output": "The clinic opens at nine."}
            call = r.manager.get(sid)
            assert call is not None
            await r.wait_call(call.call_id, lambda c: any(
                t.text == "Result: The clinic opens at nine." for t in c.transcript))
    await asyncio.wait_for(run(), BOUND)


async def test_tool_policy_none_hides_consult_but_passes_custom_tools(tmp_path: Path) -> None:
    async def run() -> None:
        script = [FunctionCall("lookup_order", {"id": "A1"})]
        async with FakeOpenAIRealtime(script=script) as oa, \
                rig(tmp_path, callee=CalleeScript(replies=["Where is my order?"]),
                    **openai_cfg(oa, toolPolicy="none", consultPolicy="always",
                                 tools=[CUSTOM])) as r:
            await r.inbound()
            await r.fake.wait_for(lambda: oa.tool_outputs, 10)
            names = [t["name"] for t in oa.last.config["tools"]]
            assert names == [END_CALL_TOOL_NAME, "lookup_order"]
            assert "Consult behavior" not in oa.last.config["instructions"]
            assert r.responder.requests == []       # nothing consulted the agent
            assert "not available" in oa.tool_outputs[0]["output"]
    await asyncio.wait_for(run(), BOUND)


@pytest.mark.parametrize(("policy", "expected"), [
    ("auto", None), ("substantive", SUBSTANTIVE_GUIDANCE), ("always", ALWAYS_GUIDANCE)])
async def test_consult_policy_only_changes_instructions(tmp_path: Path, policy: str,
                                                        expected: str | None) -> None:
    async def run() -> None:
        async with FakeOpenAIRealtime() as oa, \
                rig(tmp_path, **openai_cfg(oa, consultPolicy=policy,
                                           instructions="Be brief.")) as r:
            await r.inbound()
            await r.fake.wait_for(lambda: oa.replies, 10)
            config: dict[str, Any] = oa.last.config
            instructions = config["instructions"]
            assert instructions.startswith("Be brief.")
            if expected is None:
                assert instructions == "Be brief."
            else:
                assert instructions == f"Be brief.\n\n{expected}"
            # The tools are the same whatever the consult policy.
            assert [t["name"] for t in config["tools"]] == [CONSULT_TOOL_NAME,
                                                            END_CALL_TOOL_NAME]
    await asyncio.wait_for(run(), BOUND)


async def test_end_call_tool_hangs_up(tmp_path: Path) -> None:
    async def run() -> None:
        async with FakeOpenAIRealtime(script=[FunctionCall(END_CALL_TOOL_NAME)]) as oa, \
                rig(tmp_path, callee=CalleeScript(replies=["That's all, bye."]),
                    **openai_cfg(oa)) as r:
            sid, fake_call = await r.inbound()
            call = r.manager.get(sid)
            assert call is not None
            ended = await r.wait_call(call.call_id, lambda c: c.terminal, timeout=10)
            assert ended.state is CallState.HANGUP_BOT
            await r.fake.wait_for(lambda: fake_call.is_terminal, 5)
    await asyncio.wait_for(run(), BOUND)
