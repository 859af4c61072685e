"""The streaming STT Protocol.

A session is opened per call; the media stream feeds it 20 ms mu-law frames
with ``send_audio`` (audio sent before the provider is ready is queued by the
session) and reads ``SttEvent``s from ``events()``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal, Protocol

SttEventType = Literal["ready", "speech-start", "partial", "final", "error", "closed"]


@dataclass(frozen=True)
class SttEvent:
    type: SttEventType
    text: str = ""
    confidence: float | None = None


@dataclass(frozen=True)
class SttCapabilities:
    interim_results: bool = False
    server_vad: bool = False        # emits speech-start itself


class SttSession(Protocol):
    async def wait_ready(self) -> None:
        """Return once the provider accepts audio (raises ProviderError on failure)."""

    async def send_audio(self, mulaw: bytes) -> None: ...

    def events(self) -> AsyncIterator[SttEvent]: ...

    async def aclose(self) -> None: ...


class STT(Protocol):
    name: str
    capabilities: SttCapabilities

    async def open(self, call_id: str) -> SttSession: ...
