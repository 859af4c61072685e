"""The TTS Protocol: text in, telephony audio (mu-law, 8 kHz, mono) out, streamed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class TtsCapabilities:
    streaming: bool = True          # yields audio before the whole text is synthesised
    telephony_native: bool = False  # produces mu-law 8 kHz without resampling


class TTS(Protocol):
    name: str
    capabilities: TtsCapabilities

    def synthesize(self, text: str) -> AsyncIterator[bytes]:
        """Yield mu-law 8 kHz audio chunks of any size; raises ProviderError on failure."""
        ...

    async def aclose(self) -> None: ...
