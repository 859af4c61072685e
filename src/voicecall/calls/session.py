"""Session keys: which conversation memory a call belongs to (``sessionScope``)."""

from __future__ import annotations

import re

from voicecall.calls.model import Direction


def _digits(number: str | None) -> str:
    return re.sub(r"\D", "", number or "")


def session_key_for(scope: str, call_id: str, direction: Direction, from_number: str | None,
                    to_number: str | None, agent_id: str = "main",
                    explicit: str | None = None) -> str:
    """The session key for a call.

    ``per-phone`` keys on the remote party (callee for outbound, caller for
    inbound) so repeat calls from one number share memory; ``per-call`` starts
    fresh every call; ``main`` shares the agent's main session.
    """
    agent = (agent_id or "main").lower()
    prefix = f"agent:{agent}:"
    if explicit:
        return explicit if explicit.startswith(prefix) else prefix + explicit
    if scope == "main":
        return prefix + "main"
    if scope == "per-call":
        return f"{prefix}voice:call:{call_id}".lower()
    remote = to_number if direction == "outbound" else from_number
    digits = _digits(remote)
    return f"{prefix}voice:{digits}" if digits else f"{prefix}voice:call:{call_id}".lower()
