"""The ``voice_call`` agent tool: a JSON schema plus a function any agent framework can call.

Results follow the reference tool: a dict result on success, ``{"error": ...}``
on failure (errors are returned to the model, not raised).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from voicecall.errors import VoicecallError

log = logging.getLogger("voicecall.tool")

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


def _action_rules(action: str) -> dict[str, Any]:
    required, optional = _ACTION_ARGS[action]
    rules: dict[str, Any] = {
        "required": list(required),
        "propertyNames": {"enum": ["action", *required, *optional]},
    }
    if "dtmfSequence" in optional:
        rules["if"] = {"required": ["dtmfSequence"]}
        rules["then"] = {"required": ["mode"], "properties": {"mode": {"const": "conversation"}}}
    return rules


def _action_chain(actions: list[str]) -> dict[str, Any]:
    """``if action == A then A's rules else (if action == B ...)``, innermost last."""
    first, rest = actions[0], actions[1:]
    node: dict[str, Any] = {
        "if": {"properties": {"action": {"const": first}}, "required": ["action"]},
        "then": _action_rules(first),
    }
    if rest:
        node["else"] = _action_chain(rest)
    return node


def _action_help() -> str:
    parts = []
    for action, (required, optional) in _ACTION_ARGS.items():
        args = [*required, *(f"{k}?" for k in optional)]
        parts.append(f"{action}({', '.join(args)})")
    return "What to do: " + "; ".join(parts) + "."


def tool_schema() -> dict[str, Any]:
    """The tool definition in the common function-calling shape.

    ``parameters`` is one flat object (every argument of every action) with the
    per-action rules in an ``if``/``then``/``else`` chain keyed on ``action``:
    tool-use APIs reject ``oneOf``/``anyOf``/``allOf`` at the top level of a tool's
    input schema, so the action forms are not a union there.
    """
    properties: dict[str, Any] = {
        "action": {"type": "string", "enum": list(_ACTION_ARGS), "description": _action_help()},
    }
    properties.update(_PROPS)
    return {
        "name": TOOL_NAME,
        "description": DESCRIPTION,
        "parameters": {
            "type": "object",
            "properties": properties,
            "required": ["action"],
            "additionalProperties": False,
            **_action_chain(list(_ACTION_ARGS)),
        },
    }


def validate_args(args: Any) -> str | None:
    """Check ``args`` against the schema's rules; returns an error message or None."""
    if not isinstance(args, Mapping):
        return "arguments must be an object"
    action = args.get("action")
    if action not in _ACTION_ARGS:
        return f"action must be one of: {', '.join(_ACTION_ARGS)}"
    required, optional = _ACTION_ARGS[str(action)]
    allowed = {"action", *required, *optional}
    extra = sorted(str(k) for k in set(args) - allowed)
    if extra:
        return f"unexpected argument(s) for {action}: {', '.join(extra)}"
    for key in required:
        if not isinstance(args.get(key), str) or not args[key]:
            return f"{key} is required for {action}"
    for key in optional:
        if key in args and not isinstance(args[key], str):
            return f"{key} must be a string"
    # fullmatch + ASCII: like the schema's ECMA-262 patterns, no trailing newline and no
    # non-ASCII digits (Python's \d and $ would let "+١٥٥٥…" or "+1555…\n" through).
    if "to" in args and not re.fullmatch(_E164, args["to"], re.ASCII):
        return "to must be an E.164 number, e.g. +15550001234"
    if "mode" in args and args["mode"] not in ("notify", "conversation"):
        return "mode must be notify or conversation"
    for key in ("digits", "dtmfSequence"):
        if key in args and not re.fullmatch(_DTMF, args[key], re.ASCII):
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
    """Run one tool call through ``rpc(method, params)`` (a ``GatewayClient.call``).

    Never raises for a failed call: the model gets ``{"error": "..."}`` to act on,
    like the reference tool. Only cancellation propagates.
    """
    problem = validate_args(args)
    if problem:
        return {"error": problem}
    params = {k: v for k, v in args.items() if k != "action"}
    try:
        result = await rpc(_METHOD[str(args["action"])], params)
    except VoicecallError as exc:
        return {"error": str(exc)}
    except Exception as exc:  # an agent loop must not die on a transport hiccup
        log.warning("voice_call.failed", extra={"why": type(exc).__name__})
        return {"error": f"{type(exc).__name__}: {exc}"}
    return dict(result) if isinstance(result, Mapping) else {"result": result}


def as_text(result: Mapping[str, Any]) -> str:
    """The tool result as the text content an LLM sees."""
    return json.dumps(result, ensure_ascii=False)
