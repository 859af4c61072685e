"""The realtime voice bridge: one carrier media stream <-> one realtime provider session.

Per call (``openclaw-voice-call.md`` §7, the seed's 即時語音對話):

- the session opens with ``realtime.instructions``, then the ``consultPolicy``
  guidance, then (``agentContext.enabled``) a bounded agent capsule, all put
  together once at setup; the tools are ``openclaw_agent_consult`` (unless
  ``toolPolicy: none``), ``openclaw_end_call`` (never disabled), then custom
  ``realtime.tools`` (which cannot replace a built-in by name); the greeting is
  the call's initial message (outbound ``message`` / routed ``inboundGreeting``),
  said by the model's own opening turn;
- caller audio (mu-law 20 ms frames) goes to ``send_audio``; model audio goes
  out through a ``PlaybackQueue`` (one item per model output ``item_id``,
  20 ms frames paced on an absolute clock). What the caller actually heard of
  each item is tracked from periodic marks the carrier echoes once played
  (every 100 ms of audio; position of the last echo plus the time since), or,
  before the first echo, from the frames sent minus what a local model of the
  carrier's playout clock says is still buffered;
- barge-in: OpenAI ``speech-start`` while model audio is sounding -> clear the
  carrier buffer and ``truncate(item_id, played_ms)``; Gemini ``interrupted``
  -> drop the queued audio and clear. The carrier buffer is cleared every time;
- transcripts go into the call record (``call.speech`` for the caller,
  ``call.said`` for the model; ``ack=False``: nothing re-sends them); caller
  keypresses are recorded and handed to the model as a text turn (they never
  end the call);
- tool calls: the consult runs the call's responder with the consult prompt
  (session key: the call's stored key, else ``sessionScope``; the tool policy
  travels as ``tools_allow``) and the spoken answer is the tool output;
  ``fastContext`` first searches past call transcripts of the same session
  (TF-IDF, local, bounded by ``timeoutMs``) and falls back to the consult only
  with ``fallbackToConsult``; ``openclaw_end_call`` waits for the farewell to be
  heard, then hangs up; custom tools get an "unavailable" result;
- the provider closing (or failing) ends the call.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from voicecall.agent import ResponseRequest
from voicecall.audio.g711 import FRAME_MS
from voicecall.audio.playback import PlaybackQueue
from voicecall.calls import Call, CallEvent, CallState, session_key_for
from voicecall.config import VoiceCallConfig, effective_config
from voicecall.config.sections import RealtimeConfig
from voicecall.errors import VoicecallError
from voicecall.speech.realtime.base import (
    RealtimeEvent,
    RealtimeProvider,
    RealtimeSession,
    RealtimeSetup,
    RealtimeTool,
)

if TYPE_CHECKING:
    from voicecall.gateway.manager import CallManager

__all__ = [
    "CONSULT_TOOL_NAME",
    "END_CALL_TOOL_NAME",
    "SAFE_READ_ONLY_TOOLS",
    "MediaPort",
    "RealtimeBridge",
    "build_agent_context",
    "build_instructions",
    "build_tools",
    "consult_guidance",
    "consult_prompt",
    "search_transcripts",
    "tools_allow",
]

log = logging.getLogger("voicecall.realtime.bridge")

CONSULT_TOOL_NAME = "openclaw_agent_consult"
END_CALL_TOOL_NAME = "openclaw_end_call"
SAFE_READ_ONLY_TOOLS = ("read", "web_search", "web_fetch", "x_search", "memory_search",
                        "memory_get")
MARK_EVERY_FRAMES = 5             # a progress mark every 100 ms of model audio
END_CALL_PLAYBACK_TIMEOUT_S = 2.0
DTMF_FLUSH_S = 1.0
TRANSCRIPT_LINES = 12
FAST_SNIPPET_CHARS = 700
FORCED_RESULT_CHARS = 1800

CONSULT_TOOL = RealtimeTool(
    name=CONSULT_TOOL_NAME,
    description="Delegate the caller's request to the configured OpenClaw agent for normal "
                "tool-backed work, actions, context, memory, or reasoning before speaking.",
    parameters={
        "type": "object",
        "properties": {
            "question": {"type": "string",
                         "description": "The concrete question or task the user asked."},
            "context": {"type": "string",
                        "description": "Optional relevant context or transcript summary."},
            "responseStyle": {"type": "string",
                              "description": "Optional style hint for the spoken answer."},
        },
        "required": ["question"],
    },
)
END_CALL_TOOL = RealtimeTool(
    name=END_CALL_TOOL_NAME,
    description="End the phone call. Say your farewell to the caller first, then call this.",
    parameters={"type": "object", "properties": {}},
)

SUBSTANTIVE_GUIDANCE = (
    "Consult behavior:\n"
    "- Answer directly for greetings, acknowledgements, simple conversational glue, and brief "
    "latency tests.\n"
    f"- Call {CONSULT_TOOL_NAME} before answering requests that need facts, memory, current "
    "information, tools, workspace state, or the user's OpenClaw-specific context.\n"
    "- Keep spoken replies concise and natural."
)
ALWAYS_GUIDANCE = (
    "Consult behavior:\n"
    f"- Call {CONSULT_TOOL_NAME} before every substantive answer.\n"
    "- Answer directly only for greetings, acknowledgements, brief latency tests, or filler.\n"
    "- After the consult result arrives, speak that result concisely."
)
CONSULT_SYSTEM_LINES = (
    "Live voice request from the caller during a live phone call.",
    "Act as the configured OpenClaw agent on behalf of this user. Use available tools when "
    "the request asks you to do work.",
    "Prefer a fast, speakable result; for status checks use one or two bounded read-only "
    "queries. Never print secrets or dump environment variables.",
    "When finished, return only the concise result the realtime voice agent should speak back.",
    "Do not include markdown, tool logs, or private reasoning.",
)


# --------------------------------------------------------------------------- setup


def tools_allow(tool_policy: str) -> tuple[str, ...] | None:
    """The consult run's agent tools for ``toolPolicy`` (None: the normal agent policy)."""
    if tool_policy == "safe-read-only":
        return SAFE_READ_ONLY_TOOLS
    if tool_policy == "owner":
        return None
    return ()


def build_tools(rt: RealtimeConfig) -> list[RealtimeTool]:
    """Consult (unless ``toolPolicy: none``), end-call, then custom tools (no overrides)."""
    tools: list[RealtimeTool] = []
    if rt.tool_policy != "none":
        tools.append(CONSULT_TOOL)
    tools.append(END_CALL_TOOL)
    reserved = {CONSULT_TOOL_NAME, END_CALL_TOOL_NAME}
    seen: set[str] = set()
    for raw in rt.tools:
        name = str(raw.get("name") or "")
        if not name or name in reserved or name in seen:
            if name in reserved:
                log.warning("realtime.tool_name_reserved", extra={"tool": name})
            continue
        seen.add(name)
        params = raw.get("parameters")
        tools.append(RealtimeTool(name=name, description=str(raw.get("description") or ""),
                                  parameters=params if isinstance(params, Mapping)
                                  else {"type": "object", "properties": {}}))
    return tools


def consult_guidance(consult_policy: str, tool_policy: str) -> str:
    """Extra instructions for ``consultPolicy`` (none for ``auto`` or ``toolPolicy: none``)."""
    if tool_policy == "none":
        return ""
    if consult_policy == "substantive":
        return SUBSTANTIVE_GUIDANCE
    if consult_policy == "always":
        return ALWAYS_GUIDANCE
    return ""


def _read_bounded(root: Path, name: str, budget: int) -> str | None:
    """A workspace file under ``root`` (no escaping it), at most ``budget`` chars."""
    try:
        base = root.resolve()
        path = (base / name).resolve()
        if not path.is_relative_to(base) or not path.is_file():
            return None
        with path.open("r", encoding="utf-8", errors="replace") as fh:
            return fh.read(max(0, budget))
    except OSError:
        return None


def build_agent_context(cfg: VoiceCallConfig, workspace_dir: Path | None,
                        route_key: str | None = None) -> str:
    """The bounded agent capsule (§7.5); empty unless ``realtime.agentContext.enabled``."""
    ac = cfg.realtime.agent_context
    if not ac.enabled:
        return ""
    eff = effective_config(cfg, route_key)
    agent = eff.agent_id or cfg.agent_id or "main"
    lines = [
        "OpenClaw agent voice context:",
        f"- Agent id: {agent}",
        "- On fast turns, match the configured agent's personality and tone.",
        f"- Call {CONSULT_TOOL_NAME} for tools, memory, current information and workspace "
        "state.",
    ]
    if ac.include_identity:
        lines += ["", "Configured identity:", f"- Name: {agent}"]
    if ac.include_system_prompt and eff.response_system_prompt:
        lines += ["", "System prompt override:", eff.response_system_prompt.strip()]
    text = "\n".join(lines)
    if ac.include_workspace_files and workspace_dir is not None and workspace_dir.is_dir():
        parts: list[str] = []
        for name in ac.files:
            budget = ac.max_chars - len(text) - sum(len(p) for p in parts)
            if budget <= 0:
                break
            content = _read_bounded(workspace_dir, name, budget + 1)
            if content is None:
                continue
            parts.append(f"\n### {name}\n{content.strip()}")
        if parts:
            text += "\n\nWorkspace voice context:" + "".join(parts)
    if len(text) > ac.max_chars:
        marker = "\n[truncated]"
        text = text[: max(0, ac.max_chars - len(marker))] + marker
    return text


def build_instructions(cfg: VoiceCallConfig, workspace_dir: Path | None = None,
                       route_key: str | None = None) -> str:
    """Base instructions, then consult guidance, then the agent capsule (each once)."""
    rt = cfg.realtime
    parts = [rt.instructions.strip()]
    guidance = consult_guidance(rt.consult_policy, rt.tool_policy)
    if guidance:
        parts.append(guidance)
    capsule = build_agent_context(cfg, workspace_dir, route_key)
    if capsule:
        parts.append(capsule)
    return "\n\n".join(p for p in parts if p)


def consult_prompt(question: str, *, context: str | None = None, style: str | None = None,
                   transcript: Sequence[tuple[str, str]] = ()) -> str:
    """The consult request text (§7.3): framing, style, recent transcript, context, request."""
    parts = list(CONSULT_SYSTEM_LINES)
    if style:
        parts.append(f"Spoken style: {style}")
    recent = transcript[-TRANSCRIPT_LINES:]
    if recent:
        parts.append("Recent transcript:\n" + "\n".join(
            f"{'Caller' if who == 'user' else 'Agent'}: {text}" for who, text in recent))
    if context:
        parts.append(f"Context:\n{context}")
    parts.append(f"User request:\n{question}")
    return "\n\n".join(parts)


# --------------------------------------------------------------------------- fast context

_TOKEN = re.compile(r"[\w']+", re.UNICODE)


_STOP = frozenset("the a an and or but is are was were be been am do does did what which who "
                  "whom this that these those to of in on at for with from by it its i me my "
                  "you your we our they them he she his her can could would should will shall "
                  "have has had not no yes so if then than there here how when where why".split())
_SUFFIXES = ("ing", "ed", "es", "s")


def _stem(word: str) -> str:
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def _tokens(text: str) -> list[str]:
    """Lower-cased, stop words dropped, crude suffix stripping (ordered -> order)."""
    words = (t.lower() for t in _TOKEN.findall(text))
    return [_stem(w) for w in words if len(w) > 1 and w not in _STOP]


@dataclass(frozen=True)
class Snippet:
    source: str        # "sessions" | "memory"
    where: str         # call:<id>:<start>-<end> / session:<key>
    text: str
    score: float


def search_transcripts(query: str, docs: Sequence[tuple[str, str, str]],
                       max_results: int) -> list[Snippet]:
    """TF-IDF cosine ranking of ``(source, where, text)`` documents against ``query``."""
    q = _tokens(query)
    if not q or not docs:
        return []
    toks = [_tokens(text) for _, _, text in docs]
    vocab: dict[str, int] = {}
    for words in [q, *toks]:
        for w in words:
            vocab.setdefault(w, len(vocab))
    n = len(docs)
    df = np.zeros(len(vocab))
    for words in toks:
        for w in set(words):
            df[vocab[w]] += 1
    idf = np.log((1 + n) / (1 + df)) + 1.0

    def vec(words: list[str]) -> Any:
        v = np.zeros(len(vocab))
        for w, c in Counter(words).items():
            v[vocab[w]] = c
        v *= idf
        norm = float(np.linalg.norm(v))
        return v / norm if norm else v

    qv = vec(q)
    scores = [float(vec(words) @ qv) for words in toks]
    ranked = sorted(range(n), key=lambda i: scores[i], reverse=True)
    out = []
    for i in ranked[:max_results]:
        if scores[i] <= 0.05:
            break
        source, where, text = docs[i]
        out.append(Snippet(source, where, text[:FAST_SNIPPET_CHARS], round(scores[i], 3)))
    return out


def fast_context_text(question: str, hits: Sequence[Snippet]) -> str:
    lines = [
        "Fast OpenClaw memory or session context found for the live caller. Use this context "
        "only if it answers the caller's question. If it is not relevant, say briefly that you "
        "do not have that context handy.",
        f"Question: {question}",
        "Context:",
    ]
    for i, hit in enumerate(hits, 1):
        lines.append(f"{i}. [{hit.source}] {hit.where}\n{hit.text}")
    return "\n".join(lines)


FAST_MISS_TEXT = ("No relevant OpenClaw memory or session context was found quickly for this "
                  "question. Answer briefly that you do not have that context handy.")


# --------------------------------------------------------------------------- bridge


class MediaPort(Protocol):
    """The carrier side of a media stream, as the bridge uses it."""

    async def send_media(self, frame: bytes) -> None: ...

    async def send_mark(self, name: str) -> None: ...

    async def send_clear(self) -> None: ...


@dataclass
class _Item:
    """One model output being played."""

    item_id: str
    feed: asyncio.Queue[bytes | None] = field(default_factory=asyncio.Queue)
    open: bool = True
    frames: int = 0                 # 20 ms frames handed to the carrier
    heard_floor_ms: int = 0         # from echoed progress marks
    echoed_at: float | None = None  # when the latest progress mark came back
    task: asyncio.Task[Any] | None = None


@dataclass(frozen=True)
class Truncation:
    item_id: str
    played_ms: int
    sent_ms: int


class RealtimeBridge:
    """One call's realtime conversation; see the module docstring."""

    def __init__(self, manager: CallManager, provider: RealtimeProvider, call: Call,
                 port: MediaPort, *, workspace_dir: Path | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.manager = manager
        self.provider = provider
        self.call_id = call.call_id
        self.call_sid = call.provider_call_id or ""
        self.port = port
        self.workspace_dir = workspace_dir
        self.clock = clock
        self.config: VoiceCallConfig = manager.config
        self.session: RealtimeSession | None = None
        self.queue = PlaybackQueue(self._send_frame, port.send_mark, self._send_clear)
        self._items: dict[str, _Item] = {}
        self._dropped: set[str] = set()
        self._current: _Item | None = None     # the item whose frames go out now
        self._last_sent: _Item | None = None   # the item that sent the latest frame
        self._play_end = 0.0                   # when the carrier's buffer runs dry
        self._marks: dict[str, tuple[_Item, int]] = {}
        self._mark_ids = itertools.count(1)
        self._seq = itertools.count(1)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._keys = ""
        self._keys_flush: asyncio.Task[None] | None = None
        self._speaking = False
        self._last_user_text = ""
        self._consult_lock = asyncio.Lock()
        self.barge_ins = 0
        self.clears = 0
        self.truncations: list[Truncation] = []
        self.ended_by_provider = False
        self.setup: RealtimeSetup | None = None

    # ---------------------------------------------------------------- lifecycle

    def _call(self) -> Call | None:
        return self.manager.get(self.call_id)

    async def start(self) -> None:
        """Open the provider session (the model greets on its own once ready)."""
        call = self._call()
        route = call.number_route_key if call is not None else None
        greeting = self.manager.consume_initial_message(self.call_id)
        self.setup = RealtimeSetup(
            instructions=build_instructions(self.config, self.workspace_dir, route),
            tools=build_tools(self.config.realtime),
            greeting=greeting or None)
        self.session = await self.provider.open(self.call_id, self.setup)
        log.info("realtime.bridge_started", extra={"call_id": self.call_id,
                                                   "provider": self.provider.name})

    async def run(self) -> None:
        """Pump provider events until the session closes; then the call ends."""
        assert self.session is not None
        error: str | None = None
        async for ev in self.session.events():
            try:
                if ev.type == "error":
                    error = ev.text
                    log.warning("realtime.error", extra={"call_id": self.call_id,
                                                         "why": ev.text})
                elif ev.type == "closed":
                    break
                else:
                    await self._on_event(ev)
            except VoicecallError as exc:
                log.warning("realtime.event_failed", extra={"call_id": self.call_id,
                                                            "why": str(exc)})
        self.ended_by_provider = True
        call = self._call()
        if call is not None and not call.terminal:
            log.info("realtime.provider_closed", extra={"call_id": self.call_id, "why": error})
            with contextlib.suppress(VoicecallError):
                # Shielded: the stream closing under us must not leave the call half-ended.
                await asyncio.shield(self.manager.end(
                    self.call_id, reason=CallState.ERROR if error else CallState.COMPLETED,
                    note=f"realtime: {error}" if error else "realtime session closed"))

    async def aclose(self) -> None:
        for item in self._items.values():
            self._close_feed(item)
        await self.queue.close()
        for task in list(self._tasks):
            task.cancel()
        if self._keys_flush is not None:
            self._keys_flush.cancel()
        if self.session is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.session.aclose(), 3.0)
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        async def guarded() -> None:
            try:
                await coro
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("realtime.task_failed", extra={"call_id": self.call_id})

        task = asyncio.get_running_loop().create_task(guarded())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ---------------------------------------------------------------- carrier -> model

    async def on_audio(self, mulaw: bytes) -> None:
        if self.session is not None:
            await self.session.send_audio(mulaw)

    def on_mark(self, name: str) -> None:
        self.queue.on_mark(name)
        hit = self._marks.pop(name, None)
        if hit is not None:
            item, ms = hit
            if ms >= item.heard_floor_ms:
                item.heard_floor_ms = ms
                item.echoed_at = self.clock()

    async def on_dtmf(self, digit: str) -> None:
        """Record the key; the model gets the keys as one text turn (on ``#`` or a pause)."""
        await self._event("call.dtmf", digits=digit)
        self._keys += digit
        if self._keys_flush is not None:
            self._keys_flush.cancel()
        delay = 0.0 if digit == "#" else DTMF_FLUSH_S
        self._keys_flush = asyncio.get_running_loop().create_task(self._flush_keys(delay))

    async def _flush_keys(self, delay: float) -> None:
        await asyncio.sleep(delay)
        keys, self._keys = self._keys, ""
        if keys and self.session is not None:
            text = f"[keypad] The caller pressed these keys on the phone keypad: {keys}"
            send = getattr(self.session, "send_text", None)
            if send is not None:
                await send(text)
            else:
                await self.session.say(text)

    async def say(self, text: str) -> None:
        """An operator's ``speak``: the model says it."""
        if self.session is not None:
            await self.session.say(text)

    # ---------------------------------------------------------------- manager events

    async def _event(self, kind: Any, **fields: Any) -> None:
        await self.manager.handle_event(CallEvent(
            kind, call_id=self.call_id, provider_call_id=self.call_sid or None,
            timestamp=time.time(), dedupe_key=f"realtime:{self.call_id}:{next(self._seq)}",
            **fields), ack=False)

    # ---------------------------------------------------------------- model events

    async def _on_event(self, ev: RealtimeEvent) -> None:
        if ev.type == "audio":
            await self._on_model_audio(ev)
        elif ev.type == "speech-start":
            if self.provider.capabilities.truncation:
                await self._barge_in(truncate=True)
        elif ev.type == "interrupted":
            await self._barge_in(truncate=False, item_id=ev.item_id)
        elif ev.type == "response-done":
            for item in list(self._items.values()):
                self._close_feed(item)
            if self._speaking:
                self._speaking = False
                await self._event("call.listening")
        elif ev.type == "transcript" and ev.final and ev.text.strip():
            await self._on_transcript(ev.role or "assistant", ev.text.strip())
        elif ev.type == "tool-call":
            self._spawn(self._on_tool_call(ev))

    async def _on_transcript(self, role: str, text: str) -> None:
        call = self._call()
        if call is None or call.terminal:
            return
        if role == "user":
            self._last_user_text = text
            await self._event("call.speech", transcript=text, is_final=True)
        else:
            self.manager.memory.add(self._session_key(call), "bot", text)
            await self._event("call.said", text=text)

    async def _on_model_audio(self, ev: RealtimeEvent) -> None:
        item_id = ev.item_id or "model"
        if item_id in self._dropped or not ev.audio:
            return
        item = self._items.get(item_id)
        if item is None:
            for other in self._items.values():
                self._close_feed(other)      # a new output: the previous one is complete
            item = self._items[item_id] = _Item(item_id)
            item.task = self._spawn(self.queue.play(self._feed(item)))
            if not self._speaking:
                self._speaking = True
                await self._event("call.speaking")
        if item.open:
            item.feed.put_nowait(ev.audio)

    async def _feed(self, item: _Item) -> AsyncIterator[bytes]:
        # Items play one at a time: this one owns every frame until the next one starts.
        self._current = item
        while (chunk := await item.feed.get()) is not None:
            yield chunk

    def _close_feed(self, item: _Item) -> None:
        if item.open:
            item.open = False
            item.feed.put_nowait(None)

    async def _send_frame(self, frame: bytes) -> None:
        item = self._current
        await self.port.send_media(frame)
        now = self.clock()
        self._play_end = max(now, self._play_end) + FRAME_MS / 1000
        if item is None or item.item_id in self._dropped:
            return
        item.frames += 1
        self._last_sent = item
        if item.frames % MARK_EVERY_FRAMES == 0:
            name = f"rt-{next(self._mark_ids)}"
            self._marks[name] = (item, item.frames * FRAME_MS)
            await self.port.send_mark(name)

    async def _send_clear(self) -> None:
        self.clears += 1
        await self.port.send_clear()

    def buffered_ms(self) -> int:
        """Audio sent but, by the carrier's playout clock, not yet played."""
        return max(0, int(round((self._play_end - self.clock()) * 1000)))

    def played_ms(self, item_id: str) -> int:
        """What the caller heard of ``item_id``.

        The carrier's own clock, when it has echoed a progress mark of this item:
        the mark's position plus the time since it came back (marks are 100 ms
        apart, so this follows the carrier's real playout, drift included).
        Otherwise our model of its playout: frames sent minus what is still buffered.
        """
        item = self._items.get(item_id)
        if item is None:
            return 0
        sent = item.frames * FRAME_MS
        if item.echoed_at is not None:
            since = int((self.clock() - item.echoed_at) * 1000)
            return min(sent, item.heard_floor_ms + max(0, since))
        heard = sent - self.buffered_ms() if item is self._last_sent else sent
        return max(0, min(sent, heard))

    def _sounding(self) -> _Item | None:
        """The item the caller hears (or is about to hear), if any."""
        if self._last_sent is not None and self.buffered_ms() > 0:
            return self._last_sent
        for item in self._items.values():
            if item.open or (item.task is not None and not item.task.done()):
                return item
        return None

    def busy(self) -> bool:
        return self._sounding() is not None

    async def _barge_in(self, *, truncate: bool, item_id: str | None = None) -> None:
        sounding = self._sounding()
        if truncate and sounding is None:
            return        # the caller spoke while nothing played: an ordinary turn
        self.barge_ins += 1
        truncation: Truncation | None = None
        if truncate and sounding is not None:
            truncation = Truncation(sounding.item_id, self.played_ms(sounding.item_id),
                                    sounding.frames * FRAME_MS)
        for item in list(self._items.values()):
            self._close_feed(item)
            self._dropped.add(item.item_id)
        if item_id:
            self._dropped.add(item_id)
        self._items.clear()
        self._marks.clear()
        self._last_sent = None
        self._play_end = self.clock()
        await self.queue.clear()
        if truncation is not None and self.session is not None:
            self.truncations.append(truncation)
            log.info("realtime.truncate", extra={"call_id": self.call_id,
                                                 "item_id": truncation.item_id,
                                                 "played_ms": truncation.played_ms})
            await self.session.truncate(truncation.item_id, truncation.played_ms)

    # ---------------------------------------------------------------- tools

    def _session_key(self, call: Call) -> str:
        if call.session_key:
            return call.session_key
        eff = effective_config(self.config, call.number_route_key)
        return session_key_for(self.config.session_scope, call.call_id, call.direction,
                               call.from_number, call.to_number, eff.agent_id or "main")

    async def _on_tool_call(self, ev: RealtimeEvent) -> None:
        assert self.session is not None
        call_id = ev.call_id or ""
        name = ev.name or ""
        try:
            args = json.loads(ev.arguments or "{}")
        except ValueError:
            args = {}
        if not isinstance(args, dict):
            args = {}
        if name == CONSULT_TOOL_NAME and self.config.realtime.tool_policy != "none":
            output = await self._consult(args)
        elif name == END_CALL_TOOL_NAME:
            refused = await self._end_call()
            if refused is None:
                return      # hung up: nothing more to say
            output = refused
        else:
            output = json.dumps({"error": f"tool {name!r} is not available on this call"})
        await self.session.send_tool_result(call_id, output)

    async def _consult(self, args: Mapping[str, Any]) -> str:
        call = self._call()
        if call is None:
            return "The call has ended."
        question = ""
        for key in ("question", "prompt", "query", "task"):
            value = args.get(key)
            if isinstance(value, str) and value.strip():
                question = value.strip()
                break
        question = question or self._last_user_text
        context = args.get("context") if isinstance(args.get("context"), str) else None
        style = args.get("responseStyle") if isinstance(args.get("responseStyle"), str) \
            else None
        fc = self.config.realtime.fast_context
        if fc.enabled:
            hits = await self._fast_context(call, question, context)
            if hits:
                return fast_context_text(question, hits)
            if not fc.fallback_to_consult:
                return FAST_MISS_TEXT
        async with self._consult_lock:      # one consult in flight per call
            return await self._run_consult(call, question, context, style)

    async def _run_consult(self, call: Call, question: str, context: str | None,
                           style: str | None) -> str:
        rt = self.config.realtime
        eff = effective_config(self.config, call.number_route_key)
        session = self._session_key(call)
        history = self.manager.memory.history(session)
        req = ResponseRequest(
            call_id=call.call_id, session_key=session,
            user_text=consult_prompt(question, context=context, style=style,
                                     transcript=[(t.role, t.text) for t in history]),
            history=history, system_prompt=eff.response_system_prompt,
            model=eff.response_model, timeout_ms=eff.response_timeout_ms,
            caller_number=call.from_number if call.direction == "inbound" else call.to_number,
            agent_id=eff.agent_id or "main", tools_allow=tools_allow(rt.tool_policy),
            thinking_level=rt.consult_thinking_level, fast_mode=rt.consult_fast_mode,
            purpose="consult")
        try:
            result = await self.manager.responder.respond(req, None)
        except VoicecallError as exc:
            log.warning("realtime.consult_failed", extra={"call_id": call.call_id,
                                                          "why": str(exc)})
            return ("The OpenClaw agent could not answer right now. Tell the caller briefly "
                    "and offer to try again.")
        text = (result.text or "").strip()
        return text or "The OpenClaw agent had nothing to add."

    async def _fast_context(self, call: Call, question: str,
                            context: str | None) -> list[Snippet]:
        fc = self.config.realtime.fast_context
        query = question + ("\n\n" + context if context else "")
        session = self._session_key(call)
        docs: list[tuple[str, str, str]] = []
        if "memory" in fc.sources:
            for i, turn in enumerate(self.manager.memory.history(session)):
                docs.append(("memory", f"session:{session}#{i}", turn.text))
        store = self.manager.store

        def load_sessions() -> list[tuple[str, str, str]]:
            out: list[tuple[str, str, str]] = []
            for past in store.list(limit=200):
                # Only this caller's own session: never another caller's transcript.
                if past.call_id == call.call_id or past.session_key != session:
                    continue
                entries = past.transcript
                for start in range(0, len(entries), 4):
                    window = entries[start:start + 4]
                    text = "\n".join(f"{'Caller' if e.speaker == 'user' else 'Agent'}: "
                                     f"{e.text}" for e in window)
                    out.append(("sessions", f"call:{past.call_id}:{start}-"
                                f"{start + len(window) - 1}", text))
            return out

        async def search() -> list[Snippet]:
            if "sessions" in fc.sources:
                docs.extend(await asyncio.to_thread(load_sessions))
            return search_transcripts(query, docs, fc.max_results)

        try:
            return await asyncio.wait_for(search(), fc.timeout_ms / 1000)
        except (TimeoutError, OSError, VoicecallError) as exc:
            log.info("realtime.fast_context_miss", extra={"call_id": call.call_id,
                                                          "why": type(exc).__name__})
            return []

    async def _end_call(self) -> str | None:
        """Hang up once the farewell has been heard; None when the call was ended."""
        barge_ins = self.barge_ins
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.buffered_ms() / 1000 + END_CALL_PLAYBACK_TIMEOUT_S
        # Let audio of the farewell that is still arriving start before judging "done".
        await asyncio.sleep(0.1)
        while loop.time() < deadline:   # bounded poll of the playout clock
            if not self.busy() or self.barge_ins != barge_ins:
                break
            await asyncio.sleep(FRAME_MS / 1000)
        if self.barge_ins != barge_ins or self.busy():
            return ("The farewell was interrupted or is still playing; keep the call "
                    "connected and continue the conversation.")
        try:
            await asyncio.shield(self.manager.end(self.call_id, reason=CallState.HANGUP_BOT,
                                                  note="realtime: end-call tool"))
        except VoicecallError as exc:
            return f"Hanging up failed ({exc}); tell the caller and keep talking."
        return None

