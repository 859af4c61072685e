"""Context for the realtime model: the instructions capsule and fast-context texts.

The instructions are put together once at session setup (no per-turn cost):
``realtime.instructions``, then the ``consultPolicy`` guidance, then, with
``agentContext.enabled``, a capsule bounded by ``maxChars`` (§7.5).
"""

from __future__ import annotations

from pathlib import Path

from voicecall.config import VoiceCallConfig, effective_config
from voicecall.gateway.realtime.consult import CONSULT_TOOL_NAME, consult_guidance

__all__ = ["build_agent_context", "build_instructions"]


def _read_bounded(root: Path, name: str, budget: int) -> str | None:
    """A workspace file under ``root`` (no escaping it), at most ``budget`` chars."""
    try:
        base = root.resolve()
        path = (base / name).resolve()
        if not path.is_relative_to(base) or not path.is_file():
            return None
        with path.open("r", encoding="utf-8", errors="replace") as fh:
            return fh.read(max(0, budget))
    except OSError:
        return None


def build_agent_context(cfg: VoiceCallConfig, workspace_dir: Path | None,
                        route_key: str | None = None) -> str:
    """The bounded agent capsule (§7.5); empty unless ``realtime.agentContext.enabled``."""
    ac = cfg.realtime.agent_context
    if not ac.enabled:
        return ""
    eff = effective_config(cfg, route_key)
    agent = eff.agent_id or cfg.agent_id or "main"
    lines = [
        "OpenClaw agent voice context:",
        f"- Agent id: {agent}",
        "- On fast turns, match the configured agent's personality and tone.",
        f"- Call {CONSULT_TOOL_NAME} for tools, memory, current information and workspace "
        "state.",
    ]
    if ac.include_identity:
        lines += ["", "Configured identity:", f"- Name: {agent}"]
    if ac.include_system_prompt and eff.response_system_prompt:
        lines += ["", "System prompt override:", eff.response_system_prompt.strip()]
    text = "\n".join(lines)
    if ac.include_workspace_files and workspace_dir is not None and workspace_dir.is_dir():
        parts: list[str] = []
        for name in ac.files:
            budget = ac.max_chars - len(text) - sum(len(p) for p in parts)
            if budget <= 0:
                break
            content = _read_bounded(workspace_dir, name, budget + 1)
            if content is None:
                continue
            parts.append(f"\n### {name}\n{content.strip()}")
        if parts:
            text += "\n\nWorkspace voice context:" + "".join(parts)
    if len(text) > ac.max_chars:
        marker = "\n[truncated]"
        text = text[: max(0, ac.max_chars - len(marker))] + marker
    return text


def build_instructions(cfg: VoiceCallConfig, workspace_dir: Path | None = None,
                       route_key: str | None = None) -> str:
    """Base instructions, then consult guidance, then the agent capsule (each once)."""
    rt = cfg.realtime
    parts = [rt.instructions.strip()]
    guidance = consult_guidance(rt.consult_policy, rt.tool_policy)
    if guidance:
        parts.append(guidance)
    capsule = build_agent_context(cfg, workspace_dir, route_key)
    if capsule:
        parts.append(capsule)
    return "\n\n".join(p for p in parts if p)
