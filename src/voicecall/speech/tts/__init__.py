"""Text-to-speech for telephony: providers produce mu-law 8 kHz."""

from voicecall.speech.tts.base import TTS, TtsCapabilities
from voicecall.speech.tts.build import build_tts
from voicecall.speech.tts.fallback import FallbackTTS

__all__ = ["TTS", "FallbackTTS", "TtsCapabilities", "build_tts"]
