"""Turn-latency statistics from an event log (the ``voicecall latency`` numbers).

Each turn counts once: records are read from the end and the first one seen
for a ``(callId, turn)`` is kept, so a turn written twice (a retry, a
re-persisted snapshot) is the last write, not two samples. The reference
counted every snapshot and so the same turn many times.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voicecall.errors import UsageError
from voicecall.store._jsonl import reverse_records

PERCENTILES = (50, 90, 99)


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile: the ``ceil(p/100*n)``-th smallest value; 0.0 when empty."""
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        return 0.0
    idx = min(n - 1, max(0, math.ceil(p / 100 * n) - 1))
    return float(ordered[idx])


def stats(values: Sequence[float]) -> dict[str, float | int]:
    """count, min, max, mean and the ``PERCENTILES`` of ``values`` in ms, to 0.1 ms."""
    out: dict[str, float | int] = {"count": len(values)}
    if not values:
        out.update({"minMs": 0.0, "maxMs": 0.0, "avgMs": 0.0})
        out.update({f"p{p}Ms": 0.0 for p in PERCENTILES})
        return out
    out["minMs"] = round(min(values), 1)
    out["maxMs"] = round(max(values), 1)
    out["avgMs"] = round(math.fsum(values) / len(values), 1)
    for p in PERCENTILES:
        out[f"p{p}Ms"] = round(percentile(values, p), 1)
    return out


def _ms(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


@dataclass(frozen=True)
class _Turn:
    key: tuple[Any, ...] | None  # None: cannot be deduplicated, counts as seen
    latency: float | None
    listen_wait: float | None
    breakdown: Mapping[str, float]


def _turn(record: Mapping[str, Any]) -> _Turn | None:
    """The turn a record describes, if any, in the current or a legacy format."""
    if "type" in record:
        if record["type"] != "turn":
            return None
        turn = record.get("turn")
        key = (record.get("callId"), turn) if isinstance(turn, int | str) else None
        raw = record.get("breakdown")
        stages = {str(k): ms for k, v in raw.items() if (ms := _ms(v)) is not None} \
            if isinstance(raw, Mapping) else {}
        found = _Turn(key, _ms(record.get("latencyMs")), _ms(record.get("listenWaitMs")), stages)
    else:
        # The reference's calls.jsonl: a raw call record or a {"call": {...}} envelope
        # carrying only the latest turn in its metadata.
        call = record.get("call", record)
        meta = call.get("metadata") if isinstance(call, Mapping) else None
        if not isinstance(meta, Mapping):
            return None
        count = meta.get("turnCount")
        key = (call.get("callId"), count) if isinstance(count, int) else None
        found = _Turn(key, _ms(meta.get("lastTurnLatencyMs")),
                      _ms(meta.get("lastTurnListenWaitMs")), {})
    if found.latency is None and found.listen_wait is None and not found.breakdown:
        return None
    return found


def summarize(records: Iterable[Mapping[str, Any]], last: int = 200) -> dict[str, Any]:
    """The summary over ``records`` given newest first (see ``latency_summary``)."""
    if last < 1:
        raise UsageError(f"--last must be at least 1, got {last}")
    scanned = 0
    seen: set[tuple[Any, ...]] = set()
    turns: list[_Turn] = []
    for record in records:
        if len(turns) >= last:
            break
        scanned += 1
        turn = _turn(record)
        if turn is None:
            continue
        if turn.key is not None:
            if turn.key in seen:
                continue  # an older write of a turn already counted
            seen.add(turn.key)
        turns.append(turn)
    stages: dict[str, list[float]] = {}
    for turn in reversed(turns):  # oldest first, so per-stage lists are in time order
        for stage, ms in turn.breakdown.items():
            stages.setdefault(stage, []).append(ms)
    return {
        "recordsScanned": scanned,
        "turns": len(turns),
        "turnLatency": stats([t.latency for t in turns if t.latency is not None]),
        "listenWait": stats([t.listen_wait for t in turns if t.listen_wait is not None]),
        "breakdown": {stage: stats(values) for stage, values in sorted(stages.items())},
    }


def latency_summary(path: Path | str, last: int = 200) -> dict[str, Any]:
    """Latency statistics over the last ``last`` distinct turns in the log at ``path``.

    Reads backwards and stops once it has them, so the cost does not grow with
    the log. ``recordsScanned`` counts the records read to get there.
    """
    return summarize(reverse_records(Path(path)), last)
