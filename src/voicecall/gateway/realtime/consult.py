"""What the realtime model may call, and how the consult tool reaches the call's agent.

``openclaw_agent_consult`` (unless ``toolPolicy: none``) and ``openclaw_end_call``
(never disabled), then custom ``realtime.tools`` that cannot replace either by
name (``openclaw-voice-call.md`` §7.3-§7.4). The consult runs the call's
responder with the consult prompt; the session key is the call's stored key,
else ``sessionScope``; the tool policy travels as ``tools_allow``. When and how
often it runs (settle, de-dup, interim result, host-forced consult) is
``consult_flow``'s business.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from voicecall.agent import ResponseRequest
from voicecall.calls import Call, session_key_for
from voicecall.config import VoiceCallConfig, effective_config
from voicecall.config.sections import RealtimeConfig
from voicecall.errors import VoicecallError
from voicecall.gateway.realtime.fast import (
    FAST_MISS_TEXT,
    Snippet,
    fast_context_text,
)
from voicecall.speech.realtime.base import RealtimeTool

if TYPE_CHECKING:
    from voicecall.gateway.manager import CallManager

__all__ = [
    "ALWAYS_GUIDANCE",
    "asked_question",
    "Consulter",
    "CONSULT_TOOL",
    "CONSULT_TOOL_NAME",
    "END_CALL_TOOL",
    "END_CALL_TOOL_NAME",
    "SAFE_READ_ONLY_TOOLS",
    "SUBSTANTIVE_GUIDANCE",
    "build_tools",
    "consult_guidance",
    "consult_prompt",
    "tools_allow",
]

log = logging.getLogger("voicecall.realtime.consult")

CONSULT_TOOL_NAME = "openclaw_agent_consult"
END_CALL_TOOL_NAME = "openclaw_end_call"
SAFE_READ_ONLY_TOOLS = ("read", "web_search", "web_fetch", "x_search", "memory_search",
                        "memory_get")
TRANSCRIPT_LINES = 12

CONSULT_TOOL = RealtimeTool(
    name=CONSULT_TOOL_NAME,
    description="Delegate the caller's request to the configured OpenClaw agent for normal "
                "tool-backed work, actions, context, memory, or reasoning before speaking.",
    parameters={
        "type": "object",
        "properties": {
            "question": {"type": "string",
                         "description": "The concrete question or task the user asked."},
            "context": {"type": "string",
                        "description": "Optional relevant context or transcript summary."},
            "responseStyle": {"type": "string",
                              "description": "Optional style hint for the spoken answer."},
        },
        "required": ["question"],
    },
)
END_CALL_TOOL = RealtimeTool(
    name=END_CALL_TOOL_NAME,
    description="End the phone call. Say your farewell to the caller first, then call this.",
    parameters={"type": "object", "properties": {}},
)

SUBSTANTIVE_GUIDANCE = (
    "Consult behavior:\n"
    "- Answer directly for greetings, acknowledgements, simple conversational glue, and brief "
    "latency tests.\n"
    f"- Call {CONSULT_TOOL_NAME} before answering requests that need facts, memory, current "
    "information, tools, workspace state, or the user's OpenClaw-specific context.\n"
    "- Keep spoken replies concise and natural."
)
ALWAYS_GUIDANCE = (
    "Consult behavior:\n"
    f"- Call {CONSULT_TOOL_NAME} before every substantive answer.\n"
    "- Answer directly only for greetings, acknowledgements, brief latency tests, or filler.\n"
    "- After the consult result arrives, speak that result concisely."
)
CONSULT_SYSTEM_LINES = (
    "Live voice request from the caller during a live phone call.",
    "Act as the configured OpenClaw agent on behalf of this user. Use available tools when "
    "the request asks you to do work.",
    "Prefer a fast, speakable result; for status checks use one or two bounded read-only "
    "queries. Never print secrets or dump environment variables.",
    "When finished, return only the concise result the realtime voice agent should speak back.",
    "Do not include markdown, tool logs, or private reasoning.",
)


def tools_allow(tool_policy: str) -> tuple[str, ...] | None:
    """The consult run's agent tools for ``toolPolicy`` (None: the normal agent policy)."""
    if tool_policy == "safe-read-only":
        return SAFE_READ_ONLY_TOOLS
    if tool_policy == "owner":
        return None
    return ()


def build_tools(rt: RealtimeConfig) -> list[RealtimeTool]:
    """Consult (unless ``toolPolicy: none``), end-call, then custom tools (no overrides)."""
    tools: list[RealtimeTool] = []
    if rt.tool_policy != "none":
        # An interim "working" result goes first unless fast context answers quickly.
        tools.append(dataclasses.replace(CONSULT_TOOL,
                                         interim_results=not rt.fast_context.enabled))
    tools.append(END_CALL_TOOL)
    reserved = {CONSULT_TOOL_NAME, END_CALL_TOOL_NAME}
    seen: set[str] = set()
    for raw in rt.tools:
        name = str(raw.get("name") or "")
        if not name or name in reserved or name in seen:
            if name in reserved:
                log.warning("realtime.tool_name_reserved", extra={"tool": name})
            continue
        seen.add(name)
        params = raw.get("parameters")
        tools.append(RealtimeTool(name=name, description=str(raw.get("description") or ""),
                                  parameters=params if isinstance(params, Mapping)
                                  else {"type": "object", "properties": {}}))
    return tools


def consult_guidance(consult_policy: str, tool_policy: str) -> str:
    """Extra instructions for ``consultPolicy`` (none for ``auto`` or ``toolPolicy: none``)."""
    if tool_policy == "none":
        return ""
    if consult_policy == "substantive":
        return SUBSTANTIVE_GUIDANCE
    if consult_policy == "always":
        return ALWAYS_GUIDANCE
    return ""


def consult_prompt(question: str, *, context: str | None = None, style: str | None = None,
                   transcript: Sequence[tuple[str, str]] = ()) -> str:
    """The consult request text (§7.3): framing, style, recent transcript, context, request."""
    parts = list(CONSULT_SYSTEM_LINES)
    if style:
        parts.append(f"Spoken style: {style}")
    recent = transcript[-TRANSCRIPT_LINES:]
    if recent:
        parts.append("Recent transcript:\n" + "\n".join(
            f"{'Caller' if who == 'user' else 'Agent'}: {text}" for who, text in recent))
    if context:
        parts.append(f"Context:\n{context}")
    parts.append(f"User request:\n{question}")
    return "\n\n".join(parts)


def call_session_key(config: VoiceCallConfig, call: Call) -> str:
    """The call's stored session key, else the one ``sessionScope`` gives it."""
    if call.session_key:
        return call.session_key
    eff = effective_config(config, call.number_route_key)
    return session_key_for(config.session_scope, call.call_id, call.direction,
                           call.from_number, call.to_number, eff.agent_id or "main")


def asked_question(args: Mapping[str, Any]) -> str | None:
    """The question the model put in the call (``question``, ``prompt``, ``query``, ``task``)."""
    for key in ("question", "prompt", "query", "task"):
        value = args.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def question_of(args: Mapping[str, Any], fallback: str) -> str:
    return asked_question(args) or fallback


class Consulter:
    """One call's consult tool: fast context first (when enabled), then the agent."""

    def __init__(self, manager: CallManager, call_id: str,
                 last_user_text: Callable[[], str]) -> None:
        self.manager = manager
        self.config: VoiceCallConfig = manager.config
        self.call_id = call_id
        self._last_user_text = last_user_text
        self._lock = asyncio.Lock()      # one consult in flight per call

    async def consult(self, args: Mapping[str, Any], fallback: str | None = None) -> str:
        """The answer for one consult; ``fallback``: the question when the model gave none."""
        call = self.manager.get(self.call_id)
        if call is None:
            return "The call has ended."
        question = question_of(args, fallback or self._last_user_text())
        context = args.get("context") if isinstance(args.get("context"), str) else None
        style = args.get("responseStyle") if isinstance(args.get("responseStyle"), str) \
            else None
        fc = self.config.realtime.fast_context
        if fc.enabled:
            hits = await self._fast_context(call, question, context)
            if hits:
                return fast_context_text(question, hits)
            if not fc.fallback_to_consult:
                return FAST_MISS_TEXT
        async with self._lock:
            return await self._run_consult(call, question, context, style)

    async def _run_consult(self, call: Call, question: str, context: str | None,
                           style: str | None) -> str:
        rt = self.config.realtime
        eff = effective_config(self.config, call.number_route_key)
        session = call_session_key(self.config, call)
        history = self.manager.memory.history(session)
        req = ResponseRequest(
            call_id=call.call_id, session_key=session,
            user_text=consult_prompt(question, context=context, style=style,
                                     transcript=[(t.role, t.text) for t in history]),
            history=history, system_prompt=eff.response_system_prompt,
            model=eff.response_model, timeout_ms=eff.response_timeout_ms,
            caller_number=call.from_number if call.direction == "inbound" else call.to_number,
            agent_id=eff.agent_id or "main", tools_allow=tools_allow(rt.tool_policy),
            thinking_level=rt.consult_thinking_level, fast_mode=rt.consult_fast_mode,
            purpose="consult")
        try:
            result = await self.manager.responder.respond(req, None)
        except VoicecallError as exc:
            log.warning("realtime.consult_failed", extra={"call_id": call.call_id,
                                                          "why": str(exc)})
            return ("The OpenClaw agent could not answer right now. Tell the caller briefly "
                    "and offer to try again.")
        text = (result.text or "").strip()
        return text or "The OpenClaw agent had nothing to add."

    async def _fast_context(self, call: Call, question: str,
                            context: str | None) -> list[Snippet]:
        """The local index's hits within ``timeoutMs`` (a timeout is a miss)."""
        fc = self.config.realtime.fast_context
        index = self.manager.fast_context
        if index is None:
            return []
        agent = effective_config(self.config, call.number_route_key).agent_id or "main"
        query = question + ("\n\n" + context if context else "")
        try:
            # On a timeout the search still finishes in its thread and fills the cache.
            return await asyncio.wait_for(asyncio.to_thread(
                index.search, agent, query, session_key=call_session_key(self.config, call),
                exclude_call_id=call.call_id, sources=fc.sources,
                max_results=fc.max_results), fc.timeout_ms / 1000)
        except (TimeoutError, OSError, VoicecallError) as exc:
            log.info("realtime.fast_context_miss", extra={"call_id": call.call_id,
                                                          "why": type(exc).__name__})
            return []
