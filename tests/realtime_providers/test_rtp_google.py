"""Gemini Live provider against its wire-protocol fake, over real sockets."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
from rtp_kit import SECRET, Events, dominant_hz, send_frames, tone_burst

from voicecall.config.secret import Secret
from voicecall.errors import ConfigError, ProviderError
from voicecall.speech.realtime import google
from voicecall.speech.realtime.base import RealtimeSetup, RealtimeTool
from voicecall.testing.fake_gemini_live import FakeGeminiLive, FunctionCall, Speech, sent_keys

Watch = Callable[[Any], Events]

LOOKUP = RealtimeTool("lookup_order", "Find an order",
                      {"type": "object", "properties": {
                          "order_id": {"type": "string", "description": "The order"},
                          "rush": {"type": ["boolean", "null"]},
                          "tags": {"type": "array", "items": {"type": "string"}}},
                       "required": ["order_id"], "additionalProperties": False})
END_CALL = RealtimeTool("end_call", "Hang up", {"type": "object", "properties": {}})


def _provider(fake: FakeGeminiLive, **cfg: Any) -> google.Provider:
    return google.create({"apiKey": Secret(fake.api_key), "endpoint": fake.url, **cfg})


async def _open(fake: FakeGeminiLive, setup: RealtimeSetup | None = None,
                **cfg: Any) -> google.GeminiLiveSession:
    return await _provider(fake, **cfg).open("call-1", setup or RealtimeSetup("Be brief."))


# --------------------------------------------------------------------------- config


def test_create_defaults_and_config_errors() -> None:
    p = google.create({"apiKey": Secret("g-key")})
    assert p.name == "google"
    assert p.model == "gemini-2.5-flash-native-audio-preview-12-2025" and p.voice == "Kore"
    assert p.model_name == "models/gemini-2.5-flash-native-audio-preview-12-2025"
    assert p.session_resumption and p.context_window_compression
    assert p.url == ("wss://generativelanguage.googleapis.com/ws/google.ai.generativelanguage."
                     "v1beta.GenerativeService.BidiGenerateContent")
    assert p.capabilities.resumption and not p.capabilities.truncation
    p = google.create({"apiKey": "k", "startSensitivity": "HIGH",
                       "endSensitivity": "END_SENSITIVITY_LOW",
                       "baseUrl": "http://127.0.0.1:9"})
    assert p.start_sensitivity == "START_SENSITIVITY_HIGH"
    assert p.end_sensitivity == "END_SENSITIVITY_LOW"
    assert p.url.startswith("ws://127.0.0.1:9/ws/google.ai.generativelanguage.v1beta.")
    with pytest.raises(ConfigError, match="startSensitivity"):
        google.create({"apiKey": "k", "startSensitivity": "medium"})
    with pytest.raises(ConfigError, match="silenceDurationMs"):
        google.create({"apiKey": "k", "silenceDurationMs": -1})
    with pytest.raises(ConfigError, match="realtime.providers.google.apiKey"):
        google.create({"apiKey": "  "})


def test_tool_schema_becomes_gemini_schema() -> None:
    decl = google.function_declaration(LOOKUP)
    assert decl == {"name": "lookup_order", "description": "Find an order", "parameters": {
        "type": "OBJECT", "required": ["order_id"], "properties": {
            "order_id": {"type": "STRING", "description": "The order"},
            "rush": {"type": "BOOLEAN", "nullable": True},
            "tags": {"type": "ARRAY", "items": {"type": "STRING"}}}}}
    assert google.function_declaration(END_CALL) == {"name": "end_call",
                                                     "description": "Hang up"}


# --------------------------------------------------------------------------- setup


async def test_setup_on_the_wire_with_defaults(watch: Watch) -> None:
    async with FakeGeminiLive() as fake:
        session = await _open(fake, RealtimeSetup("You answer the phone.",
                                                  tools=[LOOKUP, END_CALL]))
        events = watch(session)
        await asyncio.wait_for(session.wait_ready(), 3)
        await events.wait("ready")
        rec = fake.last
        assert rec.headers["x-goog-api-key"] == "***" and "key" not in rec.query
        setup = rec.messages[0]["setup"]
        assert setup["model"] == "models/gemini-2.5-flash-native-audio-preview-12-2025"
        assert setup["generationConfig"] == {"responseModalities": ["AUDIO"], "speechConfig": {
            "voiceConfig": {"prebuiltVoiceConfig": {"voiceName": "Kore"}}}}
        assert setup["systemInstruction"] == {"parts": [{"text": "You answer the phone."}]}
        assert setup["sessionResumption"] == {}
        assert setup["contextWindowCompression"] == {"slidingWindow": {}}
        assert setup["inputAudioTranscription"] == {} and setup["outputAudioTranscription"] == {}
        assert "realtimeInputConfig" not in setup      # server defaults unless configured
        decls = setup["tools"][0]["functionDeclarations"]
        assert [d["name"] for d in decls] == ["lookup_order", "end_call"]
        assert decls[0]["parameters"]["type"] == "OBJECT"
        assert len(rec.messages) == 1                  # nothing but setup so far
        assert sent_keys(rec)[:2] == ["setupComplete", "sessionResumptionUpdate"]
        assert session.handle == fake.issued_handles[0]


async def test_setup_vad_settings_voice_and_switches(watch: Watch) -> None:
    async with FakeGeminiLive() as fake:
        session = await _open(fake, RealtimeSetup("x", voice="Puck"), silenceDurationMs=800,
                              prefixPaddingMs=100, startSensitivity="high",
                              endSensitivity="low", sessionResumption=False,
                              contextWindowCompression=False, language="en-US",
                              model="gemini-3.1-flash-live-preview")
        watch(session)
        await session.wait_ready()
        setup = fake.last.messages[0]["setup"]
        assert setup["model"] == "models/gemini-3.1-flash-live-preview"
        assert setup["realtimeInputConfig"] == {"automaticActivityDetection": {
            "startOfSpeechSensitivity": "START_SENSITIVITY_HIGH",
            "endOfSpeechSensitivity": "END_SENSITIVITY_LOW",
            "prefixPaddingMs": 100, "silenceDurationMs": 800}}
        assert setup["generationConfig"]["speechConfig"] == {
            "voiceConfig": {"prebuiltVoiceConfig": {"voiceName": "Puck"}},
            "languageCode": "en-US"}
        assert "sessionResumption" not in setup and "contextWindowCompression" not in setup
        assert "sessionResumptionUpdate" not in sent_keys(fake.last)


async def test_nothing_is_sent_before_setup_complete(watch: Watch) -> None:
    async with FakeGeminiLive(ready_delay=0.3) as fake:
        session = await _open(fake)
        events = watch(session)
        frames = tone_burst()
        await send_frames(session, frames)
        await session.say("hello")
        await fake.wait_for(lambda: bool(fake.connections) and bool(fake.last.messages))
        await asyncio.sleep(0.1)
        assert not session.ready and session.queued_bytes == 160 * len(frames)
        assert [list(m) for m in fake.last.messages] == [["setup"]]
        assert fake.last.audio_bytes == 0
        await session.wait_ready()
        await events.wait("speech-stop")
        assert fake.client_turns and "hello" in fake.client_turns[0]
        assert fake.last.audio_ms > 900                  # flushed, resampled to 16 kHz
        assert fake.audio_rates == {16000}


# --------------------------------------------------------------------------- turns


async def test_caller_turn_gives_transcripts_and_resampled_audio(watch: Watch) -> None:
    async with FakeGeminiLive([Speech("Sure thing, one moment", ms=600, freq=500)],
                              transcripts=["where is my order"]) as fake:
        session = await _open(fake)
        events = watch(session)
        await session.wait_ready()
        await send_frames(session, tone_burst())
        done = await events.wait("response-done")
        assert done.text == "completed" and done.item_id
        kinds = events.types()
        assert kinds.index("speech-start") < kinds.index("speech-stop") < kinds.index("audio")
        chunks = events.of("transcript", role="user", final=False)
        assert "".join(e.text for e in chunks) == "where is my order"
        assert [e.text for e in events.of("transcript", role="user", final=True)] == \
            ["where is my order"]
        assert [e.text for e in events.of("transcript", role="assistant", final=True)] == \
            ["Sure thing, one moment"]
        audio = events.audio(done.item_id)
        # 600 ms of 24 kHz PCM comes out as 600 ms of 8 kHz mu-law (1 byte per sample).
        assert abs(len(audio) - 600 * 8) <= 8
        assert abs(dominant_hz(audio) - 500) < 20
        # The caller's 1100 ms reached the fake as 16 kHz PCM (minus the resampler's tail).
        assert 900 <= fake.last.audio_ms <= 1100
        assert fake.audio_rates == {16000}
        assert fake.last.audio_bytes == pytest.approx(fake.last.audio_ms * 32, abs=2)


async def test_voice_activity_messages_drive_speech_events(watch: Watch) -> None:
    async with FakeGeminiLive([Speech("ok", ms=200)], voice_activity=True) as fake:
        session = await _open(fake, inputTranscription=False)
        events = watch(session)
        await session.wait_ready()
        await send_frames(session, tone_burst())
        await events.wait("response-done")
        kinds = events.types()
        assert kinds.count("speech-start") == 1 and kinds.count("speech-stop") == 1
        assert kinds.index("speech-stop") < kinds.index("audio")
        assert not events.of("transcript", role="user")
        assert "inputAudioTranscription" not in fake.last.messages[0]["setup"]


async def test_binary_json_frames_are_understood(watch: Watch) -> None:
    async with FakeGeminiLive([Speech("binary", ms=200)], binary_frames=True) as fake:
        session = await _open(fake)
        events = watch(session)
        await session.wait_ready()
        await send_frames(session, tone_burst())
        await events.wait("response-done")
        assert abs(len(events.audio()) - 200 * 8) <= 8


# --------------------------------------------------------------------------- tools


async def test_tool_call_round_trip(watch: Watch) -> None:
    script = [FunctionCall("lookup_order", {"order_id": "A17"}, then=Speech("It shipped"))]
    async with FakeGeminiLive(script) as fake:
        session = await _open(fake, RealtimeSetup("Help.", tools=[LOOKUP]))
        events = watch(session)
        await session.wait_ready()
        await send_frames(session, tone_burst())
        call = await events.wait("tool-call")
        assert call.name == "lookup_order" and call.call_id
        assert json.loads(call.arguments) == {"order_id": "A17"}
        await session.send_tool_result(call.call_id, '{"status": "shipped"}')
        await events.wait("transcript", role="assistant", final=True, text="It shipped")
        assert fake.tool_outputs == [{"id": call.call_id, "name": "lookup_order",
                                      "response": {"output": {"status": "shipped"}},
                                      "known": True}]
        assert not events.of("error")


async def test_plain_text_tool_result_is_sent_as_a_string(watch: Watch) -> None:
    async with FakeGeminiLive([FunctionCall("end_call")]) as fake:
        session = await _open(fake, RealtimeSetup("Help.", tools=[END_CALL]))
        events = watch(session)
        await session.wait_ready()
        await send_frames(session, tone_burst())
        call = await events.wait("tool-call")
        assert call.arguments == "{}" and call.call_id
        await session.send_tool_result(call.call_id, "hanging up now")
        await events.wait("transcript", role="assistant", final=True,
                          text="Result: hanging up now")
        assert fake.tool_outputs[0]["response"] == {"output": "hanging up now"}


async def test_tool_result_for_a_cancelled_call_is_dropped(watch: Watch) -> None:
    script = [FunctionCall("lookup_order", {"order_id": "A17"})]
    async with FakeGeminiLive(script) as fake:
        session = await _open(fake, RealtimeSetup("Help.", tools=[LOOKUP]))
        events = watch(session)
        await session.wait_ready()
        await send_frames(session, tone_burst())
        call = await events.wait("tool-call")
        assert call.call_id
        # The caller speaks again before the result: the server cancels the pending call.
        await send_frames(session, tone_burst(silence_ms=0))
        await events.wait("interrupted")
        await fake.wait_for(lambda: "toolCallCancellation" in sent_keys(fake.last))
        cancel = next(m for m in fake.last.sent if "toolCallCancellation" in m)
        assert cancel["toolCallCancellation"]["ids"] == [call.call_id]
        await asyncio.sleep(0.05)
        await session.send_tool_result(call.call_id, "late")
        await asyncio.sleep(0.1)
        assert fake.tool_outputs == []
        assert not [m for m in fake.last.messages if "toolResponse" in m]


# --------------------------------------------------------------------------- barge-in


async def test_barge_in_surfaces_interrupted(watch: Watch) -> None:
    async with FakeGeminiLive([Speech("a long answer " * 5, ms=3000)], pace_s=0.03) as fake:
        session = await _open(fake)
        events = watch(session)
        await session.wait_ready()
        await send_frames(session, tone_burst())
        first = await events.wait("audio")
        await send_frames(session, tone_burst(silence_ms=0))
        interrupted = await events.wait("interrupted")
        assert interrupted.item_id == first.item_id
        done = await events.wait("response-done")
        assert done.text == "interrupted" and done.item_id == first.item_id
        assert fake.interruptions == 1
        await asyncio.sleep(0.15)
        i = events.items.index(interrupted)
        assert not [e for e in events.items[i:] if e.type == "audio"
                    and e.item_id == first.item_id]
        assert len(events.audio(first.item_id)) < 3000 * 8
        before = len(fake.last.messages)
        await session.truncate(str(first.item_id), 200)    # a no-op for Gemini
        await asyncio.sleep(0.05)
        assert len(fake.last.messages) == before


# --------------------------------------------------------------------------- say / greeting


async def test_greeting_and_say_go_as_client_content(watch: Watch) -> None:
    async with FakeGeminiLive() as fake:
        session = await _open(fake, RealtimeSetup("Be brief.",
                                                  greeting="Thanks for calling Acme"))
        events = watch(session)
        await session.wait_ready()
        first = await events.wait("transcript", role="assistant", final=True)
        assert first.text == "Thanks for calling Acme"
        turn = next(m for m in fake.last.messages if "clientContent" in m)["clientContent"]
        assert turn["turnComplete"] is True and turn["turns"][0]["role"] == "user"
        assert "Thanks for calling Acme" in turn["turns"][0]["parts"][0]["text"]
        await events.wait("response-done")
        assert abs(len(events.audio(first.item_id)) - 400 * 8) <= 8
        await session.say("Your order shipped")
        second = await events.wait("transcript", role="assistant", final=True, count=2)
        assert second.text == "Your order shipped"


# --------------------------------------------------------------------------- resumption


async def test_go_away_resumes_on_a_new_connection_with_the_last_handle(watch: Watch) -> None:
    async with FakeGeminiLive([Speech("first", ms=200), Speech("second", ms=300)],
                              transcripts=["one", "two"]) as fake:
        session = await _open(fake)
        events = watch(session)
        await session.wait_ready()
        await send_frames(session, tone_burst())
        await events.wait("response-done")
        await fake.wait_for(lambda: session.handle == fake.issued_handles[-1])
        handle = session.handle
        fake.connect_delay = 0.3                    # the new connection takes a while
        fake.send_go_away()
        await fake.wait_for(lambda: not session.live)
        await send_frames(session, tone_burst())    # said while reconnecting: queued
        assert session.queued_bytes > 0
        await fake.wait_for(lambda: session.resumptions == 1, timeout=3)
        assert fake.resumed_handles == [handle]
        resumed = fake.connections[1].messages[0]["setup"]
        assert resumed["sessionResumption"] == {"handle": handle}
        assert session.resumed_with == [handle]
        done = await events.wait("response-done", count=2)
        assert done.text == "completed"
        assert [e.text for e in events.of("transcript", role="assistant", final=True)] == \
            ["first", "second"]
        assert [e.text for e in events.of("transcript", role="user", final=True)] == \
            ["one", "two"]
        assert fake.connections[1].audio_ms > 900      # the queued audio went to the new one
        assert events.types().count("ready") == 1
        assert not events.of("error") and "closed" not in events.types()
        assert fake.connections[0].closed


@pytest.mark.parametrize("code", [1011, None], ids=["close-1011", "dropped"])
async def test_unexpected_close_with_a_handle_resumes(watch: Watch, code: int | None) -> None:
    async with FakeGeminiLive([Speech("first", ms=200), Speech("after", ms=200)]) as fake:
        session = await _open(fake)
        events = watch(session)
        await session.wait_ready()
        await send_frames(session, tone_burst())
        await events.wait("response-done")
        await fake.wait_for(lambda: session.handle == fake.issued_handles[-1])
        handle = session.handle
        fake.close_live(code)
        await fake.wait_for(lambda: session.resumptions == 1, timeout=3)
        assert fake.resumed_handles == [handle]
        await send_frames(session, tone_burst())
        await events.wait("response-done", count=2)
        assert not events.of("error")


async def test_tool_call_survives_a_resumption(watch: Watch) -> None:
    script = [FunctionCall("lookup_order", {"order_id": "A17"}, then=Speech("Found it"))]
    async with FakeGeminiLive(script) as fake:
        session = await _open(fake, RealtimeSetup("Help.", tools=[LOOKUP]))
        events = watch(session)
        await session.wait_ready()
        await send_frames(session, tone_burst())
        call = await events.wait("tool-call")
        assert call.call_id
        fake.connect_delay = 0.2
        fake.send_go_away()
        await fake.wait_for(lambda: len(fake.connections) == 2)
        await session.send_tool_result(call.call_id, '{"found": true}')   # queued
        await events.wait("transcript", role="assistant", final=True, text="Found it")
        assert fake.tool_outputs[0]["known"] and session.resumptions == 1
        assert any("toolResponse" in m for m in fake.connections[1].messages)


async def test_failed_resumption_ends_with_error_then_closed(watch: Watch) -> None:
    async with FakeGeminiLive() as fake:
        session = await _open(fake)
        events = watch(session)
        await session.wait_ready()
        fake.handles.clear()                         # the server forgot the session
        fake.send_go_away()
        await events.closed()
        assert events.types() == ["ready", "error", "closed"]
        assert "1007" in events.items[1].text and "resuming" in events.items[1].text


# --------------------------------------------------------------------------- failures


@pytest.mark.parametrize(("code", "reason", "retryable"), [
    (1007, "Request contains an invalid argument.", False),
    (1008, "Requested entity was not found", False),
    (1011, "Internal error occurred.", True),
])
async def test_setup_close_codes_become_provider_errors(watch: Watch, code: int, reason: str,
                                                        retryable: bool) -> None:
    async with FakeGeminiLive(fail_setup=(code, reason)) as fake:
        session = await _open(fake)
        events = watch(session)
        with pytest.raises(ProviderError) as info:
            await asyncio.wait_for(session.wait_ready(), 3)
        assert f"code {code}: {reason}" in str(info.value)
        assert info.value.retryable is retryable
        await events.closed()
        assert events.types() == ["error", "closed"]


async def test_unknown_model_is_refused_with_1008(watch: Watch) -> None:
    async with FakeGeminiLive() as fake:
        session = await _open(fake, model="gemini-nope")
        watch(session)
        with pytest.raises(ProviderError, match="1008: models/gemini-nope is not found"):
            await asyncio.wait_for(session.wait_ready(), 3)


async def test_wrong_key_is_a_provider_error_without_the_key(watch: Watch) -> None:
    async with FakeGeminiLive() as fake:
        session = await google.create({"apiKey": SECRET, "endpoint": fake.url}).open(
            "call-1", RealtimeSetup("x"))
        events = watch(session)
        with pytest.raises(ProviderError) as info:
            await asyncio.wait_for(session.wait_ready(), 3)
        assert info.value.status_code == 401 and "API key not valid" in str(info.value)
        assert SECRET not in str(info.value)
        await events.closed()
        assert events.types() == ["error", "closed"]
        assert SECRET not in events.items[0].text


@pytest.mark.parametrize("code", [1011, None], ids=["close-1011", "dropped"])
async def test_close_without_resumption_gives_error_then_one_closed(watch: Watch,
                                                                    code: int | None) -> None:
    async with FakeGeminiLive() as fake:
        session = await _open(fake, sessionResumption=False)
        events = watch(session)
        await session.wait_ready()
        fake.close_live(code, "Deadline expired before operation could complete.")
        await events.closed()
        assert events.types() == ["ready", "error", "closed"]
        expected = "code 1011: Deadline expired" if code else "connection lost (code 1006)"
        assert expected in events.items[1].text
        assert len(fake.connections) == 1


async def test_resume_attempts_are_bounded(watch: Watch) -> None:
    async with FakeGeminiLive() as fake:
        provider = _provider(fake)
        provider.max_resume_attempts = 2
        session = await provider.open("call-1", RealtimeSetup("x"))
        events = watch(session)
        await session.wait_ready()
        for n in range(1, 4):
            def up(n: int = n) -> bool:
                return len(fake.connections) == n and session.live
            await fake.wait_for(up)
            fake.close_live(None)       # dropped again before the model said anything
        await events.closed()
        assert events.types()[-2:] == ["error", "closed"]
        assert len(fake.connections) == 3 and session.resumptions == 2


async def test_aclose_is_idempotent(watch: Watch) -> None:
    async with FakeGeminiLive() as fake:
        session = await _open(fake)
        events = watch(session)
        await session.wait_ready()
        await asyncio.gather(session.aclose(), session.aclose())
        await session.aclose()
        await events.closed()
        assert events.types() == ["ready", "closed"]
        await session.send_audio(b"\xff" * 160)
        assert session.dropped_bytes == 160
        assert len(fake.connections) == 1
