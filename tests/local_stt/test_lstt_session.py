"""The offline STT through the real session API: 20 ms mu-law frames in, events out."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest
from conftest import PHRASES, caller_mulaw, mulaw_frames, silence

from voicecall.errors import ProviderError
from voicecall.speech.stt.base import SttEvent
from voicecall.speech.stt.local import STT, EngineSpec, LocalSttSession, create

TIMEOUT_S = 90          # generous bound: worker start-up + decode on a loaded machine


async def feed(session: LocalSttSession, audio: bytes) -> None:
    for frame in mulaw_frames(audio):
        await session.send_audio(frame)


async def collect(session: LocalSttSession, finals: int) -> list[SttEvent]:
    events: list[SttEvent] = []
    async with asyncio.timeout(TIMEOUT_S):
        async for ev in session.events():
            events.append(ev)
            if sum(e.type == "final" for e in events) == finals or ev.type == "closed":
                break
    return events


async def test_caller_phrase_is_transcribed_with_hints() -> None:
    phrase = "i would like to book a table for two at seven pm"
    stt = create({"hints": list(PHRASES)})
    try:
        session = await stt.open("call-1")
        # sent at once, before the worker is ready: the session queues it
        await feed(session, silence(500) + caller_mulaw(phrase) + silence(1000))
        async with asyncio.timeout(TIMEOUT_S):
            await session.wait_ready()
        events = await collect(session, finals=1)
        assert [e.type for e in events] == ["ready", "speech-start", "final"]
        assert events[-1].text == phrase
        await session.aclose()
    finally:
        await stt.aclose()


async def test_utterances_come_out_in_order_with_per_call_hints() -> None:
    stt = STT(EngineSpec(hints=("nothing like this",)))
    try:
        session = await stt.open("call-2", hints=PHRASES[3:5])
        await feed(session, silence(300) + caller_mulaw(PHRASES[3]) + silence(900)
                   + caller_mulaw(PHRASES[4]) + silence(900))
        events = await collect(session, finals=2)
        kinds = [e.type for e in events]
        assert kinds == ["ready", "speech-start", "speech-start", "final", "final"] or \
            kinds == ["ready", "speech-start", "final", "speech-start", "final"]
        assert [e.text for e in events if e.type == "final"] == list(PHRASES[3:5])
        await session.aclose()
    finally:
        await stt.aclose()


async def test_decoding_never_blocks_the_event_loop() -> None:
    # no hints: the general model decodes ~5 s of speech, which takes a while;
    # the loop must keep ticking every 10 ms meanwhile
    stt = STT(EngineSpec())
    gaps: list[float] = []
    try:
        session = await stt.open("call-3")
        await session.wait_ready()
        speech = caller_mulaw(PHRASES[0]) + caller_mulaw(PHRASES[2])
        await feed(session, silence(300) + speech + silence(900))

        async def tick() -> None:
            last = time.perf_counter()
            while True:
                await asyncio.sleep(0.01)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        ticker = asyncio.create_task(tick())
        t0 = time.perf_counter()
        events = await collect(session, finals=1)
        decode_wall = time.perf_counter() - t0
        ticker.cancel()
        assert events[-1].type == "final" and events[-1].text
        assert decode_wall > 0.1                 # there was real work to wait for
        assert max(gaps) < 0.25
        await session.aclose()
    finally:
        await stt.aclose()


async def test_silence_gives_no_transcript_and_close_ends_the_stream() -> None:
    stt = STT(EngineSpec(hints=PHRASES), worker="thread")
    try:
        session = await stt.open("call-4")
        await session.wait_ready()
        await feed(session, silence(2000))
        await asyncio.sleep(0.2)
        await session.aclose()
        await session.aclose()                   # idempotent
        events = await collect(session, finals=1)
        assert [e.type for e in events] == ["ready", "closed"]
        await session.send_audio(silence(20))    # after close: ignored, no error
    finally:
        await stt.aclose()


async def test_a_model_that_cannot_load_fails_ready_and_reports() -> None:
    stt = STT(EngineSpec(hmm="/nonexistent/acoustic-model"))
    try:
        session = await stt.open("call-5")
        with pytest.raises(ProviderError, match="cannot load|local STT"):
            async with asyncio.timeout(TIMEOUT_S):
                await session.wait_ready()
        await session.send_audio(silence(20))    # dropped, not queued forever
        assert session._audio.qsize() == 0
        await session.aclose()
        events = await collect(session, finals=1)
        assert [e.type for e in events] == ["error", "closed"]
        assert stt._runner.pids == []
    finally:
        await stt.aclose()


async def test_a_dead_worker_is_reported_and_replaced() -> None:
    stt = STT(EngineSpec(hints=PHRASES))
    try:
        session = await stt.open("call-6")
        await session.wait_ready()
        (pid,) = stt._runner.pids
        os.kill(pid, signal.SIGKILL)
        await feed(session, silence(300) + caller_mulaw(PHRASES[1]) + silence(900))
        events: list[SttEvent] = []
        async with asyncio.timeout(TIMEOUT_S):
            async for ev in session.events():
                events.append(ev)
                if ev.type == "error":
                    break
        assert events[-1].type == "error" and "worker died" in events[-1].text
        # the next utterance waits for the replacement worker, started in the background
        await feed(session, caller_mulaw(PHRASES[1]) + silence(900))
        events = await collect(session, finals=1)
        assert events[-1].type == "final" and events[-1].text == PHRASES[1]
        assert len(stt._runner.pids) == 1 and stt._runner.pids != [pid]
        await session.aclose()
    finally:
        await stt.aclose()
    assert stt._runner.pids == []
