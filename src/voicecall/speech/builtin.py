"""Register the built-in speech providers (lazily: a provider's module loads on first use).

Order matters when ``streaming.provider`` is unset: the offline ``local``
recogniser comes first so a bare ``streaming.enabled: true`` works offline;
configured cloud providers are preferred by ``resolve_stt`` over it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

from voicecall.speech import registry
from voicecall.speech.stt.base import STT

STT_MODULES = ("local", "openai", "deepgram", "elevenlabs", "mistral", "xai")


def _stt_factory(name: str) -> Callable[[Mapping[str, Any]], STT]:
    def factory(cfg: Mapping[str, Any]) -> STT:
        module = importlib.import_module(f"voicecall.speech.stt.{name}")
        stt: STT = module.create(cfg)
        return stt

    return factory


def register_builtins() -> None:
    for name in STT_MODULES:
        if name not in registry.stt_names():
            registry.register_stt(name, _stt_factory(name))
