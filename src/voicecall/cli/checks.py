"""Configuration commands: setup, smoke, expose, doctor, verify-webhook."""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text

from voicecall.cli.context import Context
from voicecall.cli.ops import op_timeout, run_standalone_call
from voicecall.cli.output import console, emit_json, kv_table
from voicecall.client import GatewayClient
from voicecall.config import detect_legacy_keys, doctor_fix, find_config_path, read_document
from voicecall.errors import ConfigError, GatewayUnavailableError, UsageError
from voicecall.setup_checks import report
from voicecall.webhook_verify import verify_capture


def _print_setup(result: dict[str, Any]) -> None:
    status = "OK" if result["ok"] else "needs attention"
    table = Table(title=f"Voice Call setup: {status}", title_justify="left")
    table.add_column("", no_wrap=True)
    table.add_column("check", no_wrap=True)
    table.add_column("message", overflow="fold")
    for c in result["checks"]:
        mark = Text("OK", style="green") if c["ok"] else Text("FAIL", style="bold red")
        table.add_row(mark, Text(c["id"]), Text(c["message"]))
    console.print(table)


async def cmd_setup(ctx: Context, args: argparse.Namespace) -> int:
    result = report(ctx.loaded)
    if ctx.json:
        emit_json(result)
    else:
        _print_setup(result)
        for warning in ctx.loaded.warnings:  # e.g. legacy keys: "voicecall doctor --fix"
            console.print(Text(f"warning: {warning}", style="yellow"))
    return 0 if result["ok"] else 1


async def cmd_smoke(ctx: Context, args: argparse.Namespace) -> int:
    setup = report(ctx.loaded)
    if not ctx.json:
        _print_setup(setup)
    out: dict[str, Any]
    if not setup["ok"]:
        out = {"ok": False, "setup": setup}
    elif not args.to:
        out = {"ok": True, "setup": setup, "liveCall": False}
    elif not args.yes:
        out = {"ok": True, "setup": setup, "liveCall": False, "wouldCall": args.to}
    else:
        out = {"ok": True, "setup": setup, "liveCall": True,
               **await _smoke_call(ctx, args)}
    if ctx.json:
        emit_json(out)
    else:
        if out.get("liveCall"):
            ended = f", ended {out['state']}" if out.get("state") else ""
            console.print(Text(f"live-call: placed {out['callId']}{ended}"))
        elif "wouldCall" in out:
            console.print(Text(f"live-call: dry run (would call {out['wouldCall']}; "
                               "pass --yes)"))
        elif out["ok"]:
            console.print("live-call: skipped (pass --to and --yes to place one)")
    return 0 if out["ok"] else 1


async def _smoke_call(ctx: Context, args: argparse.Namespace) -> dict[str, Any]:
    """Place the smoke call on the gateway, else in-process (mock only) until it ends."""
    params = {"to": args.to, "message": args.message, "mode": args.mode}
    client = GatewayClient.discover(ctx.loaded.config, ctx.home)
    try:
        placed = await client.call("voicecall.start", params, op_timeout(ctx))
        return {"callId": placed["callId"]}
    except GatewayUnavailableError:
        pass
    final = await run_standalone_call(ctx, args.to, args.message, args.mode, None,
                                      echo=not ctx.json)
    return {"callId": final.call_id, "standalone": True, "state": final.state.value}


async def _run(*argv: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
    except TimeoutError:
        proc.kill()
        return 124, "timed out"
    # Bounded: a chatty child cannot flood our output.
    return proc.returncode or 0, out.decode(errors="replace")[-4000:]


async def cmd_expose(ctx: Context, args: argparse.Namespace) -> int:
    cfg = ctx.loaded.config
    mode = args.mode if args.mode in ("off", "serve", "funnel") else "funnel"
    path = args.path or cfg.tailscale.path or cfg.serve.path
    port = args.port if args.port is not None else cfg.serve.port
    if not 1 <= port <= 65535:
        raise UsageError("--port must be 1..65535")
    if shutil.which("tailscale") is None:
        raise UsageError("tailscale is not installed on this host; install it or set publicUrl")
    if mode == "off":
        await _run("tailscale", "serve", "off", path)
        code, text = await _run("tailscale", "funnel", "off", path)
        out: dict[str, Any] = {"ok": code == 0, "mode": "off", "path": path}
    else:
        local_url = f"http://127.0.0.1:{port}{args.serve_path or cfg.serve.path}"
        code, text = await _run("tailscale", mode, "--bg", "--yes", "--set-path", path,
                                local_url)
        out = {"ok": code == 0, "mode": mode, "path": path, "localUrl": local_url}
        if code != 0:
            out["hint"] = {"note": "Tailscale serve/funnel may be disabled on this tailnet "
                                   "(or require admin enable).", "output": text.strip()}
    if ctx.json:
        emit_json(out)
    else:
        console.print(kv_table(f"Tailscale {mode}", out))
    return 0 if out["ok"] else 1


async def cmd_doctor(ctx: Context, args: argparse.Namespace) -> int:
    path = find_config_path(ctx.config_path)
    if path is None:
        result: dict[str, Any] = {"ok": True, "config": None, "legacyKeys": [],
                                  "message": "no config file; embedded defaults in use"}
    elif args.fix:
        res = doctor_fix(path)
        result = {"ok": True, "config": str(path), "changed": res.changed,
                  "changes": res.changes, "backup": str(res.backup) if res.backup else None}
    else:
        legacy = detect_legacy_keys(read_document(path))
        result = {"ok": not legacy, "config": str(path), "legacyKeys": legacy}
        if legacy:
            result["message"] = 'legacy keys found: run "voicecall doctor --fix"'
    if ctx.json:
        emit_json(result)
    else:
        console.print(kv_table("voicecall doctor", {
            k: "\n".join(v) if isinstance(v, list) else v for k, v in result.items()}))
    return 0 if result["ok"] else 1


def _read_capture(name: str) -> Any:
    try:
        return json.loads(Path(name).read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read {name}: {exc.strerror}") from None
    except ValueError as exc:
        raise ConfigError(f"{name} is not JSON: {exc}") from None


async def cmd_verify_webhook(ctx: Context, args: argparse.Namespace) -> int:
    ok, reason = verify_capture(_read_capture(args.capture))
    if ctx.json:
        emit_json({"valid": ok, "reason": reason})
    else:
        print("valid" if ok else f"invalid: {reason}")
    return 0 if ok else 1
