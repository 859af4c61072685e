"""What the runtime needs from a carrier's I/O shell.

Each carrier module (``mock``, ``twilio``, ...) exposes a ``Carrier`` class with
this shape. Parsing and signatures live in the same module as pure functions;
the class only moves bytes and reports normalised ``CallEvent``s to the sink.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from voicecall.calls.model import Call, CallEvent, Mode

EventSink = Callable[[CallEvent], Awaitable[None]]
RemoteStatus = Literal["active", "terminal", "not-found", "unknown"]


@dataclass(frozen=True)
class DialRequest:
    call_id: str
    from_number: str
    to_number: str
    mode: Mode
    message: str | None
    dtmf_sequence: str | None = None
    ring_timeout_ms: int = 30000


class Carrier(Protocol):
    name: str

    async def start(self, sink: EventSink) -> None:
        """Begin delivering events for calls to ``sink``."""

    async def dial(self, req: DialRequest) -> str:
        """Place an outbound call; returns the carrier's call id."""

    async def speak(self, call: Call, text: str) -> None:
        """Play ``text`` to the callee; returns once it has been heard (or raises)."""

    async def start_listening(self, call: Call, turn_token: str) -> None:
        """Open a speech turn; the transcript comes back as a ``call.speech`` event."""

    async def send_dtmf(self, call: Call, digits: str) -> None: ...

    async def hangup(self, call: Call) -> None: ...

    async def get_status(self, provider_call_id: str) -> RemoteStatus: ...

    async def aclose(self) -> None: ...
