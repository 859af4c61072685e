"""Streaming speech-to-text: sessions fed with mu-law frames, emitting transcripts."""

from voicecall.speech.stt.base import STT, SttCapabilities, SttEvent, SttSession

__all__ = ["STT", "SttCapabilities", "SttEvent", "SttSession"]
