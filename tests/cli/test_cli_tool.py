"""The ``voice_call`` agent tool: schema shape, argument validation (and that the
schema and ``validate_args`` agree), and ``voice_call`` over a fake RPC. The same
function against a real gateway is in ``test_cli_gateway.py``."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from cli_testkit import Result

from voicecall.errors import CallNotFoundError, RpcError
from voicecall.tool import as_text, tool_schema, validate_args, voice_call

CliRunner = Callable[..., Result]
ACTIONS = {
    "initiate_call": ({"message"}, {"to", "mode", "dtmfSequence"}),
    "continue_call": ({"callId", "message"}, set()),
    "speak_to_user": ({"callId", "message"}, set()),
    "send_dtmf": ({"callId", "digits"}, set()),
    "end_call": ({"callId"}, set()),
    "get_status": ({"callId"}, set()),
}
KNOWN_KEYWORDS = {"type", "properties", "required", "additionalProperties", "enum", "const",
                  "pattern", "minLength", "description", "if", "then", "else", "propertyNames"}


def _type_ok(kind: str, value: Any) -> bool:
    return {"object": isinstance(value, dict), "string": isinstance(value, str)}[kind]


def schema_valid(schema: Mapping[str, Any], value: Any) -> bool:
    """A JSON Schema evaluator for exactly the keywords the tool schema uses."""
    unknown = set(schema) - KNOWN_KEYWORDS
    assert not unknown, f"extend the test evaluator for {unknown}"
    if "type" in schema and not _type_ok(schema["type"], value):
        return False
    if "const" in schema and value != schema["const"]:
        return False
    if "enum" in schema and value not in schema["enum"]:
        return False
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            return False
        # ECMA-262 semantics: "$" only at the very end, "\d" only ASCII digits.
        pattern = re.sub(r"\$$", r"\\Z", schema.get("pattern", ""))
        if pattern and not re.search(pattern, value, re.ASCII):
            return False
    if isinstance(value, dict):
        if any(k not in value for k in schema.get("required", [])):
            return False
        props = schema.get("properties", {})
        for key, sub in props.items():
            if key in value and not schema_valid(sub, value[key]):
                return False
        if schema.get("additionalProperties") is False and set(value) - set(props):
            return False
        if "propertyNames" in schema and not all(schema_valid(schema["propertyNames"], k)
                                                 for k in value):
            return False
    if "if" in schema:
        branch = "then" if schema_valid(schema["if"], value) else "else"
        if branch in schema and not schema_valid(schema[branch], value):
            return False
    return True


def walk(node: Any) -> list[Mapping[str, Any]]:
    if not isinstance(node, Mapping):
        return []
    found = [node]
    for key in ("if", "then", "else", "propertyNames"):
        found += walk(node.get(key))
    for sub in node.get("properties", {}).values():
        found += walk(sub)
    return found


# -- schema ---------------------------------------------------------------------------


def test_schema_shape_is_accepted_by_tool_use_apis() -> None:
    tool = tool_schema()
    assert tool["name"] == "voice_call" and tool["description"]
    params = tool["parameters"]
    assert params["type"] == "object" and params["required"] == ["action"]
    assert params["additionalProperties"] is False
    # Anthropic and OpenAI reject a top-level union in a tool's input schema.
    assert not {"oneOf", "anyOf", "allOf"} & set(params)
    assert params["properties"]["action"]["enum"] == list(ACTIONS)
    for arg in ("message", "to", "mode", "dtmfSequence", "callId", "digits"):
        assert params["properties"][arg]["type"] == "string"
        assert params["properties"][arg]["description"]
    for node in walk(params):
        assert not set(node) - KNOWN_KEYWORDS
        if "pattern" in node:
            re.compile(node["pattern"])
    json.dumps(tool)  # plain JSON


def test_schema_requires_each_actions_args() -> None:
    params = tool_schema()["parameters"]
    values = {"message": "Hi", "to": "+15550100200", "mode": "conversation",
              "dtmfSequence": "12#", "callId": "call-1", "digits": "9"}
    for action, (required, optional) in ACTIONS.items():
        full = {"action": action, **{k: values[k] for k in required | optional}}
        assert schema_valid(params, full), action
        for missing in required:
            assert not schema_valid(params, {k: v for k, v in full.items() if k != missing})
        for other in set(values) - required - optional:
            assert not schema_valid(params, {**full, other: values[other]}), (action, other)


def test_schema_dtmf_sequence_needs_conversation_mode() -> None:
    params = tool_schema()["parameters"]
    base = {"action": "initiate_call", "message": "Hi", "dtmfSequence": "1234#"}
    assert schema_valid(params, {**base, "mode": "conversation"})
    assert not schema_valid(params, {**base, "mode": "notify"})
    assert not schema_valid(params, base)


def test_tool_schema_command(cli: CliRunner, home: Path) -> None:
    for args in (["tool-schema"], ["tool-schema", "--json"]):
        res = cli(*args)
        assert res.code == 0 and res.json() == tool_schema()


# -- validate_args ----------------------------------------------------------------------

CASES: list[tuple[Any, str | None]] = [
    ({"action": "initiate_call", "message": "Hi"}, None),
    ({"action": "initiate_call", "message": "Hi", "to": "+15550100200", "mode": "notify"}, None),
    ({"action": "initiate_call", "message": "Hi", "mode": "conversation",
      "dtmfSequence": "w12#"}, None),
    ({"action": "continue_call", "callId": "c1", "message": "And?"}, None),
    ({"action": "speak_to_user", "callId": "c1", "message": "Hold on."}, None),
    ({"action": "send_dtmf", "callId": "c1", "digits": "1*#wWpP,"}, None),
    ({"action": "end_call", "callId": "c1"}, None),
    ({"action": "get_status", "callId": "c1"}, None),
    (None, "arguments must be an object"),
    (["initiate_call"], "arguments must be an object"),
    ({}, "action must be one of"),
    ({"action": "hang_up", "callId": "c1"}, "action must be one of"),
    ({"action": "initiate_call"}, "message is required for initiate_call"),
    ({"action": "initiate_call", "message": ""}, "message is required for initiate_call"),
    ({"action": "continue_call", "message": "x"}, "callId is required for continue_call"),
    ({"action": "get_status", "callId": 5}, "callId is required for get_status"),
    ({"action": "end_call", "callId": "c1", "message": "x"},
     "unexpected argument(s) for end_call: message"),
    ({"action": "initiate_call", "message": "Hi", "to": "5550100200"}, "to must be an E.164"),
    ({"action": "initiate_call", "message": "Hi", "to": "+15550100200\n"}, "to must be an E.164"),
    ({"action": "initiate_call", "message": "Hi", "to": "+١٥٥٥٠١٠٠٢٠٠"}, "to must be an E.164"),
    ({"action": "initiate_call", "message": "Hi", "to": 15550100200}, "to must be a string"),
    ({"action": "initiate_call", "message": "Hi", "mode": "shout"}, "mode must be"),
    ({"action": "send_dtmf", "callId": "c1", "digits": "12a"}, "digits may only contain"),
    ({"action": "send_dtmf", "callId": "c1", "digits": "12\n"}, "digits may only contain"),
    ({"action": "initiate_call", "message": "Hi", "dtmfSequence": "1"},
     'dtmfSequence is only valid with mode: "conversation"'),
    ({"action": "initiate_call", "message": "Hi", "mode": "notify", "dtmfSequence": "1"},
     'dtmfSequence is only valid with mode: "conversation"'),
]


@pytest.mark.parametrize(("args", "problem"), CASES)
def test_validate_args(args: Any, problem: str | None) -> None:
    got = validate_args(args)
    if problem is None:
        assert got is None
    else:
        assert got is not None and problem in got


@pytest.mark.parametrize(("args", "problem"), CASES)
def test_schema_agrees_with_validate_args(args: Any, problem: str | None) -> None:
    assert schema_valid(tool_schema()["parameters"], args) is (problem is None)


# -- voice_call over a fake RPC ---------------------------------------------------------


class FakeRpc:
    def __init__(self, reply: Any = None, error: BaseException | None = None) -> None:
        self.reply = reply if reply is not None else {"success": True}
        self.error = error
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def __call__(self, method: str, params: dict[str, Any]) -> Any:
        self.calls.append((method, params))
        if self.error is not None:
            raise self.error
        return self.reply


@pytest.mark.parametrize(("action", "method"), [
    ("initiate_call", "voicecall.initiate"), ("continue_call", "voicecall.continue"),
    ("speak_to_user", "voicecall.speak"), ("send_dtmf", "voicecall.dtmf"),
    ("end_call", "voicecall.end"), ("get_status", "voicecall.status")])
async def test_voice_call_maps_actions_to_rpc(action: str, method: str) -> None:
    values = {"message": "Hi", "callId": "c1", "digits": "1"}
    args = {"action": action, **{k: values[k] for k in ACTIONS[action][0]}}
    rpc = FakeRpc({"ok": 1})
    assert await voice_call(args, rpc) == {"ok": 1}
    assert rpc.calls == [(method, {k: v for k, v in args.items() if k != "action"})]


async def test_voice_call_returns_errors() -> None:
    rpc = FakeRpc()
    bad = await voice_call({"action": "send_dtmf", "callId": "c1", "digits": "x"}, rpc)
    assert "digits may only contain" in bad["error"] and rpc.calls == []  # never sent

    for error, text in [(RpcError(RpcError.NOT_FOUND, "call not found: c1"), "call not found"),
                        (CallNotFoundError("call not found: c1"), "call not found"),
                        (httpx.ReadError("connection reset"), "connection reset"),
                        (RuntimeError("boom"), "boom")]:
        got = await voice_call({"action": "end_call", "callId": "c1"}, FakeRpc(error=error))
        assert set(got) == {"error"} and text in got["error"]

    odd = await voice_call({"action": "end_call", "callId": "c1"}, FakeRpc(reply=[1, 2]))
    assert odd == {"result": [1, 2]}
    assert json.loads(as_text(bad)) == bad


async def test_voice_call_lets_cancellation_through() -> None:
    with pytest.raises(asyncio.CancelledError):
        await voice_call({"action": "end_call", "callId": "c1"},
                         FakeRpc(error=asyncio.CancelledError()))
