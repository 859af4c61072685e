"""Name -> factory registries for speech providers.

Built-in providers register here; tests and third parties call ``register_*``.
Resolution follows the seed: an explicit provider name must be registered,
otherwise the first registered provider is used; when nothing fits, callers
get ``None`` plus a warning and skip that media path instead of failing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from voicecall.errors import VoicecallError
from voicecall.speech.stt.base import STT, SttSession
from voicecall.speech.tts.base import TTS

log = logging.getLogger("voicecall.speech")

SttFactory = Callable[[Mapping[str, Any]], STT]
TtsFactory = Callable[[Mapping[str, Any]], TTS]

_STT: dict[str, SttFactory] = {}
_TTS: dict[str, TtsFactory] = {}


def register_stt(name: str, factory: SttFactory) -> None:
    _STT[name] = factory


def register_tts(name: str, factory: TtsFactory) -> None:
    _TTS[name] = factory


def unregister(name: str) -> None:
    _STT.pop(name, None)
    _TTS.pop(name, None)


def stt_names() -> list[str]:
    return list(_STT)


def tts_names() -> list[str]:
    return list(_TTS)


def _resolve(kind: str, table: Mapping[str, Callable[[Mapping[str, Any]], Any]],
             name: str | None, providers: Mapping[str, Mapping[str, Any]]) -> Any:
    if name is None:
        if not table:
            log.warning("%s: no provider registered; skipping %s", kind, kind)
            return None
        # Unset: the first provider the config has settings for, else the first registered.
        name = next((n for n in providers if n in table), next(iter(table)))
    factory = table.get(name)
    if factory is None:
        log.warning("%s provider %r is not registered (have: %s); skipping %s", kind, name,
                    ", ".join(table) or "none", kind)
        return None
    return factory(providers.get(name, {}))


def resolve_stt(name: str | None, providers: Mapping[str, Mapping[str, Any]]) -> STT | None:
    stt: STT | None = _resolve("stt", _STT, name, providers)
    return stt


def resolve_tts(name: str | None, providers: Mapping[str, Mapping[str, Any]]) -> TTS | None:
    tts: TTS | None = _resolve("tts", _TTS, name, providers)
    return tts


async def close_speech(*providers: object) -> None:
    """Close speech providers that hold resources (worker processes, HTTP pools).

    The Protocols do not require ``aclose``; providers that have one get it called,
    and a failure to close one never stops the others from closing.
    """
    for provider in providers:
        close = getattr(provider, "aclose", None)
        if close is None:
            continue
        try:
            await close()
        except Exception:  # shutting down: log and carry on
            log.exception("speech.close_failed")


async def open_stt_session(stt: STT | None, call_id: str) -> SttSession | None:
    """A call's STT session, or None when there is no STT or it cannot open.

    A stream without transcription still carries audio (playback, DTMF), so a
    provider that fails to open is logged and the call goes on without it.
    """
    if stt is None:
        return None
    try:
        return await stt.open(call_id)
    except VoicecallError as exc:
        log.warning("stt.open_failed", extra={"call_id": call_id, "why": str(exc)})
        return None
