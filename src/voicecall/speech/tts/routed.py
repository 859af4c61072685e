"""Per-number TTS: the core, plugin and per-number ``tts`` blocks deep-merged per route.

A call dialled on a routed number speaks with that route's voice; everything
else uses the global merge. Each route's provider chain is built once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from voicecall.speech.tts.base import TTS, TtsCapabilities


class RoutedTTS:
    name = "routed"
    capabilities = TtsCapabilities()

    def __init__(self, build: Callable[[Mapping[str, Any]], TTS | None],
                 config_for: Callable[[str | None], Mapping[str, Any]]) -> None:
        self._build = build
        self._config_for = config_for
        self._cache: dict[str | None, TTS | None] = {}

    def for_route(self, route_key: str | None) -> TTS | None:
        if route_key not in self._cache:
            self._cache[route_key] = self._build(self._config_for(route_key))
        return self._cache[route_key]

    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        tts = self.for_route(None)
        if tts is None:
            return
        async for chunk in tts.synthesize(text):
            yield chunk

    async def aclose(self) -> None:
        for tts in self._cache.values():
            if tts is not None:
                await tts.aclose()
