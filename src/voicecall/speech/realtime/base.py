"""The realtime (full-duplex speech-to-speech) provider contract.

A realtime provider holds one live conversation per call: caller audio goes in
(mu-law 8 kHz, 20 ms frames), model audio comes out (mu-law 8 kHz), along with
VAD, transcript, tool-call and lifecycle events. The call bridge codes against
these types only; ``openai`` and ``google`` implement them.

``events()`` always ends with exactly one ``closed`` event; a fatal failure is
an ``error`` event right before it. Nothing here ever carries an API key.

Events, as the built-in providers emit them:

- ``ready``: once, when the provider accepted the session (audio queued
  before it is flushed then). A provider that resumes on a new connection
  (Gemini) does not emit it again.
- ``audio``: model audio, mu-law 8 kHz, ``item_id`` = the output it belongs
  to (OpenAI: the assistant item, the one to ``truncate``; Gemini: a per-turn
  id ``gemini-turn-N``).
- ``speech-start`` / ``speech-stop``: the caller started / stopped talking
  (OpenAI: server VAD; a ``speech-start`` while model audio is still playing
  is the barge-in: clear the carrier buffer and ``truncate``. Gemini: derived,
  informational; its barge-in signal is ``interrupted``).
- ``interrupted``: the provider itself stopped the model's output because the
  caller spoke (Gemini only); clear the carrier buffer, no truncate needed.
- ``transcript``: ``role`` user/assistant; ``final=False`` for a chunk,
  ``final=True`` for the whole text of a turn.
- ``tool-call``: ``call_id``, ``name``, ``arguments`` (JSON text); answer with
  ``send_tool_result`` (where ``capabilities.tool_continuation``: an interim
  result with ``will_continue=True`` first, then the final one).
- ``response-done``: a model turn ended; ``text`` is its status
  (``completed``, ``cancelled``, ``interrupted``, ...).
- ``error``: ``text`` says what; followed by ``closed`` when fatal, otherwise
  the session carries on.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

__all__ = [
    "RealtimeCapabilities",
    "RealtimeEvent",
    "RealtimeEventType",
    "RealtimeProvider",
    "RealtimeSession",
    "RealtimeSetup",
    "RealtimeTool",
]


@dataclass(frozen=True)
class RealtimeTool:
    """A function the model may call. ``parameters`` is a JSON schema object."""

    name: str
    description: str
    parameters: Mapping[str, Any]
    # The host may answer with an interim result before the final one (Gemini declares
    # such a function NON_BLOCKING where the model supports it; OpenAI needs nothing).
    interim_results: bool = False


@dataclass(frozen=True)
class RealtimeSetup:
    """What a session starts with.

    ``greeting``: an opening turn the model should say first (None: wait for
    the caller to speak).
    """

    instructions: str
    tools: Sequence[RealtimeTool] = ()
    voice: str | None = None
    greeting: str | None = None


RealtimeEventType = Literal["ready", "audio", "speech-start", "speech-stop", "transcript",
                            "tool-call", "response-done", "interrupted", "error", "closed"]


@dataclass(frozen=True)
class RealtimeEvent:
    type: RealtimeEventType
    audio: bytes = b""            # "audio": mu-law 8 kHz from the model
    item_id: str | None = None    # the model output item the audio belongs to (for truncate)
    role: Literal["user", "assistant"] | None = None   # "transcript"
    text: str = ""                # transcript text / error message
    final: bool = True
    call_id: str | None = None    # "tool-call": provider call id
    name: str | None = None       # "tool-call": function name
    arguments: str = ""           # "tool-call": JSON text


class RealtimeSession(Protocol):
    async def wait_ready(self) -> None:
        """Return once the provider accepted the session; raise ``ProviderError`` if it failed."""
        ...

    async def send_audio(self, mulaw: bytes) -> None:
        """Caller audio, 20 ms mu-law 8 kHz frames; queued (bounded) before ready."""
        ...

    def events(self) -> AsyncIterator[RealtimeEvent]:
        ...

    async def send_tool_result(self, call_id: str, output: str, *, will_continue: bool = False,
                               respond: bool = True) -> None:
        """The result of a ``tool-call``; the model is then asked to respond.

        ``will_continue``: an interim result, the final one follows for the same call
        (only where ``capabilities.tool_continuation``). ``respond=False``: the call is
        answered without asking the model for another response.
        """
        ...

    async def truncate(self, item_id: str, played_ms: int) -> None:
        """Barge-in: what the caller actually heard of ``item_id``.

        OpenAI: ``conversation.item.truncate`` with ``audio_end_ms``. Gemini:
        no-op (the server drops queued audio itself on ``interrupted``).
        """
        ...

    async def say(self, text: str) -> None:
        """Ask the model to speak ``text`` now."""
        ...

    async def aclose(self) -> None:
        ...


@dataclass(frozen=True)
class RealtimeCapabilities:
    server_vad: bool = True
    truncation: bool = False
    resumption: bool = False
    tool_continuation: bool = False   # interim then final results for one tool call


class RealtimeProvider(Protocol):
    name: str
    capabilities: RealtimeCapabilities

    async def open(self, call_id: str, setup: RealtimeSetup) -> RealtimeSession:
        ...
