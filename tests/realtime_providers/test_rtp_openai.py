"""OpenAI Realtime (GA) provider against its wire-protocol fake, over real sockets."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
from rtp_kit import SECRET, Events, dominant_hz, send_frames, tone_burst

from voicecall.config.secret import Secret
from voicecall.errors import ConfigError, ProviderError
from voicecall.speech.realtime import openai
from voicecall.speech.realtime.base import RealtimeSetup, RealtimeTool
from voicecall.testing.fake_openai_realtime import FakeOpenAIRealtime, FunctionCall, Speech

Watch = Callable[[Any], Events]

LOOKUP = RealtimeTool("lookup_order", "Find an order",
                      {"type": "object", "properties": {"order_id": {"type": "string"}},
                       "required": ["order_id"]})


def _provider(fake: FakeOpenAIRealtime, **cfg: Any) -> openai.Provider:
    return openai.create({"apiKey": Secret(fake.api_key), "baseUrl": fake.base_url, **cfg})


async def _open(fake: FakeOpenAIRealtime, setup: RealtimeSetup | None = None,
                **cfg: Any) -> openai.OpenAIRealtimeSession:
    session = await _provider(fake, **cfg).open("call-1", setup or RealtimeSetup("Be brief."))
    return session


# --------------------------------------------------------------------------- config


def test_create_defaults_and_config_errors() -> None:
    p = openai.create({"apiKey": Secret("sk-abc")})
    assert p.name == "openai" and p.model == "gpt-realtime" and p.voice == "alloy"
    assert p.url == "wss://api.openai.com/v1/realtime?model=gpt-realtime"
    assert p.capabilities.truncation and p.capabilities.server_vad
    assert not p.capabilities.resumption
    assert "sk-abc" not in repr(p)
    p = openai.create({"apiKey": "k", "model": "gpt-realtime-2.1", "threshold": 0.7,
                       "endpoint": "ws://127.0.0.1:9/x"})
    assert p.vad_threshold == 0.7 and p.url == "ws://127.0.0.1:9/x?model=gpt-realtime-2.1"
    with pytest.raises(ConfigError, match="realtime.providers.openai.apiKey"):
        openai.create({})
    with pytest.raises(ConfigError, match="noiseReduction"):
        openai.create({"apiKey": "k", "noiseReduction": "loud"})
    with pytest.raises(ConfigError, match="vadThreshold"):
        openai.create({"apiKey": "k", "vadThreshold": 2})


def test_builtin_factories() -> None:
    from voicecall.speech.realtime.builtin import builtin_factories

    factories = builtin_factories()
    assert list(factories) == ["google", "openai"]
    assert factories["openai"]({"apiKey": "k"}).name == "openai"
    assert factories["google"]({"apiKey": "k"}).name == "google"


# --------------------------------------------------------------------------- setup


async def test_session_update_is_ga_shaped_with_pcmu_vad_and_tools(watch: Watch) -> None:
    async with FakeOpenAIRealtime() as fake:
        session = await _open(fake, RealtimeSetup("You answer the phone.", tools=[LOOKUP],
                                                  voice="marin"),
                              silenceDurationMs=700, vadThreshold=0.6, prefixPaddingMs=200,
                              interruptResponse=False, noiseReduction="near_field",
                              language="en")
        events = watch(session)
        await asyncio.wait_for(session.wait_ready(), 3)
        await events.wait("ready")
        rec = fake.last
        assert rec.q("model") == ["gpt-realtime"][0]
        assert rec.headers["authorization"] == "Bearer ***"
        assert "openai-beta" not in rec.headers
        update = rec.messages[0]
        assert update["type"] == "session.update"
        s = update["session"]
        assert s["type"] == "realtime" and s["output_modalities"] == ["audio"]
        assert s["instructions"] == "You answer the phone."
        assert s["audio"]["input"]["format"] == {"type": "audio/pcmu"}
        assert s["audio"]["output"] == {"format": {"type": "audio/pcmu"}, "voice": "marin"}
        assert s["audio"]["input"]["turn_detection"] == {
            "type": "server_vad", "threshold": 0.6, "prefix_padding_ms": 200,
            "silence_duration_ms": 700, "create_response": True, "interrupt_response": False}
        assert s["audio"]["input"]["transcription"] == {"model": "gpt-4o-mini-transcribe",
                                                        "language": "en"}
        assert s["audio"]["input"]["noise_reduction"] == {"type": "near_field"}
        assert s["tools"] == [{"type": "function", "name": "lookup_order",
                               "description": "Find an order",
                               "parameters": dict(LOOKUP.parameters)}]
        assert s["tool_choice"] == "auto"
        # No beta-era flat fields anywhere.
        assert not {"voice", "input_audio_format", "output_audio_format", "modalities",
                    "turn_detection"} & set(s)
        # The fake accepted it: the session in force is mu-law both ways.
        assert rec.config["audio"]["output"]["format"] == {"type": "audio/pcmu"}
        assert events.types()[0] == "ready"


async def test_transcription_off_and_vad_defaults(watch: Watch) -> None:
    async with FakeOpenAIRealtime() as fake:
        session = await _open(fake, inputTranscription=False)
        watch(session)
        await session.wait_ready()
        s = fake.last.messages[0]["session"]
        assert "transcription" not in s["audio"]["input"]
        assert s["audio"]["input"]["turn_detection"]["silence_duration_ms"] == 500
        assert s["audio"]["input"]["turn_detection"]["threshold"] == 0.5
        assert s["audio"]["input"]["turn_detection"]["prefix_padding_ms"] == 300
        assert s["audio"]["input"]["turn_detection"]["interrupt_response"] is True
        assert "tools" not in s


async def test_refused_session_update_fails_ready_without_key(watch: Watch) -> None:
    async with FakeOpenAIRealtime(api_key=SECRET) as fake:
        session = await _open(fake, RealtimeSetup("x", voice="robot"))
        events = watch(session)
        with pytest.raises(ProviderError, match="invalid_value") as info:
            await asyncio.wait_for(session.wait_ready(), 3)
        assert SECRET not in str(info.value)
        await events.closed()
        assert events.types() == ["error", "closed"]


# --------------------------------------------------------------------------- turns


async def test_caller_turn_gives_vad_events_transcripts_and_mulaw_audio(watch: Watch) -> None:
    async with FakeOpenAIRealtime([Speech("Sure thing, one moment", ms=600, freq=500)],
                                  transcripts=["where is my order"]) as fake:
        session = await _open(fake)
        events = watch(session)
        await session.wait_ready()
        await send_frames(session, tone_burst())
        done = await events.wait("response-done")
        assert done.text == "completed"
        kinds = events.types()
        assert kinds.index("speech-start") < kinds.index("speech-stop") < kinds.index("audio")
        user = events.of("transcript", role="user", final=True)
        assert [e.text for e in user] == ["where is my order"]
        final = events.of("transcript", role="assistant", final=True)
        assert [e.text for e in final] == ["Sure thing, one moment"]
        partial = events.of("transcript", role="assistant", final=False)
        assert "".join(e.text for e in partial) == "Sure thing, one moment"
        reply = fake.replies[-1]
        audio = events.audio(reply["item_id"])
        assert len(audio) == 600 * 8              # mu-law 8 kHz, passed through unchanged
        assert all(e.item_id == reply["item_id"] for e in events.of("audio"))
        assert abs(dominant_hz(audio) - 500) < 20
        assert fake.last.audio_ms == pytest.approx(1100, abs=1)
        assert session.sent_bytes == 1100 * 8


async def test_old_beta_event_names_are_understood(watch: Watch) -> None:
    async with FakeOpenAIRealtime([Speech("Old names work", ms=300)],
                                  legacy_names=True) as fake:
        session = await _open(fake)
        events = watch(session)
        await session.wait_ready()
        await send_frames(session, tone_burst())
        await events.wait("response-done")
        assert len(events.audio()) == 300 * 8
        assert [e.text for e in events.of("transcript", role="assistant", final=True)] == \
            ["Old names work"]
        assert any(s.get("type") == "response.audio.delta" for s in fake.last.sent)


async def test_audio_before_ready_is_queued_then_flushed(watch: Watch) -> None:
    async with FakeOpenAIRealtime(ready_delay=0.2) as fake:
        session = await _open(fake)
        events = watch(session)
        frames = tone_burst()
        await send_frames(session, frames)
        assert not session.ready and session.queued_bytes == 160 * len(frames)
        await session.wait_ready()
        await events.wait("speech-stop")
        assert fake.last.audio_bytes == 160 * len(frames)
        assert session.queued_bytes == 0 and session.dropped_bytes == 0


# --------------------------------------------------------------------------- tools


async def test_tool_call_round_trip(watch: Watch) -> None:
    script = [FunctionCall("lookup_order", {"order_id": "A17"}, then=Speech("It shipped"))]
    async with FakeOpenAIRealtime(script) as fake:
        session = await _open(fake, RealtimeSetup("Help.", tools=[LOOKUP]))
        events = watch(session)
        await session.wait_ready()
        await send_frames(session, tone_burst())
        call = await events.wait("tool-call")
        assert call.name == "lookup_order" and call.call_id
        assert json.loads(call.arguments) == {"order_id": "A17"}
        await events.wait("response-done")       # the function-call response ends first
        await session.send_tool_result(call.call_id, '{"status": "shipped"}')
        await events.wait("transcript", role="assistant", final=True, text="It shipped")
        assert fake.tool_outputs == [{"call_id": call.call_id, "name": "lookup_order",
                                      "output": '{"status": "shipped"}'}]
        sent = [m["type"] for m in fake.last.messages]
        i = sent.index("conversation.item.create")
        assert sent[i + 1] == "response.create" and sent.count("response.create") == 1
        output = fake.last.messages[i]["item"]
        assert output == {"type": "function_call_output", "call_id": call.call_id,
                          "output": '{"status": "shipped"}'}
        assert not events.of("error")


async def test_tool_result_before_response_done_waits_for_it(watch: Watch) -> None:
    script = [FunctionCall("lookup_order", {"order_id": "B2"}, then=Speech("Got 42", ms=200))]
    async with FakeOpenAIRealtime(script, response_delay=0.0, pace_s=0.15) as fake:
        session = await _open(fake, RealtimeSetup("Help.", tools=[LOOKUP]))
        events = watch(session)
        await session.wait_ready()
        await send_frames(session, tone_burst())
        call = await events.wait("tool-call")
        assert not events.of("response-done")     # the fake holds response.done back
        assert call.call_id is not None
        await session.send_tool_result(call.call_id, "42")
        await events.wait("transcript", role="assistant", final=True, text="Got 42")
        assert not events.of("error")
        errors = [s for s in fake.last.sent if s.get("type") == "error"]
        assert errors == []                       # no conversation_already_has_active_response


# --------------------------------------------------------------------------- barge-in


async def test_barge_in_speech_start_and_truncate_with_played_ms(watch: Watch) -> None:
    async with FakeOpenAIRealtime([Speech("a long answer " * 5, ms=3000)], pace_s=0.03) as fake:
        session = await _open(fake)
        events = watch(session)
        await session.wait_ready()
        await send_frames(session, tone_burst())
        first = await events.wait("audio")
        assert first.item_id is not None
        await events.wait("audio", count=4)     # 400 ms received, more than will be "played"
        starts = len(events.of("speech-start"))
        await send_frames(session, tone_burst(silence_ms=0))    # the caller talks over it
        await events.wait("speech-start", count=starts + 1)
        done = await events.wait("response-done")
        assert done.text == "cancelled"
        assert fake.interruptions == 1
        await session.truncate(first.item_id, 240)
        await fake.wait_for(lambda: any(t.get("accepted") for t in fake.truncations))
        assert fake.truncations == [{"item_id": first.item_id, "content_index": 0,
                                     "audio_end_ms": 240, "accepted": True}]
        sent = next(m for m in fake.last.messages if m["type"] == "conversation.item.truncate")
        assert sent["audio_end_ms"] == 240 and sent["content_index"] == 0
        assert not events.of("error")


async def test_truncate_is_clamped_to_the_audio_received(watch: Watch) -> None:
    async with FakeOpenAIRealtime([Speech("short", ms=300)]) as fake:
        session = await _open(fake)
        events = watch(session)
        await session.wait_ready()
        await send_frames(session, tone_burst())
        await events.wait("response-done")
        item = fake.replies[-1]["item_id"]
        assert len(events.audio(item)) == 300 * 8
        await session.truncate(item, 99_999)    # more than exists: the server would refuse it
        await fake.wait_for(lambda: bool(fake.truncations))
        assert fake.truncations[0]["audio_end_ms"] == 300 and fake.truncations[0]["accepted"]
        await session.truncate(item, -5)
        await fake.wait_for(lambda: len(fake.truncations) == 2)
        assert fake.truncations[1]["audio_end_ms"] == 0
        assert not events.of("error")


# --------------------------------------------------------------------------- say / greeting


async def test_greeting_then_say_are_spoken_in_order(watch: Watch) -> None:
    async with FakeOpenAIRealtime(pace_s=0.01) as fake:
        session = await _open(fake, RealtimeSetup("Be brief.",
                                                  greeting="Thanks for calling Acme"))
        events = watch(session)
        await session.wait_ready()
        first = await events.wait("transcript", role="assistant", final=True)
        assert first.text == "Thanks for calling Acme"
        create = fake.responses_requested[0]
        instructions = create["response"]["instructions"]
        assert instructions.startswith("Be brief.") and "Thanks for calling Acme" in instructions
        await events.wait("response-done")
        await session.say("Your order shipped")
        await session.say("Anything else?")        # while the first is running: held back
        await events.wait("transcript", role="assistant", final=True, count=3)
        spoken = [e.text for e in events.of("transcript", role="assistant", final=True)]
        assert spoken == ["Thanks for calling Acme", "Your order shipped", "Anything else?"]
        assert not [s for s in fake.last.sent if s.get("type") == "error"]


# --------------------------------------------------------------------------- failures


async def test_wrong_key_is_a_provider_error_without_the_key(watch: Watch) -> None:
    async with FakeOpenAIRealtime() as fake:
        session = await openai.create({"apiKey": SECRET, "baseUrl": fake.base_url}).open(
            "call-1", RealtimeSetup("x"))
        events = watch(session)
        with pytest.raises(ProviderError) as info:
            await asyncio.wait_for(session.wait_ready(), 3)
        assert info.value.status_code == 401
        assert "invalid_api_key" in str(info.value)
        assert SECRET not in str(info.value) and SECRET[-6:] not in str(info.value)
        await events.closed()
        assert events.types() == ["error", "closed"]
        assert SECRET not in events.items[0].text


async def test_handshake_refusal_is_a_provider_error() -> None:
    async with FakeOpenAIRealtime(reject_status=503) as fake:
        session = await _open(fake)
        with pytest.raises(ProviderError) as info:
            await asyncio.wait_for(session.wait_ready(), 3)
        assert info.value.status_code == 503 and info.value.retryable
        await session.aclose()


async def test_abrupt_close_gives_error_then_one_closed(watch: Watch) -> None:
    async with FakeOpenAIRealtime(close_after_ms=200, close_code=None) as fake:
        session = await _open(fake)
        events = watch(session)
        await session.wait_ready()
        await send_frames(session, tone_burst())
        await events.closed()
        assert events.types()[-2:] == ["error", "closed"]
        assert events.types().count("closed") == 1
        assert "1006" in events.of("error")[0].text
        assert fake.last.aborted


async def test_session_expiry_is_reported(watch: Watch) -> None:
    async with FakeOpenAIRealtime(session_expiry_s=0.2) as fake:
        session = await _open(fake)
        events = watch(session)
        await session.wait_ready()
        await events.closed()
        error = events.of("error")
        assert len(error) == 1 and "session_expired" in error[0].text
        assert events.types()[-1] == "closed" and fake.expired == 1


async def test_recoverable_server_error_keeps_the_session(watch: Watch) -> None:
    async with FakeOpenAIRealtime(error_after_ms=100) as fake:
        session = await _open(fake)
        events = watch(session)
        await session.wait_ready()
        await send_frames(session, tone_burst())
        await events.wait("error")
        await events.wait("response-done")     # the conversation carried on
        assert "closed" not in events.types()
        assert "server_error" in events.of("error")[0].text


async def test_aclose_is_idempotent_and_late_audio_is_dropped(watch: Watch) -> None:
    async with FakeOpenAIRealtime() as fake:
        session = await _open(fake)
        events = watch(session)
        await session.wait_ready()
        await asyncio.gather(session.aclose(), session.aclose())
        await session.aclose()
        await events.closed()
        assert events.types() == ["ready", "closed"]
        await session.send_audio(b"\xff" * 160)        # no raise
        assert session.dropped_bytes == 160
        await fake.wait_for(lambda: fake.last.closed)
