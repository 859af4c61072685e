"""Realtime tools over Telnyx: the consult round-trip to the call's agent, end-call."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tnrt_kit import BOUND, openai_cfg, rig

from voicecall.calls import CallState
from voicecall.gateway.realtime import CONSULT_TOOL_NAME, END_CALL_TOOL_NAME, SAFE_READ_ONLY_TOOLS
from voicecall.testing.fake_openai_realtime import FakeOpenAIRealtime, FunctionCall, Speech
from voicecall.testing.fake_telnyx import CalleeScript

ASK = FunctionCall(CONSULT_TOOL_NAME, {"question": "When does the clinic open?"})


async def test_consult_round_trip(tmp_path: Path) -> None:
    async def run() -> None:
        async with FakeOpenAIRealtime(script=[ASK], transcripts=["When do you open?"]) as oa, \
                rig(tmp_path, callee=CalleeScript(replies=["When do you open?"]),
                    **openai_cfg(oa)) as r:
            ccid, fake_call = await r.inbound()
            call_id = r.call_id(ccid)
            # The model's answer is the agent's: the consult result, spoken.
            call = await r.wait_call(call_id, lambda c: any(
                t.text == "Result: The clinic opens at nine." for t in c.transcript),
                timeout=12)
            names = [t["name"] for t in oa.last.config["tools"]]
            assert names == [CONSULT_TOOL_NAME, END_CALL_TOOL_NAME]
            # The consult reached the call's responder, with the call's session and policy.
            req = r.responder.requests[0]
            assert req.purpose == "consult" and req.call_id == call_id
            assert req.session_key == call.session_key
            assert "User request:\nWhen does the clinic open?" in req.user_text
            assert req.tools_allow == SAFE_READ_ONLY_TOOLS
            assert len(r.responder.requests) == 1
            assert ("user", "When do you open?") in [(t.speaker, t.text)
                                                    for t in call.transcript]
            assert not call.terminal and fake_call.is_alive
    await asyncio.wait_for(run(), BOUND)


async def test_end_call_tool_hangs_up_through_telnyx(tmp_path: Path) -> None:
    async def run() -> None:
        farewell = FunctionCall(END_CALL_TOOL_NAME, then=Speech("Bye.", ms=200))
        async with FakeOpenAIRealtime(script=[farewell]) as oa, \
                rig(tmp_path, callee=CalleeScript(replies=["That's all, bye."]),
                    **openai_cfg(oa)) as r:
            ccid, fake_call = await r.inbound()
            ended = await r.wait_call(r.call_id(ccid), lambda c: c.terminal, timeout=10)
            assert ended.state is CallState.HANGUP_BOT
            assert ended.metadata.get("endNote") == "realtime: end-call tool"
            await r.fake.wait_for(lambda: not fake_call.is_alive, 5)
            assert fake_call.hung_up_by == "api"
            assert fake_call.actions.count("hangup") >= 1
            # The stream was ended by the hangup, and no new one was asked for.
            await asyncio.sleep(0.3)
            assert fake_call.actions.count("streaming_start") == 1
            await r.fake.wait_for(lambda: all(c.closed for c in oa.connections), 5)
    await asyncio.wait_for(run(), BOUND)
