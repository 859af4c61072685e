"""``FallbackTTS``: a chain of TTS providers behind the one ``TTS`` Protocol.

Providers are tried in order for each ``synthesize`` call. A provider that
fails *before its first audio* (an error, no audio at all, or no audio
within the first-audio timeout) hands over to the next one, and when a later
provider speaks a warning is logged in the shape the reference plugin uses:

    Telephony TTS fallback used from=openai to=local attempts=openai -> local

Once audio has been yielded the caller may already have played it, so a
failure after that point is raised as is: retrying would repeat speech.

Microsoft speech (``microsoft``, ``edge``) cannot produce telephony audio;
such entries are dropped from the chain with a warning.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Sequence

from voicecall.errors import ConfigError, ProviderError
from voicecall.speech.tts.base import TTS, TtsCapabilities

__all__ = ["DEFAULT_FIRST_AUDIO_TIMEOUT_MS", "MICROSOFT_PROVIDERS", "FallbackTTS",
           "is_microsoft"]

log = logging.getLogger("voicecall.speech.tts")

DEFAULT_FIRST_AUDIO_TIMEOUT_MS = 8000
MICROSOFT_PROVIDERS = frozenset({"microsoft", "edge"})


def is_microsoft(provider_id: str) -> bool:
    return provider_id.strip().lower() in MICROSOFT_PROVIDERS


def warn_microsoft(provider_id: str) -> None:
    log.warning("Telephony TTS provider %s ignored: Microsoft speech cannot produce "
                "telephony audio; trying the next provider", provider_id)


class FallbackTTS:
    """Try ``chain`` in order until one yields audio; see the module docstring."""

    def __init__(self, chain: Sequence[TTS], *,
                 first_audio_timeout_ms: float | None = DEFAULT_FIRST_AUDIO_TIMEOUT_MS) -> None:
        self._owned = list(chain)
        self.chain: list[TTS] = []
        for tts in chain:
            if is_microsoft(tts.name):
                warn_microsoft(tts.name)
                continue
            self.chain.append(tts)
        if not self.chain:
            raise ConfigError("no telephony-capable TTS provider is configured",
                              path="tts.provider")
        self.first_audio_timeout_ms = first_audio_timeout_ms
        self.name = " -> ".join(t.name for t in self.chain)
        self.capabilities = TtsCapabilities(
            streaming=all(t.capabilities.streaming for t in self.chain),
            telephony_native=all(t.capabilities.telephony_native for t in self.chain))
        self.last_provider: str | None = None  # who spoke the latest synthesize call

    def __repr__(self) -> str:
        return f"FallbackTTS({self.name!r}, first_audio_timeout_ms={self.first_audio_timeout_ms})"

    @property
    def providers(self) -> list[str]:
        return [t.name for t in self.chain]

    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        if not text.strip():
            return
        attempts: list[str] = []
        failures: list[tuple[str, BaseException]] = []
        for tts in self.chain:
            attempts.append(tts.name)
            stream = tts.synthesize(text)
            try:
                try:
                    first = await self._first_audio(tts.name, stream)
                except Exception as exc:  # any failure before audio: next provider
                    failures.append((tts.name, exc))
                    log.warning("Telephony TTS provider %s failed before audio: %s",
                                tts.name, _describe(exc))
                    continue
                if len(attempts) > 1:
                    log.warning("Telephony TTS fallback used from=%s to=%s attempts=%s",
                                attempts[0], tts.name, " -> ".join(attempts))
                self.last_provider = tts.name
                yield first
                # From here on a failure is raised: the caller may have played audio.
                async for chunk in stream:
                    if chunk:
                        yield chunk
                return
            finally:
                if isinstance(stream, AsyncGenerator):
                    await stream.aclose()
        raise _all_failed(failures)

    async def _first_audio(self, name: str, stream: AsyncIterator[bytes]) -> bytes:
        timeout_ms = self.first_audio_timeout_ms
        try:
            async with asyncio.timeout(None if timeout_ms is None else timeout_ms / 1000.0):
                async for chunk in stream:
                    if chunk:
                        return chunk
        except TimeoutError:
            raise ProviderError(f"{name} TTS produced no audio within {timeout_ms:g} ms",
                                retryable=True) from None
        raise ProviderError(f"{name} TTS produced no audio", retryable=True)

    async def aclose(self) -> None:
        for tts in self._owned:
            try:
                await tts.aclose()
            except Exception as exc:  # closing one must not leak the others
                log.warning("Telephony TTS provider %s failed to close: %s", tts.name,
                            _describe(exc))


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _all_failed(failures: list[tuple[str, BaseException]]) -> BaseException:
    if len(failures) == 1 and isinstance(failures[0][1], ProviderError):
        return failures[0][1]
    summary = "; ".join(f"{name}: {_describe(exc)}" for name, exc in failures)
    retryable = any(isinstance(e, ProviderError) and e.retryable for _, e in failures)
    last = failures[-1][1]
    status = last.status_code if isinstance(last, ProviderError) else None
    error = ProviderError(f"all telephony TTS providers failed ({summary})",
                          retryable=retryable, status_code=status)
    error.__cause__ = last
    return error
