"""Realtime calls over Telnyx: fake Telnyx <-> gateway <-> fake OpenAI Realtime / Gemini Live."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from tnrt_kit import (
    BOUND,
    STREAM_PREFIX,
    Rig,
    google_cfg,
    openai_cfg,
    rig,
    stream_starts,
)

from voicecall.calls import CallState
from voicecall.testing.fake_gemini_live import FakeGeminiLive
from voicecall.testing.fake_openai_realtime import FakeOpenAIRealtime, Speech
from voicecall.testing.fake_telnyx import CalleeScript, FakeCall

GREETING_MS = 400       # the fakes' greeting turn (a quoted text) lasts this long


def check_realtime_wire(fake_call: FakeCall) -> None:
    """The stream was asked for after the answer, at a path token, bidirectional PCMU;
    nothing of the classic path (speak, transcription) was used."""
    (start,) = stream_starts(fake_call)
    url = start["stream_url"]
    assert url.startswith(STREAM_PREFIX) and "?" not in url
    assert len(url) - len(STREAM_PREFIX) >= 24          # an unguessable token
    assert start["stream_track"] == "inbound_track"
    assert start["stream_codec"] == "PCMU"
    assert start["stream_bidirectional_mode"] == "rtp"
    assert start["stream_bidirectional_codec"] == "PCMU"
    assert start["stream_bidirectional_sampling_rate"] == 8000
    assert "stream_auth_token" not in start             # the path token is the credential
    actions = fake_call.actions
    assert "speak" not in actions and "transcription_start" not in actions
    for body in fake_call.action_bodies("answer") + [fake_call.dial_body]:
        assert "stream_url" not in body
    assert fake_call.stream is not None and fake_call.stream.url == url


async def converse(r: Rig, call_id: str, fake_call: FakeCall, greeting: str, answer: str,
                   asked: str, replies: list[dict[str, Any]], answer_ms: int) -> None:
    call = await r.wait_call(call_id, lambda c: any(
        t.speaker == "bot" and t.text == answer for t in c.transcript), timeout=12)
    # The model greeted with the call's message (its own opening turn) and answered.
    assert replies[0]["text"] == greeting
    texts = [(t.speaker, t.text) for t in call.transcript]
    assert ("bot", greeting) in texts
    assert ("user", asked) in texts
    assert texts.index(("user", asked)) < texts.index(("bot", answer))
    assert "initialMessage" not in call.metadata
    # The callee heard both model turns through the Telnyx stream, paced and marked.
    await r.fake.wait_for(
        lambda: len(fake_call.outbound_audio) >= (GREETING_MS + answer_ms) * 8 * 0.95, 5)
    await r.fake.wait_for(lambda: fake_call.marks_echoed, 5)
    assert fake_call.errors == []
    assert call.state in (CallState.SPEAKING, CallState.LISTENING)
    check_realtime_wire(fake_call)


@pytest.mark.parametrize("model", ["openai", "google"])
async def test_inbound_realtime_call(tmp_path: Path, model: str) -> None:
    async def run() -> None:
        script = [Speech("We open at nine.", ms=800)]
        fake_model: FakeOpenAIRealtime | FakeGeminiLive
        if model == "openai":
            fake_model = FakeOpenAIRealtime(script=script, transcripts=["When do you open?"])
        else:
            fake_model = FakeGeminiLive(script=script, transcripts=["When do you open?"])
        async with fake_model as fm, \
                rig(tmp_path, callee=CalleeScript(replies=["When do you open?"]),
                    inboundGreeting="Thanks for calling the clinic.",
                    **(openai_cfg(fm) if isinstance(fm, FakeOpenAIRealtime)
                       else google_cfg(fm))) as r:
            ccid, fake_call = await r.inbound()
            await converse(r, r.call_id(ccid), fake_call, "Thanks for calling the clinic.",
                           "We open at nine.", "When do you open?", fm.replies, 800)
            # Answered first, then the stream was started (not put on the answer).
            assert fake_call.actions[:2] == ["answer", "streaming_start"]
            if isinstance(fm, FakeOpenAIRealtime):
                assert fm.last.config["audio"]["input"]["format"] == {"type": "audio/pcmu"}
            else:
                assert fm.audio_rates == {16000}
    await asyncio.wait_for(run(), BOUND)


@pytest.mark.parametrize("model", ["openai", "google"])
async def test_outbound_realtime_call(tmp_path: Path, model: str) -> None:
    async def run() -> None:
        script = [Speech("Sure, booked for Monday.", ms=700)]
        fake_model: FakeOpenAIRealtime | FakeGeminiLive
        if model == "openai":
            fake_model = FakeOpenAIRealtime(script=script, transcripts=["Book me for Monday"])
        else:
            fake_model = FakeGeminiLive(script=script, transcripts=["Book me for Monday"])
        async with fake_model as fm, \
                rig(tmp_path, callee=CalleeScript(replies=["Book me for Monday"]),
                    **(openai_cfg(fm) if isinstance(fm, FakeOpenAIRealtime)
                       else google_cfg(fm))) as r:
            call_id, fake_call = await r.outbound("Hi, this is the clinic calling.")
            await converse(r, call_id, fake_call, "Hi, this is the clinic calling.",
                           "Sure, booked for Monday.", "Book me for Monday", fm.replies, 700)
            assert fake_call.actions == ["dial", "streaming_start"]
    await asyncio.wait_for(run(), BOUND)


async def test_operator_speak_goes_through_the_model(tmp_path: Path) -> None:
    async def run() -> None:
        async with FakeOpenAIRealtime() as oa, rig(tmp_path, **openai_cfg(oa)) as r:
            ccid, fake_call = await r.inbound()
            await r.fake.wait_for(lambda: oa.replies and fake_call.marks_echoed, 10)
            call_id = r.call_id(ccid)
            await r.rpc("voicecall.speak", {"callId": call_id,
                                            "message": "Your table is ready."})
            await r.fake.wait_for(lambda: any(
                rep["text"] == "Your table is ready." for rep in oa.replies), 5)
            await r.wait_call(call_id, lambda c: any(
                t.speaker == "bot" and t.text == "Your table is ready." for t in c.transcript))
            # Said by the model in its own voice: no Telnyx speak, no transcription turn.
            assert "speak" not in fake_call.actions
            assert "transcription_start" not in fake_call.actions
            assert len(oa.connections) == 1
    await asyncio.wait_for(run(), BOUND)


async def test_outbound_notify_stays_classic_with_realtime_on(tmp_path: Path) -> None:
    async def run() -> None:
        async with FakeOpenAIRealtime() as oa, rig(tmp_path, **openai_cfg(oa)) as r:
            placed = await r.rpc("voicecall.initiate", {
                "to": "+15550002222", "message": "Your parcel arrives today.",
                "mode": "notify"})
            call = await r.wait_call(placed["callId"], lambda c: c.terminal, timeout=10)
            fake_call = r.fake.latest_call
            assert fake_call.heard == ["Your parcel arrives today."]
            assert "streaming_start" not in fake_call.actions
            assert oa.connections == []
            assert call.state is CallState.COMPLETED
    await asyncio.wait_for(run(), BOUND)


async def test_preconnect_digits_go_before_the_stream(tmp_path: Path) -> None:
    async def run() -> None:
        async with FakeOpenAIRealtime() as oa, rig(tmp_path, **openai_cfg(oa)) as r:
            placed = await r.rpc("voicecall.initiate", {
                "to": "+15550002222", "message": "Hi, it's the clinic.",
                "mode": "conversation", "dtmfSequence": "12"})
            await r.fake.wait_for(lambda: oa.replies, 10)
            fake_call = r.fake.latest_call
            # The IVR digits first (Telnyx send_dtmf), then the model's stream and greeting.
            assert fake_call.actions[:3] == ["dial", "send_dtmf", "streaming_start"]
            assert fake_call.dtmf_received == ["12"]
            assert oa.replies[0]["text"] == "Hi, it's the clinic."
            assert r.manager.get(placed["callId"]) is not None
    await asyncio.wait_for(run(), BOUND)


async def test_unknown_realtime_provider_falls_back_to_classic_calls(tmp_path: Path) -> None:
    async def run() -> None:
        async with rig(tmp_path, callee=CalleeScript(replies=["Hello?"]),
                       inboundGreeting="Hi there.",
                       realtime={"enabled": True, "provider": "nope"}) as r:
            ccid, fake_call = await r.inbound()
            # Realtime media skipped (with a warning): speak and a transcription turn.
            await r.fake.wait_for(lambda: fake_call.heard == ["Hi there."]
                                  and fake_call.transcription_windows >= 1, 5)
            assert "streaming_start" not in fake_call.actions
            assert r.carrier.rt is None and not r.carrier.uses_realtime(
                r.manager.get(ccid))  # type: ignore[arg-type]
    await asyncio.wait_for(run(), BOUND)
