"""Operational commands: serve, call, continue, speak, dtmf, end, status, tool-schema, demo."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from rich.text import Text

from voicecall.calls import Call
from voicecall.cli.context import Context
from voicecall.cli.output import calls_table, console, emit_json, kv_table, print_record
from voicecall.client import GatewayClient
from voicecall.errors import GatewayUnavailableError, RpcError, UsageError
from voicecall.gateway.manager import CallManager
from voicecall.gateway.rpc import call_json
from voicecall.gateway.runtime import close_runtime, open_runtime, store_dir
from voicecall.gateway.server import run_gateway
from voicecall.store import SqliteCallStore
from voicecall.tool import tool_schema

LocalOp = Callable[[CallManager], Awaitable[Any]]

# The reference polls every 1000 ms; start faster so a quick reply is not held back.
_POLL_FIRST_S, _POLL_MAX_S = 0.1, 1.0


async def cmd_serve(ctx: Context, args: argparse.Namespace) -> int:
    loaded = ctx.loaded
    console.print(Text(f"voicecall gateway: provider={loaded.config.provider} "
                       f"webhook={loaded.config.serve.bind}:{loaded.config.serve.port}"
                       f"{loaded.config.serve.path} control={loaded.config.control.bind}:"
                       f"{loaded.config.control.port}"))
    await run_gateway(loaded, ctx.home)
    return 0


@contextlib.asynccontextmanager
async def standalone(ctx: Context) -> AsyncIterator[CallManager]:
    """An in-process runtime with no listeners, for when no gateway answers."""
    rt = await open_runtime(ctx.loaded, ctx.home)
    try:
        if rt.manager is None:
            assert rt.setup_error is not None
            raise rt.setup_error
        yield rt.manager
    finally:
        await close_runtime(rt)


def require_local_carrier(ctx: Context) -> None:
    """Placing a call without a gateway only works for the in-process mock carrier.

    A real carrier sends its webhooks to the gateway's listener, and the CLI never
    binds a second one.
    """
    if ctx.loaded.config.provider != "mock":
        raise UsageError("no gateway is running: start it with `voicecall serve` so carrier "
                         "webhooks have somewhere to arrive")


async def rpc_or_local(ctx: Context, method: str, params: dict[str, Any], local: LocalOp,
                       timeout_s: float = 30.0) -> Any:
    """``method`` on the running gateway; ``local`` in-process only if none answers.

    Only a transport-level failure (nothing listening) falls back: auth, request and
    timeout errors propagate, so a call is never placed twice or by the wrong process.
    """
    client = GatewayClient.discover(ctx.loaded.config, ctx.home)
    try:
        return await client.call(method, params, timeout_s)
    except GatewayUnavailableError:
        pass
    async with standalone(ctx) as manager:
        return await local(manager)


def _show(ctx: Context, result: Any, title: str) -> None:
    if ctx.json:
        emit_json(result)
    elif isinstance(result, dict):
        console.print(kv_table(title, result))
    else:
        console.print(Text(str(result)))


def op_timeout(ctx: Context) -> float:
    return max(30.0, ctx.loaded.config.ring_timeout_ms / 1000 + 10)


async def run_standalone_call(ctx: Context, to: str | None, message: str | None,
                              mode: Any, dtmf_sequence: str | None, *, echo: bool) -> Call:
    """Place a call in-process and stay up until it ends (this process is the runtime).

    With ``echo`` every event record is printed as it lands. Returns the final call.
    """
    require_local_carrier(ctx)
    async with standalone(ctx) as manager:
        ended: set[str] = set()
        changed = asyncio.Event()

        def on_record(rec: dict[str, Any]) -> None:
            if echo:
                print_record(rec)
            if rec.get("type") == "call.state" and rec.get("reason"):
                ended.add(str(rec.get("callId")))
                changed.set()

        manager.subscribe(on_record)
        call = await manager.initiate(to, message, mode, dtmf_sequence)
        limit = ctx.loaded.config.max_duration_seconds + 30
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(limit):
                while call.call_id not in ended:
                    changed.clear()
                    await changed.wait()
        return manager.get(call.call_id) or call


async def cmd_call(ctx: Context, args: argparse.Namespace) -> int:
    params = {"to": args.to, "message": args.message, "mode": args.mode,
              "dtmfSequence": args.dtmf_sequence}
    params = {k: v for k, v in params.items() if v is not None}
    method = "voicecall.start" if args.command == "start" else "voicecall.initiate"
    client = GatewayClient.discover(ctx.loaded.config, ctx.home)
    try:
        result = await client.call(method, params, op_timeout(ctx))
    except GatewayUnavailableError:
        result = None
    if result is not None:
        _show(ctx, result, "Call placed")
        return 0
    final = await run_standalone_call(ctx, args.to, args.message, args.mode,
                                      args.dtmf_sequence, echo=not ctx.json)
    if ctx.json:
        emit_json({"callId": final.call_id, "initiated": True, "standalone": True,
                   "call": call_json(final)})
    else:
        console.print(kv_table("Call (standalone: no gateway running)", {
            "callId": final.call_id, "state": final.state.value,
            "endReason": final.end_reason.value if final.end_reason else None}))
    return 0


async def cmd_continue(ctx: Context, args: argparse.Namespace) -> int:
    cfg = ctx.loaded.config
    client = GatewayClient.discover(cfg, ctx.home)
    params = {"callId": args.call_id, "message": args.message}
    blocking_timeout_s = cfg.transcript_timeout_ms / 1000 + 40
    try:
        op = await client.call("voicecall.continue.start", params)
    except GatewayUnavailableError:
        async with standalone(ctx) as manager:
            transcript = await manager.continue_call(args.call_id, args.message)
        _show(ctx, {"success": True, "transcript": transcript}, "Reply")
        return 0
    except RpcError as exc:
        if exc.code != RpcError.METHOD_NOT_FOUND:
            raise
        # An older gateway without the start/poll pair: the blocking form.
        _show(ctx, await client.call("voicecall.continue", params, blocking_timeout_s), "Reply")
        return 0
    deadline = time.monotonic() + op["pollTimeoutMs"] / 1000
    pause = _POLL_FIRST_S
    while time.monotonic() < deadline:
        res = await client.call("voicecall.continue.result", {"operationId": op["operationId"]})
        if res["status"] == "completed":
            _show(ctx, res["result"], "Reply")
            return 0
        if res["status"] == "failed":
            raise RpcError(RpcError.CONFLICT, res.get("error") or "continue failed")
        await asyncio.sleep(pause)
        pause = min(_POLL_MAX_S, pause * 2)
    raise RpcError(RpcError.UNAVAILABLE, "timed out waiting for the continue result")


async def cmd_speak(ctx: Context, args: argparse.Namespace) -> int:
    async def local(m: CallManager) -> Any:
        await m.speak(args.call_id, args.message)
        return {"success": True}
    _show(ctx, await rpc_or_local(ctx, "voicecall.speak",
                                  {"callId": args.call_id, "message": args.message}, local),
          "Speak")
    return 0


async def cmd_dtmf(ctx: Context, args: argparse.Namespace) -> int:
    async def local(m: CallManager) -> Any:
        await m.send_dtmf(args.call_id, args.digits)
        return {"success": True}
    _show(ctx, await rpc_or_local(ctx, "voicecall.dtmf",
                                  {"callId": args.call_id, "digits": args.digits}, local),
          "DTMF")
    return 0


async def cmd_end(ctx: Context, args: argparse.Namespace) -> int:
    async def local(m: CallManager) -> Any:
        await m.end(args.call_id)
        return {"success": True}
    _show(ctx, await rpc_or_local(ctx, "voicecall.end", {"callId": args.call_id}, local), "End")
    return 0


async def cmd_status(ctx: Context, args: argparse.Namespace) -> int:
    client = GatewayClient.discover(ctx.loaded.config, ctx.home)
    try:
        if args.all:
            result = await client.call("voicecall.list", {"all": True})
            result = {"found": True, **result}
        else:
            params = {"callId": args.call_id} if args.call_id else {}
            result = await client.call("voicecall.status", params)
    except GatewayUnavailableError:
        result = _status_from_store(ctx, args)  # reading the store starts no runtime
    if ctx.json:
        emit_json(result)
    elif not result.get("found"):
        console.print("call not found")
    elif "call" in result:
        call = result["call"]
        console.print(calls_table([call], "Call"))
        for t in call.get("transcript", []):
            console.print(Text(f"  {t['speaker']:>4}: {t['text']}"))
    else:
        console.print(calls_table(result.get("calls", []),
                                  "Recent calls" if args.all else "Active calls"))
    return 0 if result.get("found") else 1


def _status_from_store(ctx: Context, args: argparse.Namespace) -> dict[str, Any]:
    store = SqliteCallStore(store_dir(ctx.loaded.config, ctx.home))
    try:
        if args.call_id:
            call: Call | None = store.get(args.call_id) or store.get_by_provider_id(args.call_id)
            return {"found": True, "call": call_json(call)} if call else {"found": False}
        calls = store.list(limit=50) if args.all else store.load_active()
        return {"found": True, "calls": [call_json(c) for c in calls]}
    finally:
        store.close()


async def cmd_tool_schema(ctx: Context, args: argparse.Namespace) -> int:
    emit_json(tool_schema())
    return 0


async def cmd_demo(ctx: Context, args: argparse.Namespace) -> int:
    from voicecall.cli.demo import run_demo
    return await run_demo(keep=args.keep)
