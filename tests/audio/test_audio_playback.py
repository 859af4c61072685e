"""PlaybackQueue pacing on an absolute clock, checked with a fake clock and a late sleeper."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np

from voicecall.audio.g711 import FRAME_BYTES
from voicecall.audio.playback import LEAD_FRAMES, PlaybackQueue

FRAMES = 1000
STEP = 0.020


class FakeTime:
    """A clock that only moves when the queue sleeps; every sleep overshoots by 0-4 ms."""

    def __init__(self, start: float = 100.0) -> None:
        self.now = start
        self._late = np.random.default_rng(11).uniform(0.0, 0.004, 100_000)
        self._n = 0
        self.sleeps = 0

    def clock(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.now += max(delay, 0.0) + float(self._late[self._n])
        self._n += 1
        self.sleeps += 1
        await asyncio.sleep(0)


async def test_frames_go_out_on_an_absolute_clock_without_drift() -> None:
    ft = FakeTime()
    sent_at: list[float] = []
    queue: PlaybackQueue

    async def send_media(frame: bytes) -> None:
        assert len(frame) == FRAME_BYTES
        sent_at.append(ft.now)

    async def send_mark(name: str) -> None:
        queue.on_mark(name)

    async def send_clear() -> None:
        pass

    queue = PlaybackQueue(send_media, send_mark, send_clear, clock=ft.clock, sleep=ft.sleep)

    async def audio() -> AsyncIterator[bytes]:
        # odd chunk sizes: the queue re-frames them to 160 bytes
        data = b"\x7f" * (FRAME_BYTES * FRAMES)
        for i in range(0, len(data), 1000):
            yield data[i:i + 1000]

    result = await queue.play(audio())
    assert result.outcome == "played"
    assert result.sent_ms == FRAMES * 20
    start = result.first_frame_at
    assert start is not None and len(sent_at) == FRAMES

    due = start + (np.arange(FRAMES) - LEAD_FRAMES) * STEP
    lag = np.asarray(sent_at) - np.maximum(due, start)
    # the lead frames go out at once; no frame ever goes out before it is due
    assert np.all(np.asarray(sent_at[:LEAD_FRAMES + 1]) == start)
    assert lag.min() >= -1e-9
    # each frame is late by at most one sleep's overshoot, and that lateness does
    # not accumulate: frame 999 is as close to its slot as frame 10
    assert lag.max() <= 0.004 + 1e-9
    assert abs(sent_at[-1] - (start + (FRAMES - 1 - LEAD_FRAMES) * STEP)) <= 0.004 + 1e-9
    # a relative pacer (sleep 20 ms after each send) would have drifted by ~2 s here
    assert ft.sleeps <= FRAMES


async def test_lead_is_small_and_constant() -> None:
    ft = FakeTime()
    sent_at: list[float] = []
    queue: PlaybackQueue

    async def send_media(frame: bytes) -> None:
        sent_at.append(ft.now)

    async def send_mark(name: str) -> None:
        queue.on_mark(name)

    async def send_clear() -> None:
        pass

    queue = PlaybackQueue(send_media, send_mark, send_clear, clock=ft.clock, sleep=ft.sleep)

    async def audio() -> AsyncIterator[bytes]:
        yield b"\xff" * FRAME_BYTES * 200

    result = await queue.play(audio())
    assert result.outcome == "played" and result.first_frame_at is not None
    # audio handed over minus audio that should have played by then: never more
    # than LEAD_FRAMES + 1 frames ahead of real time
    ahead = [(i + 1) * STEP - (t - result.first_frame_at) for i, t in enumerate(sent_at)]
    assert max(ahead) <= (LEAD_FRAMES + 1) * STEP + 1e-9
    assert min(ahead[LEAD_FRAMES:]) >= LEAD_FRAMES * STEP - 0.004 - 1e-9


async def test_no_frame_goes_out_after_a_clear_that_lands_during_pacing() -> None:
    # The clear arrives while the queue sleeps until the next frame is due: that
    # frame must not be sent after the carrier buffer was cleared.
    sent: list[int] = []
    cleared_at: list[int] = []
    queue: PlaybackQueue
    sleeping = asyncio.Event()
    resume = asyncio.Event()

    async def sleep(delay: float) -> None:
        sleeping.set()
        await resume.wait()

    async def send_media(frame: bytes) -> None:
        sent.append(len(sent))

    async def send_mark(name: str) -> None:
        queue.on_mark(name)

    async def send_clear() -> None:
        cleared_at.append(len(sent))

    queue = PlaybackQueue(send_media, send_mark, send_clear, sleep=sleep)

    async def audio() -> AsyncIterator[bytes]:
        yield b"\xff" * FRAME_BYTES * 50

    playing = asyncio.create_task(queue.play(audio()))
    await asyncio.wait_for(sleeping.wait(), 2)      # the lead is out; pacing the next frame
    await queue.clear()
    resume.set()
    result = await asyncio.wait_for(playing, 2)
    assert result.outcome == "skipped"
    assert cleared_at == [LEAD_FRAMES + 1] and len(sent) == LEAD_FRAMES + 1
