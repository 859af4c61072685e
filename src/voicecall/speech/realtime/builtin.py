"""The built-in realtime providers by name, for whoever wires up the registry.

Imports are lazy so that importing ``voicecall.speech.realtime`` stays cheap.
Order follows the seed's listing (Google Gemini Live, then OpenAI): when
``realtime.provider`` is unset, the first registered provider is used.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from voicecall.speech.realtime.base import RealtimeProvider

__all__ = ["RealtimeFactory", "builtin_factories"]

RealtimeFactory = Callable[[Mapping[str, Any]], RealtimeProvider]


def builtin_factories() -> dict[str, RealtimeFactory]:
    """``{"google": google.create, "openai": openai.create}``."""
    from voicecall.speech.realtime import google, openai

    return {"google": google.create, "openai": openai.create}
