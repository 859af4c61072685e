"""When and how often the consult tool runs during one realtime call (§7.3-§7.4).

- **Settle**: a consult first waits until the caller's partial transcript has
  been quiet for 350 ms (at most 1 s after the call), so a question the model
  asked mid-utterance is answered for the whole utterance.
- **One consult in flight per call**: a concurrent tool call for the same
  request (its own call id again, or the same question, context and style)
  shares the running consult's answer; a different request gets ``busy``
  (not started, retry later) rather than the answer to another question.
- **Interim result**: where the provider can continue a tool call and fast
  context is off, the model first gets ``status: working`` (it tells the
  caller it is checking), then the final answer.
- **Host-forced consult** (``consultPolicy: always``, never with
  ``toolPolicy: none``): a final caller transcript arms it; unless the model
  calls the tool within 200 ms (or already did during this caller turn, or
  for this question in the last 2 s), the outbound audio is cleared, the
  consult runs and its answer goes to the model as a user message. A tool
  call while it runs shares its answer (and nothing is injected); one after
  it was delivered gets ``already_delivered`` with no new response. An armed
  consult never carries over: the model consulting or the next caller turn
  cancels it.

Results for a call that has ended are dropped.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections import deque
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from voicecall.gateway.realtime.consult import CONSULT_TOOL_NAME, Consulter, asked_question
from voicecall.speech.realtime.base import RealtimeProvider, RealtimeSession

__all__ = [
    "ALREADY_DELIVERED",
    "BUSY",
    "FORCED_REASON",
    "ConsultFlow",
    "ConsultHost",
    "forced_prompt",
    "limit_speakable",
    "same_question",
    "working_result",
]

log = logging.getLogger("voicecall.realtime.consult")

SETTLE_QUIET_S = 0.35
SETTLE_MAX_S = 1.0
FORCED_DELAY_S = 0.2
FORCED_DEDUPE_S = 2.0
FORCED_RESULT_CHARS = 1800
PARTIAL_CHARS = 1200
FORCED_REASON = "provider_final_transcript_without_openclaw_agent_consult"
ALREADY_DELIVERED = json.dumps({
    "status": "already_delivered",
    "message": "OpenClaw already delivered this consult result internally. Do not repeat it."})
BUSY = json.dumps({
    "status": "busy", "started": False, "retryable": True,
    "error": "A different consult request is already in progress; this one was not started. "
             "Retry it after the current result arrives."})
_STOPWORDS = frozenset("the a an and or to of in on at for is are was be do does did what when "
                       "where who how can could would will you your me my i it this that".split())


def working_result(tool: str = CONSULT_TOOL_NAME) -> str:
    return json.dumps({
        "status": "working", "tool": tool,
        "message": "Tell the caller briefly that you are checking, then wait for the final "
                   "OpenClaw result before answering with the actual result."})


def limit_speakable(text: str, limit: int = FORCED_RESULT_CHARS) -> str:
    """``text`` in at most ``limit`` characters, marked ``[truncated]`` when cut."""
    text = text.strip()
    if len(text) <= limit:
        return text
    return text[:limit - 16].rstrip() + " [truncated]"


def forced_prompt(answer: str) -> str:
    return ("Internal OpenClaw consult result is ready. Do not call tools for this internal "
            "result. Speak the following answer to the caller now, briefly and naturally:\n"
            + limit_speakable(answer))


def _normal(text: str) -> str:
    return " ".join(re.sub(r"[\W_]+", " ", text.lower()).split())


def same_question(a: str, b: str) -> bool:
    """Equal or contained after normalising, or mostly the same content words."""
    na, nb = _normal(a), _normal(b)
    if not na or not nb:
        return False
    if na == nb or na in nb or nb in na:
        return True
    ta = {w for w in na.split() if len(w) > 1 and w not in _STOPWORDS}
    tb = {w for w in nb.split() if len(w) > 1 and w not in _STOPWORDS}
    overlap = len(ta & tb)
    return overlap >= 2 and overlap / min(len(ta), len(tb)) >= 0.6


def _request_key(args: Mapping[str, Any]) -> tuple[str | None, str, str]:
    def text(key: str) -> str:
        value = args.get(key)
        return value.strip() if isinstance(value, str) else ""
    return asked_question(args), text("context"), text("responseStyle")


class ConsultHost(Protocol):
    """What the flow needs from the call's bridge."""

    @property
    def provider(self) -> RealtimeProvider: ...

    @property
    def session(self) -> RealtimeSession | None: ...

    def spawn_task(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]: ...

    async def clear_outbound(self) -> None: ...


@dataclass
class _Run:
    """The native consult in flight."""

    key: tuple[str | None, str, str]
    future: asyncio.Future[str]
    call_ids: set[str] = field(default_factory=set)


@dataclass
class _Forced:
    """The host-forced consult running, or recently delivered."""

    question: str
    turn: int
    future: asyncio.Future[str]
    speak: bool = True                  # inject the answer (False: a tool call carries it)
    delivered_at: float | None = None


class ConsultFlow:
    """One call's consult orchestration; see the module docstring."""

    def __init__(self, host: ConsultHost, consulter: Consulter) -> None:
        self.host = host
        self.consulter = consulter
        self.rt = consulter.config.realtime
        self._partial = ""
        self._partial_at: float | None = None   # latest partial not yet made final
        self._final = ""
        self._turn = 0                           # caller turns (final transcripts)
        self._consulted_in_turn = False          # a tool call not tied to a forced consult
        self._recent: deque[tuple[str | None, float]] = deque(maxlen=12)
        self._native: _Run | None = None
        self._forced: _Forced | None = None
        self._armed: asyncio.Task[Any] | None = None
        self.settle_waits: list[float] = []      # seconds each consult waited (observability)
        self.forced_questions: list[str] = []

    # ---------------------------------------------------------------- caller transcript

    def note_partial(self, text: str) -> None:
        self._partial = (self._partial + text)[-PARTIAL_CHARS:]
        self._partial_at = _now()

    def note_final(self, text: str) -> None:
        """A caller turn ended: maybe arm a forced consult (the previous one never carries)."""
        self._partial, self._partial_at, self._final = "", None, text
        self._turn += 1
        self._cancel_armed()
        consulted, self._consulted_in_turn = self._consulted_in_turn, False
        if self._forcing() and not consulted:
            self._arm(text)

    # ---------------------------------------------------------------- native tool calls

    async def on_tool_call(self, call_id: str, args: Mapping[str, Any]) -> None:
        """The model called the consult tool: answer ``call_id`` (interim, then final)."""
        now = _now()
        asked = asked_question(args)
        self._recent.append((asked, now))
        forced = self._forced
        tied = self._armed is not None or (forced is not None and forced.turn == self._turn)
        self._cancel_armed()            # the model consulted: no forced consult for this turn
        if not tied:
            self._consulted_in_turn = True
        if forced is not None and await self._answer_from_forced(call_id, asked, forced, now):
            return
        run = self._native
        if run is not None:
            await self._join(call_id, args, run)
            return
        run = self._native = _Run(_request_key(args), _future(), {call_id})
        try:
            await self._interim(call_id)
            await self._settle(now)
            answer = await self.consulter.consult(args, self._partial.strip() or self._final)
            run.future.set_result(answer)
        finally:
            if not run.future.done():
                run.future.cancel()
            if self._native is run:
                self._native = None
        await self._send(call_id, answer)

    async def _answer_from_forced(self, call_id: str, asked: str | None, forced: _Forced,
                                  now: float) -> bool:
        if forced.delivered_at is not None:
            recent = now - forced.delivered_at <= FORCED_DEDUPE_S
            same = forced.turn == self._turn and (asked is None
                                                  or same_question(asked, forced.question))
            if not (recent or same):
                return False
            log.info("realtime.consult_already_delivered", extra={
                "call_id": self.consulter.call_id, "tool_call": call_id})
            await self._send(call_id, ALREADY_DELIVERED, respond=False)
            return True
        if forced.future.done():
            return False            # cancelled: consult natively
        forced.speak = False        # the tool result carries the answer instead
        await asyncio.wait({forced.future})
        if forced.future.cancelled():
            return False
        await self._send(call_id, forced.future.result())
        return True

    async def _join(self, call_id: str, args: Mapping[str, Any], run: _Run) -> None:
        key = _request_key(args)
        if call_id not in run.call_ids and (key[0] is None or key != run.key):
            log.info("realtime.consult_busy", extra={"call_id": self.consulter.call_id,
                                                     "tool_call": call_id})
            await self._send(call_id, BUSY)
            return
        run.call_ids.add(call_id)
        await self._interim(call_id)
        await asyncio.wait({run.future})
        if not run.future.cancelled():
            await self._send(call_id, run.future.result())

    async def _settle(self, started: float) -> None:
        """Until the partial transcript is quiet for 350 ms, at most 1 s after ``started``."""
        deadline = started + SETTLE_MAX_S
        while (at := self._partial_at) is not None:
            now = _now()
            quiet = now - at
            if quiet >= SETTLE_QUIET_S or now >= deadline:
                break
            await asyncio.sleep(min(SETTLE_QUIET_S - quiet, deadline - now))
        self.settle_waits.append(round(_now() - started, 3))

    # ---------------------------------------------------------------- host-forced consult

    def _forcing(self) -> bool:
        return self.rt.consult_policy == "always" and self.rt.tool_policy != "none"

    def _arm(self, question: str) -> None:
        if self._forced is not None and not self._forced.future.done():
            return              # one forced consult at a time
        if self._native is not None:
            return              # one consult in flight per call
        cutoff = _now() - FORCED_DEDUPE_S
        if any(at >= cutoff and (q is None or same_question(q, question))
               for q, at in self._recent):
            return
        self._armed = self.host.spawn_task(self._force_after_delay(question, self._turn))

    def _cancel_armed(self) -> None:
        if self._armed is not None:
            self._armed.cancel()
            self._armed = None

    async def _force_after_delay(self, question: str, turn: int) -> None:
        await asyncio.sleep(FORCED_DELAY_S)
        self._armed = None      # from here on it runs: the model can only share it
        if turn != self._turn or self._native is not None:
            return
        forced = self._forced = _Forced(question, turn, _future())
        self.forced_questions.append(question)
        log.info("realtime.forced_consult", extra={"call_id": self.consulter.call_id,
                                                   "reason": FORCED_REASON})
        try:
            await self.host.clear_outbound()
            answer = await self.consulter.consult({"question": question})
            forced.future.set_result(answer)
        finally:
            if not forced.future.done():
                forced.future.cancel()
        forced.delivered_at = _now()
        if forced.speak and self._alive() is not None:
            await self.host.clear_outbound()
            await self._send_text(forced_prompt(answer))

    # ---------------------------------------------------------------- to the model

    def _alive(self) -> RealtimeSession | None:
        """The session, unless the call has ended (its pending results are dropped)."""
        call = self.consulter.manager.get(self.consulter.call_id)
        return self.host.session if call is not None and not call.terminal else None

    async def _interim(self, call_id: str) -> None:
        if self.host.provider.capabilities.tool_continuation and \
                not self.rt.fast_context.enabled:
            await self._send(call_id, working_result(), will_continue=True)

    async def _send(self, call_id: str, output: str, *, will_continue: bool = False,
                    respond: bool = True) -> None:
        session = self._alive()
        if session is not None:
            await session.send_tool_result(call_id, output, will_continue=will_continue,
                                           respond=respond)

    async def _send_text(self, text: str) -> None:
        session = self._alive()
        if session is None:
            return
        send = getattr(session, "send_text", None)
        if send is not None:
            await send(text)
        else:
            await session.say(text)


def _now() -> float:
    return asyncio.get_running_loop().time()


def _future() -> asyncio.Future[str]:
    return asyncio.get_running_loop().create_future()
