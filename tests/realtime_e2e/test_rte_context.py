"""agentContext capsule and fastContext search (off by default; bounded; local)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from rte_kit import BOUND, CALLER, OUR_NUMBER, openai_cfg, rig

from voicecall.calls import Call, CallState, session_key_for
from voicecall.calls.model import TranscriptEntry
from voicecall.config import VoiceCallConfig
from voicecall.gateway.realtime import (
    CONSULT_TOOL_NAME,
    FAST_MISS_TEXT,
    build_instructions,
)
from voicecall.testing.fake_openai_realtime import FakeOpenAIRealtime, FunctionCall
from voicecall.testing.fake_twilio import CalleeScript

ASK = FunctionCall(CONSULT_TOOL_NAME, {"question": "What did I order last time?"})


def _cfg(**realtime: object) -> VoiceCallConfig:
    return VoiceCallConfig.model_validate({"agentId": "front-desk",
                                           "responseSystemPrompt": "You are Ada.",
                                           "realtime": {"instructions": "Be brief.",
                                                        **realtime}})


def test_agent_context_is_off_by_default_and_bounded(tmp_path: Path) -> None:
    (tmp_path / "SOUL.md").write_text("Warm and concise.")
    (tmp_path / "USER.md").write_text("x" * 10_000)
    assert build_instructions(_cfg(), tmp_path) == "Be brief."
    text = build_instructions(_cfg(agentContext={"enabled": True, "maxChars": 600}), tmp_path)
    capsule = text.split("\n\n", 1)[1]
    assert capsule.startswith("OpenClaw agent voice context:\n- Agent id: front-desk")
    assert "You are Ada." in capsule and "### SOUL.md\nWarm and concise." in capsule
    assert len(capsule) == 600 and capsule.endswith("\n[truncated]")
    # Missing files are skipped; nothing escapes the workspace directory.
    text = build_instructions(_cfg(agentContext={"enabled": True,
                                                 "files": ["../secret", "NOPE.md"]}), tmp_path)
    assert "###" not in text


async def test_fast_context_answers_from_past_calls_without_a_consult(tmp_path: Path) -> None:
    async def run() -> None:
        async with FakeOpenAIRealtime(script=[ASK]) as oa, \
                rig(tmp_path, callee=CalleeScript(replies=["What did I order?"]),
                    **openai_cfg(oa, fastContext={"enabled": True})) as r:
            past = Call(call_id="past-1", provider="twilio", direction="inbound",
                        state=CallState.COMPLETED, from_number=CALLER, to_number=OUR_NUMBER,
                        started_at=time.time() - 3600, end_reason=CallState.COMPLETED,
                        session_key=session_key_for("per-phone", "past-1", "inbound", CALLER,
                                                    OUR_NUMBER),
                        transcript=(TranscriptEntry(1.0, "user", "I ordered two blue widgets"),
                                    TranscriptEntry(2.0, "bot", "Two blue widgets, noted.")))
            r.manager.store.save(past)
            await r.inbound()
            await r.fake.wait_for(lambda: oa.tool_outputs, 10)
            output = oa.tool_outputs[0]["output"]
            assert output.startswith("Fast OpenClaw memory or session context found")
            assert "[sessions] call:past-1:0-1" in output and "blue widgets" in output
            assert r.responder.requests == []
    await asyncio.wait_for(run(), BOUND)


async def test_fast_context_miss_consults_only_with_fallback(tmp_path: Path) -> None:
    async def run(fallback: bool, home: Path) -> str:
        async with FakeOpenAIRealtime(script=[ASK]) as oa, \
                rig(home, callee=CalleeScript(replies=["What did I order?"]),
                    **openai_cfg(oa, fastContext={"enabled": True,
                                                  "sources": ["sessions"],
                                                  "fallbackToConsult": fallback})) as r:
            await r.inbound()
            await r.fake.wait_for(lambda: oa.tool_outputs, 10)
            assert len(r.responder.requests) == (1 if fallback else 0)
            return str(oa.tool_outputs[0]["output"])
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert await asyncio.wait_for(run(False, tmp_path / "a"), BOUND) == FAST_MISS_TEXT
    assert await asyncio.wait_for(run(True, tmp_path / "b"), BOUND) == \
        "The clinic opens at nine."


def test_agent_capsule_identity_from_config_or_identity_file(tmp_path: Path) -> None:
    on = {"enabled": True, "includeWorkspaceFiles": False}
    # No identity anywhere: no identity section (the agent id line is still there).
    text = build_instructions(_cfg(agentContext=on), tmp_path)
    assert "- Agent id: front-desk" in text and "Configured identity:" not in text
    # OpenClaw's IDENTITY.md shape: bold labels, template placeholders ignored.
    (tmp_path / "IDENTITY.md").write_text(
        "# IDENTITY.md - Who Am I?\n\n- **Name:** Ada\n- **Creature:** a helpful fox\n"
        "- **Vibe:** warm, quick\n- **Emoji:** 🦊\n- **Theme:**\n  _(pick something)_\n")
    text = build_instructions(_cfg(agentContext=on), tmp_path)
    assert ("Configured identity:\n- Name: Ada\n- Emoji: 🦊\n- Vibe: warm, quick\n"
            "- Creature/persona: a helpful fox") in text
    assert "Theme" not in text
    # agents.<id>.identity wins over the file; includeIdentity false drops it.
    cfg = VoiceCallConfig.model_validate({
        "agentId": "front-desk", "realtime": {"instructions": "Be brief.", "agentContext": on},
        "agents": {"front-desk": {"identity": {"name": "Grace", "theme": "calm clinic"}}}})
    text = build_instructions(cfg, tmp_path)
    assert "- Name: Grace\n- Theme: calm clinic" in text and "Ada" not in text
    text = build_instructions(_cfg(agentContext={**on, "includeIdentity": False}), tmp_path)
    assert "Configured identity:" not in text


def test_agent_workspace_comes_from_the_agent_profile(tmp_path: Path) -> None:
    default, own = tmp_path / "default", tmp_path / "own"
    default.mkdir()
    own.mkdir()
    (default / "SOUL.md").write_text("Default soul.")
    (own / "SOUL.md").write_text("Front desk soul.")
    cfg = VoiceCallConfig.model_validate({
        "agentId": "front-desk", "realtime": {"agentContext": {"enabled": True}},
        "agents": {"front-desk": {"workspace": str(own)}}})
    text = build_instructions(cfg, default)
    assert "### SOUL.md\nFront desk soul." in text and "Default soul." not in text
    # Another agent (a number routed elsewhere) keeps the default workspace.
    other = cfg.model_copy(update={"agent_id": "sales"})
    assert "Default soul." in build_instructions(other, default)


def _past(call_id: str, caller: str, *lines: tuple[str, str]) -> Call:
    return Call(call_id=call_id, provider="twilio", direction="inbound",
                state=CallState.COMPLETED, from_number=caller, to_number=OUR_NUMBER,
                started_at=time.time() - 3600, end_reason=CallState.COMPLETED,
                session_key=session_key_for("per-phone", call_id, "inbound", caller,
                                            OUR_NUMBER),
                transcript=tuple(TranscriptEntry(float(i), who, text)  # type: ignore[arg-type]
                                 for i, (who, text) in enumerate(lines)))


async def test_fast_context_finds_memory_files_and_past_calls_by_meaning(tmp_path: Path) -> None:
    # The questions share no content word with their answers: only the local
    # embedding index (not a keyword match) can find them.
    pets = FunctionCall(CONSULT_TOOL_NAME, {"question": "What is my puppy's name?"})
    meds = FunctionCall(CONSULT_TOOL_NAME, {"question": "Which medicine must I avoid?"})

    async def run() -> None:
        workspace = tmp_path / "workspace"
        (workspace / "memory").mkdir(parents=True)
        (workspace / "MEMORY.md").write_text(
            "# Notes\n\n## Household\nThe family dog is a beagle called Biscuit.\n\n"
            "## Billing\nInvoices go out on the first of the month.\n")
        async with FakeOpenAIRealtime(script=[pets, meds]) as oa, \
                rig(tmp_path, callee=CalleeScript(replies=["A question.", "Another one."]),
                    **openai_cfg(oa, fastContext={"enabled": True, "timeoutMs": 5000})) as r:
            r.manager.store.save(_past("past-mine", CALLER,
                                       ("user", "Note that I am allergic to penicillin."),
                                       ("bot", "Noted, thank you.")))
            r.manager.store.save(_past("past-other", "+15550007777",
                                       ("user", "I must avoid aspirin, it makes me ill."),
                                       ("bot", "Noted.")))
            await r.inbound()
            await r.fake.wait_for(lambda: len(oa.tool_outputs) >= 2, 20)
            first, second = (str(o["output"]) for o in oa.tool_outputs[:2])
            assert "[memory] MEMORY.md:" in first and "Biscuit" in first
            assert "[sessions] call:past-mine:0-1" in second and "penicillin" in second
            # Never another caller's transcript, and no full consult was needed.
            assert "aspirin" not in first + second
            assert r.responder.requests == []
    await asyncio.wait_for(run(), BOUND)
