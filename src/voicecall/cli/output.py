"""Printing: Rich tables for people, JSON for scripts.

Text that comes from outside (transcripts, call fields, error messages, config
paths) is never parsed as Rich markup: a caller saying "[/]" must not crash
``tail`` or ``status``. Cells are ``Text`` objects and free text is escaped.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from voicecall.errors import RpcError, VoicecallError

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

# Terminal states double as end reasons, so "state" says how a call ended too.
CALL_COLUMNS = ("callId", "state", "mode", "direction", "to", "from")


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2) + "\n")
    sys.stdout.flush()


def print_error(ctx: Any, exc: VoicecallError) -> None:
    if getattr(ctx, "json", False):
        payload: dict[str, Any] = {"ok": False, "error": str(exc), "type": type(exc).__name__}
        if isinstance(exc, RpcError) and exc.data is not None:
            payload["data"] = exc.data
        emit_json(payload)
    else:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", markup=True)


def _cell(value: Any) -> Text:
    return Text("-" if value is None or value == "" else str(value))


def kv_table(title: str, rows: Mapping[str, Any]) -> Table:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in rows.items():
        table.add_row(Text(str(key)), _cell(value))
    return table


def calls_table(calls: Sequence[Mapping[str, Any]], title: str = "Calls") -> Table:
    table = Table(title=title, title_justify="left")
    id_width = max((len(str(c.get("callId") or "")) for c in calls), default=6)
    for col in CALL_COLUMNS:
        if col == "callId":
            # Whole, on one line: a call id cut to "c5239ea…" cannot be passed on.
            table.add_column(col, no_wrap=True, min_width=id_width)
        else:
            table.add_column(col, overflow="ellipsis")
    for c in calls:
        table.add_row(*[_cell(c.get(k)) for k in CALL_COLUMNS])
    return table


def print_record(rec: Mapping[str, Any], *, show_unknown: bool = False) -> None:
    """One ``calls.jsonl`` record as a human line (transcript, state, turn, dtmf).

    Other record types are skipped, or printed as their JSON with ``show_unknown``.
    """
    kind = rec.get("type")
    try:
        ts = float(rec.get("ts") or 0)
    except (TypeError, ValueError):
        ts = 0.0
    stamp = time.strftime("%H:%M:%S", time.localtime(ts))
    line = Text(f"{stamp}  ")
    if kind == "transcript":
        who = "bot   " if rec.get("speaker") == "bot" else "caller"
        line.append(who, style="bold")
        line.append(f"  {rec.get('text')}")
    elif kind == "call.state":
        reason = rec.get("reason")
        extra = f" ({reason})" if reason and reason != rec.get("state") else ""
        line.append(f"state  {rec.get('state')}{extra}", style="dim")
    elif kind == "turn":
        line.append(f"turn {rec.get('turn')}: {rec.get('latencyMs')} ms to reply", style="dim")
    elif kind == "dtmf":
        line.append(f"dtmf {rec.get('direction')} {rec.get('digits')}", style="dim")
    elif show_unknown:
        line.append(json.dumps(rec, ensure_ascii=False), style="dim")
    else:
        return
    console.print(line)
