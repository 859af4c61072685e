"""``tail`` and ``latency``: readers of the append-only ``calls.jsonl`` event log."""

from __future__ import annotations

import argparse
import json
import threading
from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text

from voicecall.cli.context import Context
from voicecall.cli.output import console, emit_json, print_record
from voicecall.errors import UsageError
from voicecall.gateway.runtime import store_dir
from voicecall.store.eventlog import follow, latency_summary, tail_lines

EVENTS_FILE = "calls.jsonl"


def _events_path(ctx: Context, file: str | None) -> Path:
    if file:
        path = Path(file).expanduser()
        if not path.is_file():
            raise UsageError(f"no such file: {path}")
        return path
    return store_dir(ctx.loaded.config, ctx.home) / EVENTS_FILE


def _out(ctx: Context, rec: dict[str, Any]) -> None:
    if ctx.json:
        print(json.dumps(rec, ensure_ascii=False), flush=True)
    else:
        print_record(rec, show_unknown=True)


async def cmd_tail(ctx: Context, args: argparse.Namespace) -> int:
    path = _events_path(ctx, args.file)
    if args.poll < 50:
        raise UsageError("--poll must be at least 50 ms")
    # Follow from the size seen *before* printing the backlog, and skip what the
    # backlog already showed: nothing appended in between is lost or doubled.
    offset = path.stat().st_size if path.exists() else 0
    last_seq = -1
    if path.exists():
        for rec in tail_lines(path, args.since):
            _out(ctx, rec)
            last_seq = max(last_seq, _seq(rec))
    if args.no_follow:
        return 0
    stop = threading.Event()
    try:
        for rec in follow(path, poll_s=args.poll / 1000, stop=stop, start_offset=offset):
            if _seq(rec) > last_seq or _seq(rec) < 0:
                _out(ctx, rec)
    except KeyboardInterrupt:
        stop.set()
    return 0


def _seq(rec: dict[str, Any]) -> int:
    seq = rec.get("seq")
    return seq if isinstance(seq, int) else -1


def _stats_row(table: Table, name: str, s: dict[str, Any]) -> None:
    table.add_row(name, str(s["count"]), *(f"{s[k]:.1f}" for k in
                                           ("p50Ms", "p90Ms", "p99Ms", "minMs", "maxMs", "avgMs")))


async def cmd_latency(ctx: Context, args: argparse.Namespace) -> int:
    if args.last < 1:
        raise UsageError("--last must be at least 1")
    path = _events_path(ctx, args.file)
    summary = latency_summary(path, last=args.last) if path.exists() else _empty_summary()
    if ctx.json:
        emit_json(summary)
        return 0
    table = Table(title=Text(f"Turn latency ({summary['turns']} turns from {path})"),
                  title_justify="left")
    for col in ("series", "count", "p50 ms", "p90 ms", "p99 ms", "min", "max", "avg"):
        table.add_column(col, justify="right" if col != "series" else "left")
    _stats_row(table, "turn latency", summary["turnLatency"])
    _stats_row(table, "listen wait", summary["listenWait"])
    for stage, stats in sorted(summary.get("breakdown", {}).items()):
        _stats_row(table, f"  {stage}", stats)
    console.print(table)
    return 0


def _empty_summary() -> dict[str, Any]:
    zero = {"count": 0, "minMs": 0.0, "maxMs": 0.0, "avgMs": 0.0, "p50Ms": 0.0, "p90Ms": 0.0,
            "p99Ms": 0.0}
    return {"recordsScanned": 0, "turns": 0, "turnLatency": dict(zero),
            "listenWait": dict(zero), "breakdown": {}}
