"""Realtime (full-duplex speech-to-speech) providers: OpenAI Realtime and Gemini Live."""

from voicecall.speech.realtime.base import (
    RealtimeCapabilities,
    RealtimeEvent,
    RealtimeEventType,
    RealtimeProvider,
    RealtimeSession,
    RealtimeSetup,
    RealtimeTool,
)

__all__ = [
    "RealtimeCapabilities",
    "RealtimeEvent",
    "RealtimeEventType",
    "RealtimeProvider",
    "RealtimeSession",
    "RealtimeSetup",
    "RealtimeTool",
]
