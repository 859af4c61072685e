"""The spoken-output contract and the defensive extraction of what to say.

The agent is asked (``SPOKEN_OUTPUT_CONTRACT``, appended to its system
prompt) to answer with ``{"spoken":"..."}`` only. Models do not always obey:
they wrap the object in prose or code fences, leak planning paragraphs, or
ignore the contract and answer in plain text. ``extract_spoken`` recovers the
caller-facing words from all of those, following the reference gateway's
heuristics step by step so the two speak the same words for the same reply.

Pure and synchronous: no I/O, safe to call from anywhere.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence

__all__ = ["SPOKEN_OUTPUT_CONTRACT", "extract_spoken"]

SPOKEN_OUTPUT_CONTRACT = "\n".join([
    "Output format requirements:",
    '- Return only valid JSON in this exact shape: {"spoken":"..."}',
    "- Do not include markdown, code fences, planning text, or extra keys.",
    '- Put exactly what should be spoken to the caller into "spoken".',
    '- If there is nothing to say, return {"spoken":""}.',
])

# A fenced block that is the whole text. fullmatch, because JavaScript's `$`
# (no m flag) anchors at the very end while Python's also matches before "\n".
_WHOLE_FENCE = re.compile(r"```(?:json)?\s*([\s\S]*?)\s*```", re.IGNORECASE)
# The escape branch excludes the line terminators JavaScript's `.` refuses,
# so a match here is a match there.
_INLINE_SPOKEN = re.compile(
    r'"spoken"\s*:\s*"((?:[^"\\]|\\[^\n\r\u2028\u2029])*)"', re.IGNORECASE
)
_ANY_FENCE = re.compile(r"```[\s\S]*?```")
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n+")
_WHITESPACE = re.compile(r"\s+")


def collapse_whitespace(value: str) -> str:
    return _WHITESPACE.sub(" ", value).strip()


def _spoken_from_json(text: str) -> str | None:
    """The ``spoken`` value when the text carries the contract's object.

    Returns ``""`` for an explicit empty answer (the agent chose silence) and
    ``None`` when nothing structured was found, so the caller can tell the two
    apart and fall back to plain text only in the second case.
    """
    trimmed = text.strip()
    if not trimmed:
        return None
    candidates = [trimmed]
    fenced = _WHOLE_FENCE.fullmatch(trimmed)
    if fenced and fenced.group(1):
        candidates.append(fenced.group(1))
    first, last = trimmed.find("{"), trimmed.rfind("}")
    if first >= 0 and last > first:
        # Models sometimes wrap the object in prose ("Sure! {...}").
        candidates.append(trimmed[first:last + 1])

    for candidate in candidates:
        try:
            parsed = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(parsed, dict) and isinstance(parsed.get("spoken"), str):
            return collapse_whitespace(parsed["spoken"])

    # Last structured attempt: truncated or otherwise invalid JSON that still
    # shows the key, e.g. '{"spoken":"Hi there", "mood": }'.
    inline = _INLINE_SPOKEN.search(trimmed)
    if inline is None:
        return None
    try:
        decoded = json.loads(f'"{inline.group(1)}"')
    except ValueError:
        return None
    return collapse_whitespace(decoded) if isinstance(decoded, str) else None


def is_meta_paragraph(paragraph: str) -> bool:
    lower = paragraph.strip().lower()
    if not lower:
        return False
    if lower.startswith(("thinking process", "reasoning:", "analysis:")):
        return True
    if lower.startswith("the user ") and any(
        phrase in lower for phrase in ("i should", "i need to", "i will")
    ):
        return True
    return (
        "this is a natural continuation of the conversation" in lower
        or "keep the conversation flowing" in lower
    )


def _plain_spoken(text: str) -> str | None:
    """Plain-text fallback: drop code and leading planning paragraphs."""
    without_code = _ANY_FENCE.sub(" ", text).strip()
    if not without_code:
        return None
    paragraphs = [p.strip() for p in _PARAGRAPH_BREAK.split(without_code)]
    paragraphs = [p for p in paragraphs if p]
    # Never drop the last paragraph: a lone "The user ... I will" line is more
    # likely a clumsy answer than pure planning, and silence is worse.
    while len(paragraphs) > 1 and is_meta_paragraph(paragraphs[0]):
        paragraphs.pop(0)
    return collapse_whitespace(" ".join(paragraphs)) or None


def extract_spoken(payloads: Sequence[Mapping[str, object]]) -> str | None:
    """The text to speak from an agent's reply payloads, or ``None``.

    Each payload is ``{"text": str, "isReasoning"?: bool, "isError"?: bool}``.
    Reasoning and error payloads are never spoken. ``None`` means "say
    nothing": the agent returned an explicit ``{"spoken":""}`` or produced no
    usable text at all.
    """
    segments: list[str] = []
    for payload in payloads:
        if payload.get("isError") or payload.get("isReasoning"):
            continue
        raw = payload.get("text")
        text = raw.strip() if isinstance(raw, str) else ""
        if not text:
            continue
        structured = _spoken_from_json(text)
        if structured is not None:
            # An explicit empty is a decision, not a parse failure: no fallback.
            if structured:
                segments.append(structured)
            continue
        plain = _plain_spoken(text)
        if plain:
            segments.append(plain)
    return " ".join(segments).strip() or None
