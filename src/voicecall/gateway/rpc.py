"""JSON-RPC 2.0 methods of the control listener.

The dispatch table maps method names to coroutines over a ``CallManager``.
Parameter checking is here; the manager enforces call rules. Errors from the
exception tree become JSON-RPC error objects with stable codes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from voicecall.calls import Call
from voicecall.errors import (
    CallNotFoundError,
    CallStateError,
    ConfigError,
    RpcError,
    SetupIncompleteError,
    UsageError,
    VoicecallError,
)
from voicecall.gateway.manager import CallManager

log = logging.getLogger("voicecall.rpc")
Params = Mapping[str, Any]
Handler = Callable[["RpcContext", Params], Awaitable[Any]]
OPERATION_TTL_S = 300.0


def call_json(call: Call) -> dict[str, Any]:
    return call.to_dict()


@dataclass
class _Operation:
    task: asyncio.Task[str]
    finished_at: float | None = None


@dataclass
class RpcContext:
    """What methods act on. ``manager`` is None when setup is incomplete."""

    manager: CallManager | None
    setup_error: SetupIncompleteError | ConfigError | None = None
    operations: dict[str, _Operation] = field(default_factory=dict)

    def require(self) -> CallManager:
        if self.manager is None:
            err = self.setup_error
            msg = str(err) if err else "voice-call runtime is not running"
            data = {"missing": err.missing} if isinstance(err, SetupIncompleteError) else None
            raise RpcError(RpcError.SETUP_INCOMPLETE, msg, data)
        return self.manager


def _str(params: Params, key: str, *, required: bool = True) -> str | None:
    value = params.get(key)
    if value is None or value == "":
        if required:
            raise RpcError(RpcError.INVALID_PARAMS, f"{key} is required")
        return None
    if not isinstance(value, str):
        raise RpcError(RpcError.INVALID_PARAMS, f"{key} must be a string")
    return value


def _call_id(params: Params) -> str:
    value = _str(params, "callId", required=False) or _str(params, "sid", required=False)
    if not value:
        raise RpcError(RpcError.INVALID_PARAMS, "callId is required")
    return value


async def _initiate(ctx: RpcContext, p: Params, *, to_required: bool = False) -> Any:
    mode = _str(p, "mode", required=False)
    if mode not in (None, "notify", "conversation"):
        raise RpcError(RpcError.INVALID_PARAMS, "mode must be notify or conversation")
    call = await ctx.require().initiate(
        _str(p, "to", required=to_required), _str(p, "message", required=not to_required),
        mode,  # type: ignore[arg-type]
        _str(p, "dtmfSequence", required=False), _str(p, "sessionKey", required=False))
    return {"callId": call.call_id, "initiated": True}


async def _start(ctx: RpcContext, p: Params) -> Any:
    return await _initiate(ctx, p, to_required=True)


async def _continue(ctx: RpcContext, p: Params) -> Any:
    transcript = await ctx.require().continue_call(_call_id(p), _str(p, "message") or "")
    return {"success": True, "transcript": transcript}


def _poll_timeout_ms(ctx: RpcContext) -> int:
    return ctx.require().config.transcript_timeout_ms + 8000 + 30000


async def _continue_start(ctx: RpcContext, p: Params) -> Any:
    manager = ctx.require()
    call_id, message = _call_id(p), _str(p, "message") or ""
    manager._require_live(call_id)  # fail fast, before queuing
    _expire_operations(ctx)
    op_id = secrets.token_urlsafe(12)
    op = _Operation(asyncio.get_running_loop().create_task(
        manager.continue_call(call_id, message)))

    def finished(task: asyncio.Task[str]) -> None:
        op.finished_at = time.monotonic()
        if not task.cancelled():
            task.exception()  # retrieved: continue.result reports it, asyncio need not

    op.task.add_done_callback(finished)
    ctx.operations[op_id] = op
    return {"operationId": op_id, "status": "pending", "pollTimeoutMs": _poll_timeout_ms(ctx)}


def _expire_operations(ctx: RpcContext) -> None:
    now = time.monotonic()
    for key, op in list(ctx.operations.items()):
        if op.finished_at is not None and now - op.finished_at > OPERATION_TTL_S:
            del ctx.operations[key]


async def _continue_result(ctx: RpcContext, p: Params) -> Any:
    op_id = _str(p, "operationId") or ""
    op = ctx.operations.get(op_id)
    if op is None:
        raise RpcError(RpcError.NOT_FOUND, f"unknown operation: {op_id}")
    base = {"pollTimeoutMs": _poll_timeout_ms(ctx)}
    if not op.task.done():
        return {"status": "pending", **base}
    if op.task.cancelled():
        return {"status": "failed", "error": "cancelled", **base}
    exc = op.task.exception()
    if exc is not None:
        return {"status": "failed", "error": str(exc), **base}
    return {"status": "completed", "result": {"success": True, "transcript": op.task.result()},
            **base}


async def _speak(ctx: RpcContext, p: Params) -> Any:
    await ctx.require().speak(_call_id(p), _str(p, "message") or "")
    return {"success": True}


async def _dtmf(ctx: RpcContext, p: Params) -> Any:
    await ctx.require().send_dtmf(_call_id(p), _str(p, "digits") or "")
    return {"success": True}


async def _end(ctx: RpcContext, p: Params) -> Any:
    await ctx.require().end(_call_id(p))
    return {"success": True}


async def _status(ctx: RpcContext, p: Params) -> Any:
    manager = ctx.require()
    call_id = _str(p, "callId", required=False) or _str(p, "sid", required=False)
    if not call_id:
        return {"found": True, "calls": [call_json(c) for c in manager.active_calls()]}
    call = manager.get(call_id)
    return {"found": True, "call": call_json(call)} if call else {"found": False}


async def _list(ctx: RpcContext, p: Params) -> Any:
    manager = ctx.require()
    if p.get("all"):
        limit = p.get("limit", 50)
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 1000:
            raise RpcError(RpcError.INVALID_PARAMS, "limit must be an integer 1..1000")
        calls = manager.store.list(limit=limit)
    else:
        calls = manager.active_calls()
    return {"calls": [call_json(c) for c in calls]}


async def _ping(ctx: RpcContext, p: Params) -> Any:
    return {"ok": True, "runtime": ctx.manager is not None,
            "setupError": str(ctx.setup_error) if ctx.setup_error else None}


METHODS: dict[str, Handler] = {
    "voicecall.initiate": _initiate,
    "voicecall.start": _start,
    "voicecall.continue": _continue,
    "voicecall.continue.start": _continue_start,
    "voicecall.continue.result": _continue_result,
    "voicecall.speak": _speak,
    "voicecall.dtmf": _dtmf,
    "voicecall.end": _end,
    "voicecall.status": _status,
    "voicecall.list": _list,
    "voicecall.ping": _ping,
}


def _error_code(exc: VoicecallError) -> int:
    if isinstance(exc, RpcError):
        return exc.code
    if isinstance(exc, CallNotFoundError):
        return RpcError.NOT_FOUND
    if isinstance(exc, CallStateError):
        return RpcError.CONFLICT
    if isinstance(exc, UsageError | ConfigError):
        return RpcError.INVALID_PARAMS
    return RpcError.UNAVAILABLE


async def dispatch(ctx: RpcContext, body: bytes) -> dict[str, Any] | list[Any] | None:
    """Handle one JSON-RPC request (or batch) body; None means nothing to send back."""
    try:
        doc = json.loads(body)
    except ValueError:
        return _err(None, RpcError.PARSE_ERROR, "Parse error")
    if isinstance(doc, list):
        if not doc:
            return _err(None, RpcError.INVALID_REQUEST, "Invalid Request: empty batch")
        replies = [r for r in [await _one(ctx, item) for item in doc] if r is not None]
        return replies or None
    return await _one(ctx, doc)


def _err(req_id: Any, code: int, message: str, data: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": req_id, "error": error}


async def _one(ctx: RpcContext, req: Any) -> dict[str, Any] | None:
    if not isinstance(req, dict) or req.get("jsonrpc") != "2.0" \
            or not isinstance(req.get("method"), str):
        return _err(req.get("id") if isinstance(req, dict) else None,
                    RpcError.INVALID_REQUEST, "Invalid Request")
    req_id = req.get("id")
    # A notification never gets a reply, not even an error (JSON-RPC 2.0, section 4.1).
    is_notification = "id" not in req
    reply = await _run(ctx, req_id, req["method"], req.get("params", {}))
    return None if is_notification else reply


async def _run(ctx: RpcContext, req_id: Any, method: str, params: Any) -> dict[str, Any]:
    if not isinstance(params, dict):
        return _err(req_id, RpcError.INVALID_PARAMS, "params must be an object")
    handler = METHODS.get(method)
    if handler is None:
        return _err(req_id, RpcError.METHOD_NOT_FOUND, f"unknown method: {method}")
    try:
        result = await handler(ctx, params)
    except RpcError as exc:
        return _err(req_id, exc.code, str(exc), exc.data)
    except VoicecallError as exc:
        return _err(req_id, _error_code(exc), str(exc))
    except Exception:
        log.exception("rpc.internal_error", extra={"method": method})
        return _err(req_id, RpcError.INTERNAL_ERROR, "Internal error")
    return {"jsonrpc": "2.0", "id": req_id, "result": result}
