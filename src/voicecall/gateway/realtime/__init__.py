"""Realtime voice: a carrier media stream bridged to a full-duplex realtime model.

``bridge`` moves audio, marks and barge-in between the two; ``consult`` holds the
tools the model may call and the consult tool's path to the call's agent;
``context`` builds the session instructions; ``fast`` the fast-context search.
"""

from voicecall.gateway.realtime.bridge import MediaPort, RealtimeBridge, Truncation
from voicecall.gateway.realtime.consult import (
    ALWAYS_GUIDANCE,
    CONSULT_TOOL_NAME,
    END_CALL_TOOL_NAME,
    SAFE_READ_ONLY_TOOLS,
    SUBSTANTIVE_GUIDANCE,
    Consulter,
    build_tools,
    consult_guidance,
    consult_prompt,
    tools_allow,
)
from voicecall.gateway.realtime.context import build_agent_context, build_instructions
from voicecall.gateway.realtime.fast import (
    FAST_MISS_TEXT,
    FastContext,
    Snippet,
    fast_context_text,
)

__all__ = [
    "ALWAYS_GUIDANCE",
    "CONSULT_TOOL_NAME",
    "END_CALL_TOOL_NAME",
    "FAST_MISS_TEXT",
    "FastContext",
    "SAFE_READ_ONLY_TOOLS",
    "SUBSTANTIVE_GUIDANCE",
    "Consulter",
    "MediaPort",
    "RealtimeBridge",
    "Snippet",
    "Truncation",
    "build_agent_context",
    "build_instructions",
    "build_tools",
    "consult_guidance",
    "consult_prompt",
    "fast_context_text",
    "tools_allow",
]
