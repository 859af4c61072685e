"""Speech: streaming STT, TTS and realtime voice providers behind small Protocols."""
