"""Text-to-speech for telephony: providers produce mu-law 8 kHz."""

from voicecall.speech.tts.base import TTS, TtsCapabilities

__all__ = ["TTS", "TtsCapabilities"]
