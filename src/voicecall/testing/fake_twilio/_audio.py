"""Callee audio for the fake's media streams (shared by the carrier fakes, see
``fake_carrier._audio``): G.711 mu-law, 8 kHz, mono."""

from voicecall.testing.fake_carrier._audio import (
    FRAME_BYTES,
    SAMPLE_RATE,
    SILENCE_BYTE,
    mulaw_decode_sample,
    mulaw_encode,
    mulaw_encode_sample,
    pad_to_frames,
    rms,
    silence,
    tone_burst,
)

__all__ = ["FRAME_BYTES", "SAMPLE_RATE", "SILENCE_BYTE", "mulaw_decode_sample", "mulaw_encode",
           "mulaw_encode_sample", "pad_to_frames", "rms", "silence", "tone_burst"]
