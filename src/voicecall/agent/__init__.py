"""Agent back ends: who decides what the gateway says on a call.

- ``extract_spoken`` / ``SPOKEN_OUTPUT_CONTRACT``: the ``{"spoken":"..."}``
  contract and its defensive reading;
- ``Responder`` and its request/result types, ``build_system_prompt``,
  ``SessionMemory``;
- ``OpenAICompatResponder`` (OpenAI, Ollama, vLLM, llama.cpp server) and the
  offline ``ScriptedResponder``; ``make_responder`` picks one by name.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from voicecall.agent.base import (
    Responder,
    ResponseRequest,
    ResponseResult,
    SessionMemory,
    Turn,
    build_system_prompt,
)
from voicecall.agent.openai_compat import OpenAICompatResponder
from voicecall.agent.scripted import Script, ScriptedResponder
from voicecall.agent.spoken import SPOKEN_OUTPUT_CONTRACT, extract_spoken
from voicecall.errors import ConfigError

__all__ = [
    "SPOKEN_OUTPUT_CONTRACT",
    "OpenAICompatResponder",
    "ResponseRequest",
    "ResponseResult",
    "Responder",
    "ScriptedResponder",
    "SessionMemory",
    "Turn",
    "build_system_prompt",
    "extract_spoken",
    "make_responder",
]

# Where each local server listens by default, so `kind` alone is enough.
_DEFAULT_BASE_URLS = {
    "openai": "https://api.openai.com/v1",
    "ollama": "http://localhost:11434/v1",
    "vllm": "http://localhost:8000/v1",
    "llamacpp": "http://localhost:8080/v1",
}
# llama.cpp serves a single model and ignores the name; the others need one.
_DEFAULT_MODELS = {"openai": "gpt-4o-mini", "llamacpp": "local"}
_ALIASES = {"openai-compat": "openai", "openai_compat": "openai", "llama.cpp": "llamacpp",
            "llama-cpp": "llamacpp", "offline": "scripted"}
_KINDS = ("scripted", "openai", "openai-compat", "ollama", "vllm", "llamacpp")


def make_responder(kind: str, *, base_url: str | None = None, api_key: str | None = None,
                   model: str | None = None,
                   script: Script | Mapping[str, object] | str | os.PathLike[str] | None = None
                   ) -> Responder:
    """A responder by name: ``scripted`` or an OpenAI-compatible server.

    ``openai``/``openai-compat`` default to OpenAI itself; ``ollama``,
    ``vllm`` and ``llamacpp`` to their usual local address. ``model`` may be
    "provider/model" (see ``resolve_model``); Ollama and vLLM need one, the
    others default to ``gpt-4o-mini`` / whatever llama.cpp has loaded.
    ``script`` (a path, a mapping or a ``Script``) is for ``scripted``; None
    means the shipped demo script. Unknown kinds raise ``ConfigError``.
    """
    name = kind.strip().lower()
    name = _ALIASES.get(name, name)
    if name == "scripted":
        return ScriptedResponder(script)
    if name in _DEFAULT_BASE_URLS:
        url = base_url or _DEFAULT_BASE_URLS[name]
        model = model or _DEFAULT_MODELS.get(name)
        if not model:
            # Ollama and vLLM serve what was pulled/started; there is no safe guess.
            raise ConfigError(f"a model name is needed for {name}", path="responseModel")
        return OpenAICompatResponder(url, api_key, model)
    raise ConfigError(f"unknown responder kind {kind!r}", path="responder", allowed=_KINDS)
