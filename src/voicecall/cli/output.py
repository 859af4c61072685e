"""Printing: Rich tables for people, JSON for scripts."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from voicecall.errors import RpcError, VoicecallError

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2) + "\n")


def print_error(ctx: Any, exc: VoicecallError) -> None:
    if getattr(ctx, "json", False):
        payload: dict[str, Any] = {"ok": False, "error": str(exc), "type": type(exc).__name__}
        if isinstance(exc, RpcError) and exc.data is not None:
            payload["data"] = exc.data
        emit_json(payload)
    else:
        err_console.print(f"[bold red]error:[/] {exc}", markup=True)


def kv_table(title: str, rows: Mapping[str, Any]) -> Table:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows.items():
        table.add_row(str(key), "-" if value is None else str(value))
    return table


def calls_table(calls: Sequence[Mapping[str, Any]], title: str = "Calls") -> Table:
    table = Table(title=title, title_justify="left")
    for col in ("callId", "direction", "mode", "state", "to", "from", "endReason"):
        table.add_column(col)
    for c in calls:
        table.add_row(*[str(c.get(k) or "-") for k in
                        ("callId", "direction", "mode", "state", "to", "from", "endReason")])
    return table
