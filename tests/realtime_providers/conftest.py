"""Fixtures for the realtime provider tests (real sockets against the loopback fakes)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import pytest
from rtp_kit import TIMEOUT, Events

from voicecall.speech.realtime.base import RealtimeSession


@pytest.fixture
async def watch() -> AsyncIterator[Callable[[RealtimeSession], Events]]:
    """``watch(session)`` -> ``Events``; sessions are closed and collectors awaited at the end."""
    made: list[Events] = []

    def make(session: RealtimeSession) -> Events:
        ev = Events(session)
        made.append(ev)
        return ev

    yield make
    for ev in made:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ev.session.aclose(), TIMEOUT)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ev.task, TIMEOUT)
        ev.task.cancel()
