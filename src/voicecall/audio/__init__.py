"""Audio: telephony codecs, framing, pacing and the playback queue."""
