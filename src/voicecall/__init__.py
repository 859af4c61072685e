"""voicecall: an AI phone-call gateway."""
