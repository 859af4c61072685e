"""What every responder shares: the request/result types, the Protocol, the
system prompt, and the in-process conversation memory.

A responder turns one caller utterance (plus history) into reply payloads and
the text to speak. The runtime owns session keys and memory; responders are
stateless with respect to the conversation and read history from the request.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from voicecall.agent.spoken import SPOKEN_OUTPUT_CONTRACT

__all__ = [
    "ResponseRequest",
    "ResponseResult",
    "Responder",
    "SessionMemory",
    "Turn",
    "build_system_prompt",
]


@dataclass(frozen=True)
class Turn:
    """One utterance in a call: ``bot`` is us, ``user`` is the remote party."""

    role: Literal["bot", "user"]
    text: str


@dataclass(frozen=True)
class ResponseRequest:
    call_id: str
    session_key: str
    user_text: str
    history: Sequence[Turn]
    # Route/config override (``responseSystemPrompt``); None means the default.
    system_prompt: str | None
    # ``responseModel``; None means the responder's own default.
    model: str | None
    timeout_ms: int
    caller_number: str | None
    agent_id: str = "main"
    # Realtime consults (``openclaw_agent_consult``): the agent tools the consult may
    # use (``realtime.toolPolicy``; None = the agent's normal policy), and the
    # ``consultThinkingLevel`` / ``consultFastMode`` hints. Ordinary turns leave these unset.
    tools_allow: tuple[str, ...] | None = None
    thinking_level: str | None = None
    fast_mode: bool | None = None
    purpose: Literal["turn", "consult"] = "turn"


@dataclass(frozen=True)
class ResponseResult:
    # What to speak, after extract_spoken; None means stay silent this turn.
    text: str | None
    # The raw reply payloads ({"text", "isReasoning"?, "isError"?}) for logs/tests.
    payloads: list[dict[str, object]]
    first_token_ms: float | None
    total_ms: float
    # The responder asks to hang up once ``text`` has been spoken.
    end_call: bool = False


TextSink = Callable[[str], Awaitable[None]]


class Responder(Protocol):
    """An agent back end. ``respond`` raises ProviderError on failure.

    ``on_text`` receives the reply's raw content as it streams (reasoning
    excluded), so speech can start before the reply is complete; the returned
    result is still the whole turn, extracted with the usual rules.
    """

    name: str

    async def respond(self, req: ResponseRequest,
                      on_text: TextSink | None = None) -> ResponseResult: ...

    async def aclose(self) -> None: ...


def build_system_prompt(req: ResponseRequest, agent_name: str = "OpenClaw", *,
                        include_history: bool = True, has_tools: bool = False) -> str:
    """The system prompt for one turn, deterministic for a given request.

    Base prompt (or the route's override), then the conversation so far, then
    the spoken-output contract, which always comes last so that an override
    cannot drop it. ``include_history=False`` is for back ends that send the
    history as chat messages instead. The tool sentence is only claimed when
    the back end really offers tools; telling a model it has tools it lacks
    invites invented tool calls read aloud to the caller.
    """
    if req.system_prompt is not None:
        prompt = req.system_prompt
    else:
        parts = [
            f"You are {agent_name}, a helpful voice assistant on a phone call.",
            "Keep responses brief and conversational (1-2 sentences max).",
            "Be natural and friendly.",
        ]
        if req.caller_number:
            parts.append(f"The caller's phone number is {req.caller_number}.")
        if has_tools:
            parts.append("You have access to tools - use them when helpful.")
        prompt = " ".join(parts)
    if include_history and req.history:
        lines = "\n".join(
            f"{'You' if turn.role == 'bot' else 'Caller'}: {turn.text}" for turn in req.history
        )
        prompt = f"{prompt}\n\nConversation so far:\n{lines}"
    return f"{prompt}\n\n{SPOKEN_OUTPUT_CONTRACT}"


@dataclass
class SessionMemory:
    """Recent turns per session key, in process, bounded both ways.

    The session key decides the scope: a per-phone key brings a caller's
    earlier calls back into the conversation, a per-call key starts fresh.
    Bounded because keys come from phone numbers, i.e. from strangers: the
    least recently used session is forgotten past ``max_sessions``, and only
    the last ``max_turns`` turns of each session are kept.
    """

    max_sessions: int = 1000
    max_turns: int = 50
    _sessions: OrderedDict[str, deque[Turn]] = field(
        default_factory=OrderedDict, init=False, repr=False
    )

    def __post_init__(self) -> None:
        if self.max_sessions < 1 or self.max_turns < 1:
            raise ValueError("max_sessions and max_turns must be at least 1")

    def append(self, session_key: str, turn: Turn) -> None:
        turns = self._sessions.get(session_key)
        if turns is None:
            turns = self._sessions[session_key] = deque(maxlen=self.max_turns)
            while len(self._sessions) > self.max_sessions:
                self._sessions.popitem(last=False)
        else:
            self._sessions.move_to_end(session_key)
        turns.append(turn)

    def add(self, session_key: str, role: Literal["bot", "user"], text: str) -> None:
        self.append(session_key, Turn(role, text))

    def history(self, session_key: str) -> tuple[Turn, ...]:
        """The session's turns, oldest first (empty for an unknown key)."""
        turns = self._sessions.get(session_key)
        if turns is None:
            return ()
        self._sessions.move_to_end(session_key)
        return tuple(turns)

    def clear(self, session_key: str) -> None:
        self._sessions.pop(session_key, None)

    def __contains__(self, session_key: object) -> bool:
        return session_key in self._sessions

    def __len__(self) -> int:
        return len(self._sessions)
