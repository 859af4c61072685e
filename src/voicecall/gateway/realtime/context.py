"""Context for the realtime model: the instructions capsule and fast-context texts.

The instructions are put together once at session setup (no per-turn cost):
``realtime.instructions``, then the ``consultPolicy`` guidance, then, with
``agentContext.enabled``, a capsule bounded by ``maxChars`` (§7.5).
"""

from __future__ import annotations

import re
from pathlib import Path

from voicecall.config import AgentIdentity, VoiceCallConfig, agent_workspace, effective_config
from voicecall.gateway.realtime.consult import CONSULT_TOOL_NAME, consult_guidance

__all__ = ["agent_identity", "agent_workspace", "build_agent_context", "build_instructions"]

IDENTITY_FILE = "IDENTITY.md"
IDENTITY_FILE_CHARS = 16_000
_IDENTITY_FIELDS = ("name", "emoji", "vibe", "theme", "creature")
_IDENTITY_LABELS = {"name": "Name", "emoji": "Emoji", "vibe": "Vibe", "theme": "Theme",
                    "creature": "Creature/persona"}
# "- **Name:** Ada", "Name: Ada", "* Creature: fox" (markdown emphasis is stripped first).
_IDENTITY_LINE = re.compile(r"^\s*[-*+]?\s*(name|emoji|vibe|theme|creature|persona)\s*:\s*(.*)$",
                            re.IGNORECASE)


def _parse_identity(text: str) -> AgentIdentity | None:
    found: dict[str, str] = {}
    for raw in text.splitlines():
        m = _IDENTITY_LINE.match(raw.replace("**", "").replace("__", ""))
        if m is None:
            continue
        key = "creature" if m.group(1).lower() == "persona" else m.group(1).lower()
        value = m.group(2).strip()
        # Template placeholders such as "_(pick something you like)_" are not answers.
        if not value or value.strip("_*").startswith("(") or key in found:
            continue
        found[key] = value[:200]
    return AgentIdentity.model_validate(found) if found else None


def agent_identity(cfg: VoiceCallConfig, agent_id: str,
                   workspace_dir: Path | None) -> AgentIdentity | None:
    """``agents.<id>.identity``, else the fields of the workspace's ``IDENTITY.md``."""
    profile = cfg.agents.get(agent_id)
    if profile is not None and profile.identity is not None:
        return profile.identity
    if workspace_dir is None:
        return None
    text = _read_bounded(workspace_dir, IDENTITY_FILE, IDENTITY_FILE_CHARS)
    return _parse_identity(text) if text else None


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
    """The bounded agent capsule (§7.5); empty unless ``realtime.agentContext.enabled``.

    ``workspace_dir`` is the default workspace; ``agents.<id>.workspace`` overrides it.
    """
    ac = cfg.realtime.agent_context
    if not ac.enabled:
        return ""
    eff = effective_config(cfg, route_key)
    agent = eff.agent_id or cfg.agent_id or "main"
    workspace_dir = agent_workspace(cfg, agent, workspace_dir)
    lines = [
        "OpenClaw agent voice context:",
        f"- Agent id: {agent}",
        "- On fast turns, match the configured agent's personality and tone.",
        f"- Call {CONSULT_TOOL_NAME} for tools, memory, current information and workspace "
        "state.",
    ]
    identity = agent_identity(cfg, agent, workspace_dir) if ac.include_identity else None
    if identity is not None:
        lines += ["", "Configured identity:"]
        lines += [f"- {_IDENTITY_LABELS[key]}: {value}" for key in _IDENTITY_FIELDS
                  if (value := getattr(identity, key))]
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
