"""Outbound playback over a media stream: one item at a time, paced, marked, clearable.

Each item's audio goes out as 20 ms frames on an absolute clock (a small lead
keeps the carrier's jitter buffer fed without running ahead of barge-in), and
ends with a mark; the item counts as played when the carrier echoes the mark,
i.e. when the caller has actually heard it. ``clear()`` (barge-in) aborts the
item playing, settles every queued item as skipped, and tells the carrier to
drop what it buffered, so nobody waits for audio that will never play.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from voicecall.audio.g711 import FRAME_BYTES, FRAME_MS

Outcome = Literal["played", "skipped", "failed"]
LEAD_FRAMES = 3           # frames sent ahead of real time
MARK_GRACE_S = 2.0        # extra wait for the carrier's mark echo


@dataclass(frozen=True)
class PlaybackResult:
    outcome: Outcome
    sent_ms: int          # audio handed to the carrier
    heard_ms: int         # audio the caller heard (mark echo, or elapsed time if cut short)
    first_frame_at: float | None = None
    error: str | None = None


class PlaybackQueue:
    def __init__(self, send_media: Callable[[bytes], Awaitable[None]],
                 send_mark: Callable[[str], Awaitable[None]],
                 send_clear: Callable[[], Awaitable[None]], *,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self._send_media = send_media
        self._send_mark = send_mark
        self._send_clear = send_clear
        self._clock = clock
        self._sleep = sleep
        self._lock = asyncio.Lock()
        self._generation = 0
        self._marks: dict[str, asyncio.Future[None]] = {}
        self._names = itertools.count(1)
        self._closed = False
        self.playing = False

    async def play(self, audio: AsyncIterator[bytes]) -> PlaybackResult:
        """Queue ``audio`` (mu-law 8 kHz chunks); returns once heard, skipped or failed."""
        gen = self._generation
        async with self._lock:
            if gen != self._generation or self._closed:
                return PlaybackResult("skipped", 0, 0)
            self.playing = True
            try:
                return await self._play(audio, gen)
            finally:
                self.playing = False

    async def _play(self, audio: AsyncIterator[bytes], gen: int) -> PlaybackResult:
        sent = 0
        start: float | None = None
        pending = b""
        try:
            async for chunk in audio:
                pending += chunk
                while len(pending) >= FRAME_BYTES:
                    frame, pending = pending[:FRAME_BYTES], pending[FRAME_BYTES:]
                    if gen != self._generation or self._closed:
                        return self._cut(sent, start)
                    start = start if start is not None else self._clock()
                    await self._pace(start, sent)
                    if gen != self._generation or self._closed:
                        return self._cut(sent, start)     # cleared while we waited
                    await self._send_media(frame)
                    sent += 1
            if pending and gen == self._generation:
                start = start if start is not None else self._clock()
                await self._pace(start, sent)
                if gen != self._generation or self._closed:
                    return self._cut(sent, start)
                await self._send_media(pending + b"\xff" * (FRAME_BYTES - len(pending)))
                sent += 1
        except Exception as exc:  # a failed synthesis or a dead socket: report, don't raise
            return PlaybackResult("failed", sent * FRAME_MS, self._heard(sent, start),
                                  start, error=f"{type(exc).__name__}: {exc}")
        if gen != self._generation or self._closed:
            return self._cut(sent, start)
        if sent == 0:
            return PlaybackResult("failed", 0, 0, None, error="no audio")
        return await self._await_mark(sent, start, gen)

    async def _await_mark(self, sent: int, start: float | None, gen: int) -> PlaybackResult:
        name = f"tts-{next(self._names)}"
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._marks[name] = done
        try:
            await self._send_mark(name)
            remaining = (start or self._clock()) + sent * FRAME_MS / 1000 - self._clock()
            await asyncio.wait_for(asyncio.shield(done), max(0.0, remaining) + MARK_GRACE_S)
        except TimeoutError:
            return PlaybackResult("failed", sent * FRAME_MS, self._heard(sent, start), start,
                                  error="mark not echoed")
        except Exception as exc:
            return PlaybackResult("failed", sent * FRAME_MS, self._heard(sent, start), start,
                                  error=f"{type(exc).__name__}: {exc}")
        finally:
            self._marks.pop(name, None)
        if gen != self._generation:
            return self._cut(sent, start)
        return PlaybackResult("played", sent * FRAME_MS, sent * FRAME_MS, start)

    def _heard(self, sent: int, start: float | None) -> int:
        if start is None:
            return 0
        elapsed = int((self._clock() - start) * 1000)
        return max(0, min(sent * FRAME_MS, elapsed))

    def _cut(self, sent: int, start: float | None) -> PlaybackResult:
        return PlaybackResult("skipped", sent * FRAME_MS, self._heard(sent, start), start)

    async def _pace(self, start: float, index: int) -> None:
        due = start + (index - LEAD_FRAMES) * FRAME_MS / 1000
        delay = due - self._clock()
        if delay > 0:
            await self._sleep(delay)

    def on_mark(self, name: str) -> None:
        fut = self._marks.get(name)
        if fut is not None and not fut.done():
            fut.set_result(None)

    async def clear(self) -> None:
        """Barge-in: stop what plays, skip what waits, flush the carrier's buffer."""
        self._generation += 1
        for fut in self._marks.values():
            if not fut.done():
                fut.set_result(None)
        await self._send_clear()

    async def close(self) -> None:
        """Stream gone: settle everything as skipped without touching the socket."""
        self._closed = True
        self._generation += 1
        for fut in self._marks.values():
            if not fut.done():
                fut.set_result(None)
