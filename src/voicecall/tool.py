"""The ``voice_call`` agent tool: a JSON schema plus a function any agent framework can call.

Results follow the reference tool: a dict result on success, ``{"error": ...}``
on failure (errors are returned to the model, not raised).
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from voicecall.errors import VoicecallError

TOOL_NAME = "voice_call"
DESCRIPTION = "Make phone calls and have voice conversations via the voice-call gateway."
_DTMF = "^[0-9*#wWpP,]+$"
_E164 = r"^\+[1-9]\d{1,14}$"

_ACTION_ARGS: dict[str, tuple[list[str], list[str]]] = {
    # action: (required, optional)
    "initiate_call": (["message"], ["to", "mode", "dtmfSequence"]),
    "continue_call": (["callId", "message"], []),
    "speak_to_user": (["callId", "message"], []),
    "send_dtmf": (["callId", "digits"], []),
    "end_call": (["callId"], []),
    "get_status": (["callId"], []),
}

_PROPS: dict[str, dict[str, Any]] = {
    "message": {"type": "string", "minLength": 1, "description": "What to say."},
    "to": {"type": "string", "pattern": _E164,
           "description": "E.164 number to call; defaults to the configured toNumber."},
    "mode": {"type": "string", "enum": ["notify", "conversation"],
             "description": "notify: say the message and hang up; conversation: talk."},
    "dtmfSequence": {"type": "string", "pattern": _DTMF,
                     "description": "Keys to press after connect (w = 0.5 s wait). "
                                    "Only valid with mode 'conversation'."},
    "callId": {"type": "string", "minLength": 1, "description": "Call id (ours or carrier's)."},
    "digits": {"type": "string", "pattern": _DTMF, "description": "DTMF digits to send."},
}


def tool_schema() -> dict[str, Any]:
    """The tool definition in the common function-calling shape."""
    variants = []
    for action, (required, optional) in _ACTION_ARGS.items():
        props = {"action": {"const": action}}
        props.update({k: _PROPS[k] for k in required + optional})
        variant: dict[str, Any] = {"type": "object", "properties": props,
                                   "required": ["action", *required],
                                   "additionalProperties": False}
        if action == "initiate_call":
            variant["if"] = {"required": ["dtmfSequence"]}
            variant["then"] = {"required": ["mode"],
                               "properties": {"mode": {"const": "conversation"}}}
        variants.append(variant)
    return {
        "name": TOOL_NAME,
        "description": DESCRIPTION,
        "parameters": {"type": "object", "oneOf": variants},
    }


def validate_args(args: Mapping[str, Any]) -> str | None:
    """Check ``args`` against the schema's rules; returns an error message or None."""
    action = args.get("action")
    if action not in _ACTION_ARGS:
        return f"action must be one of: {', '.join(_ACTION_ARGS)}"
    required, optional = _ACTION_ARGS[str(action)]
    allowed = {"action", *required, *optional}
    extra = sorted(set(args) - allowed)
    if extra:
        return f"unexpected argument(s) for {action}: {', '.join(extra)}"
    for key in required:
        if not isinstance(args.get(key), str) or not args[key]:
            return f"{key} is required for {action}"
    for key in optional:
        if key in args and not isinstance(args[key], str):
            return f"{key} must be a string"
    if "to" in args and not re.match(_E164, args["to"]):
        return "to must be an E.164 number, e.g. +15550001234"
    if "mode" in args and args["mode"] not in ("notify", "conversation"):
        return "mode must be notify or conversation"
    for key in ("digits", "dtmfSequence"):
        if key in args and not re.match(_DTMF, args[key]):
            return "digits may only contain digits, *, #, comma, w, p"
    if "dtmfSequence" in args and args.get("mode") != "conversation":
        return 'dtmfSequence is only valid with mode: "conversation"'
    return None


RpcCall = Callable[[str, dict[str, Any]], Awaitable[Any]]

_METHOD = {
    "initiate_call": "voicecall.initiate",
    "continue_call": "voicecall.continue",
    "speak_to_user": "voicecall.speak",
    "send_dtmf": "voicecall.dtmf",
    "end_call": "voicecall.end",
    "get_status": "voicecall.status",
}


async def voice_call(args: Mapping[str, Any], rpc: RpcCall) -> dict[str, Any]:
    """Run one tool call through ``rpc(method, params)`` (a ``GatewayClient.call``)."""
    problem = validate_args(args)
    if problem:
        return {"error": problem}
    params = {k: v for k, v in args.items() if k != "action"}
    try:
        result = await rpc(_METHOD[str(args["action"])], params)
    except VoicecallError as exc:
        return {"error": str(exc)}
    return dict(result) if isinstance(result, Mapping) else {"result": result}


def as_text(result: Mapping[str, Any]) -> str:
    """The tool result as the text content an LLM sees."""
    return json.dumps(result, ensure_ascii=False)
