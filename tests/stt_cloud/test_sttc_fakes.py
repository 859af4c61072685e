"""The fakes themselves, driven by a bare WebSocket client: strict like the vendors."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import numpy as np
import pytest
from sttc_kit import TIMEOUT, tone_burst
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from voicecall.audio.g711 import mulaw_to_pcm16
from voicecall.testing.fake_stt import (
    FakeDeepgram,
    FakeOpenAITranscription,
    FakeXai,
    Segmenter,
    decode_audio,
)


async def recv_json(ws: ClientConnection) -> dict[str, Any]:
    data = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
    assert isinstance(data, dict)
    return data


async def recv_until(ws: ClientConnection, kind: str) -> list[dict[str, Any]]:
    out = []
    while True:
        out.append(await recv_json(ws))
        if out[-1]["type"] == kind:
            return out


async def refused(url: str, headers: dict[str, str]) -> InvalidStatus:
    with pytest.raises(InvalidStatus) as info:
        async with connect(url, additional_headers=headers, open_timeout=TIMEOUT):
            pass
    return info.value


def body(exc: InvalidStatus) -> dict[str, Any]:
    data = json.loads(exc.response.body)
    assert isinstance(data, dict)
    return data


# --------------------------------------------------------------------------- openai

OPENAI_SESSION = {"type": "transcription", "audio": {"input": {
    "format": {"type": "audio/pcmu"}, "transcription": {"model": "gpt-4o-transcribe"},
    "turn_detection": {"type": "server_vad", "silence_duration_ms": 500}}}}


async def openai_ws(fake: FakeOpenAITranscription, **headers: str) -> ClientConnection:
    h = {"Authorization": f"Bearer {fake.api_key}", **headers}
    return await connect(f"{fake.url}?intent=transcription", additional_headers=h)


async def test_openai_auth_and_beta_header() -> None:
    async with FakeOpenAITranscription() as fake:
        exc = await refused(f"{fake.url}?intent=transcription", {})
        assert exc.response.status_code == 401
        assert body(exc)["error"]["type"] == "invalid_request_error"

        async with await connect(f"{fake.url}?intent=transcription",
                                 additional_headers={"Authorization": "Bearer sk-wrongkey99"}) as ws:
            err = await recv_json(ws)
            assert err["error"]["code"] == "invalid_api_key"
            assert "sk***99" in err["error"]["message"]
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), TIMEOUT)
            assert closed.value.rcvd is not None
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (
                3000, "invalid_request_error.invalid_api_key")

        async with await openai_ws(fake, **{"OpenAI-Beta": "realtime=v1"}) as ws:
            err = await recv_json(ws)
            assert err["error"]["code"] == "beta_api_shape_disabled"
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), TIMEOUT)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4000


@pytest.mark.parametrize(("session", "code", "param"), [
    ({"audio": {}}, "missing_required_parameter", "session.type"),
    ({"type": "realtime"}, "invalid_value", "session.type"),
    ({"type": "transcription", "instructions": "x"}, "unknown_parameter",
     "session.instructions"),
    ({"type": "transcription", "audio": {"output": {}}}, "unknown_parameter",
     "session.audio.output"),
    ({"type": "transcription", "audio": {"input": {"format": {"type": "g711_ulaw"}}}},
     "invalid_value", "session.audio.input.format.type"),
    ({"type": "transcription", "audio": {"input": {"format": {"type": "audio/pcm",
                                                              "rate": 16000}}}},
     "invalid_value", "session.audio.input.format.rate"),
    ({"type": "transcription", "audio": {"input": {"turn_detection": {
        "type": "server_vad", "create_response": True}}}},
     "unknown_parameter", "session.audio.input.turn_detection.create_response"),
    ({"type": "transcription", "audio": {"input": {"turn_detection": {
        "type": "server_vad", "threshold": "0.5"}}}},
     "invalid_type", "session.audio.input.turn_detection.threshold"),
    ({"type": "transcription", "audio": {"input": {"turn_detection": {
        "type": "server_vad", "threshold": 1.5}}}},
     "invalid_value", "session.audio.input.turn_detection.threshold"),
    ({"type": "transcription", "audio": {"input": {
        "transcription": {"model": "gpt-live-transcribe"},
        "turn_detection": {"type": "server_vad"}}}},
     "invalid_value", "session.audio.input.turn_detection"),
])
async def test_openai_session_update_is_validated(session: dict[str, Any], code: str,
                                                  param: str) -> None:
    async with FakeOpenAITranscription() as fake, await openai_ws(fake) as ws:
        assert (await recv_json(ws))["type"] == "session.created"
        await ws.send(json.dumps({"type": "session.update", "event_id": "evt_client_1",
                                  "session": session}))
        err = await recv_json(ws)
        assert err["type"] == "error"
        assert (err["error"]["code"], err["error"]["param"]) == (code, param)
        assert err["error"]["event_id"] == "evt_client_1"
        assert fake.last.config["audio"]["input"]["format"]["type"] == "audio/pcm"  # unchanged


async def test_openai_legacy_and_unknown_events_are_errors() -> None:
    async with FakeOpenAITranscription() as fake, await openai_ws(fake) as ws:
        await recv_json(ws)
        await ws.send(json.dumps({"type": "transcription_session.update", "session": {}}))
        err = await recv_json(ws)
        assert err["error"]["code"] == "invalid_value" and err["error"]["param"] == "type"
        await ws.send(json.dumps({"type": "response.create"}))
        assert (await recv_json(ws))["type"] == "error"


async def test_openai_manual_commit_without_vad_and_whisper_single_delta() -> None:
    async with FakeOpenAITranscription(["good morning"]) as fake, await openai_ws(fake) as ws:
        await recv_json(ws)
        await ws.send(json.dumps({"type": "session.update", "session": {
            "type": "transcription", "audio": {"input": {
                "format": {"type": "audio/pcmu"}, "transcription": {"model": "whisper-1"},
                "turn_detection": None}}}}))
        assert (await recv_json(ws))["type"] == "session.updated"
        await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        err = await recv_json(ws)
        assert err["error"]["code"] == "input_audio_buffer_commit_empty"
        audio = tone_burst(300, 200)
        await ws.send(json.dumps({"type": "input_audio_buffer.append",
                                  "audio": base64.b64encode(audio).decode()}))
        await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        events = await recv_until(ws, "conversation.item.input_audio_transcription.completed")
        kinds = [e["type"] for e in events]
        assert "input_audio_buffer.speech_started" not in kinds          # no VAD
        assert kinds == ["input_audio_buffer.committed",
                         "conversation.item.input_audio_transcription.delta",
                         "conversation.item.input_audio_transcription.completed"]
        assert events[1]["delta"] == "good morning" == events[2]["transcript"]
        assert events[2]["usage"]["type"] == "tokens"
        assert fake.last.audio_bytes == len(audio)


async def test_openai_default_format_is_pcm24k() -> None:
    """Before any session.update: 24 kHz PCM16 in, server VAD 500 ms, transcription off."""
    async with FakeOpenAITranscription(["x"]) as fake, await openai_ws(fake) as ws:
        await recv_json(ws)
        pcm = mulaw_to_pcm16(tone_burst(300, 600))
        pcm24 = np.repeat(pcm, 3).astype("<i2").tobytes()
        await ws.send(json.dumps({"type": "input_audio_buffer.append",
                                  "audio": base64.b64encode(pcm24).decode()}))
        events = await recv_until(ws, "input_audio_buffer.committed")
        assert [e["type"] for e in events] == ["input_audio_buffer.speech_started",
                                               "input_audio_buffer.speech_stopped",
                                               "input_audio_buffer.committed"]
        assert fake.last.audio_ms == pytest.approx(900, abs=1)


# --------------------------------------------------------------------------- deepgram

DG_QUERY = "encoding=mulaw&sample_rate=8000&interim_results=true&vad_events=true"


@pytest.mark.parametrize(("query", "fragment"), [
    ("encoding=mulaw&sample_rate=8000&bogus=1", "Unknown query parameter 'bogus'"),
    ("encoding=mulaw", "requires 'sample_rate'"),
    ("encoding=mp3&sample_rate=8000", "Invalid encoding"),
    ("encoding=mulaw&sample_rate=8000&interim_results=yes", "expected true or false"),
    ("encoding=mulaw&sample_rate=8000&utterance_end_ms=1000", "requires 'interim_results=true'"),
    ("encoding=mulaw&sample_rate=8000&endpointing=soon", "endpointing"),
])
async def test_deepgram_query_is_validated(query: str, fragment: str) -> None:
    async with FakeDeepgram() as fake:
        exc = await refused(f"{fake.url}?{query}", {"Authorization": f"Token {fake.api_key}"})
        assert exc.response.status_code == 400
        assert fragment in body(exc)["err_msg"]
        assert exc.response.headers["dg-error"] == body(exc)["err_msg"]


async def test_deepgram_auth() -> None:
    async with FakeDeepgram(access_tokens=["jwt-1"]) as fake:
        for headers in ({}, {"Authorization": f"Bearer {fake.api_key}"},
                        {"Authorization": "Token nope"}):
            exc = await refused(f"{fake.url}?{DG_QUERY}", headers)
            assert exc.response.status_code == 401
            assert body(exc)["err_code"] == "INVALID_AUTH"
        async with connect(f"{fake.url}?{DG_QUERY}",
                           additional_headers={"Authorization": "Bearer jwt-1"}):
            pass


async def test_deepgram_controls() -> None:
    async with FakeDeepgram(["hold on"]) as fake, \
            connect(f"{fake.url}?{DG_QUERY}&endpointing=500",
                    additional_headers={"Authorization": f"Token {fake.api_key}"}) as ws:
        await ws.send(json.dumps({"type": "KeepAlive"}))
        await ws.send(tone_burst(300, 100))                # still speaking (no endpoint yet)
        await ws.send(json.dumps({"type": "Finalize"}))
        events = await recv_until(ws, "Results")
        assert events[0]["type"] == "SpeechStarted"
        while not events[-1]["is_final"]:
            events.append(await recv_json(ws))
        assert events[-1]["from_finalize"] is True
        assert events[-1]["channel"]["alternatives"][0]["transcript"] == "hold on"
        await ws.send(tone_burst(0, 1100))                  # a second of silence
        empty = await recv_json(ws)
        assert empty["type"] == "Results" and empty["channel"]["alternatives"][0][
            "transcript"] == ""
        await ws.send(json.dumps({"type": "Bogus"}))
        err = await recv_json(ws)
        assert err["type"] == "Error"
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), TIMEOUT)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
        assert fake.last.keepalives == 1


async def test_deepgram_empty_binary_frame_is_close_stream() -> None:
    async with FakeDeepgram() as fake, \
            connect(f"{fake.url}?{DG_QUERY}",
                    additional_headers={"Authorization": f"Token {fake.api_key}"}) as ws:
        await ws.send(b"")
        assert (await recv_json(ws))["type"] == "Metadata"
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), TIMEOUT)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000


# --------------------------------------------------------------------------- xai


@pytest.mark.parametrize(("query", "fragment"), [
    ("encoding=mulaw", "sample_rate"),
    ("sample_rate=11025", "Unsupported sample_rate"),
    ("sample_rate=8000&encoding=opus", "Unsupported encoding"),
    ("sample_rate=8000&model=grok", "Unknown query parameter: model"),
    ("sample_rate=8000&endpointing=9000", "between 0 and 5000"),
])
async def test_xai_query_is_validated(query: str, fragment: str) -> None:
    async with FakeXai() as fake:
        exc = await refused(f"{fake.url}?{query}", {"Authorization": f"Bearer {fake.api_key}"})
        assert exc.response.status_code == 400
        assert fragment in body(exc)["error"]


async def test_xai_auth() -> None:
    async with FakeXai() as fake:
        exc = await refused(f"{fake.url}?sample_rate=8000", {})
        assert exc.response.status_code == 401
        exc = await refused(f"{fake.url}?sample_rate=8000", {"Authorization": "Bearer xai-bad-k"})
        assert exc.response.status_code == 400
        assert body(exc)["error"].startswith("Incorrect API key provided: xa***-k.")


async def test_xai_default_endpointing_is_very_short_and_audio_done_closes() -> None:
    async with FakeXai(["a b"], ready_delay=0.1) as fake, \
            connect(f"{fake.url}?sample_rate=8000&encoding=mulaw",
                    additional_headers={"Authorization": f"Bearer {fake.api_key}"}) as ws:
        await ws.send(b"\xff" * 160)                        # before transcript.created: ignored
        assert (await recv_json(ws))["type"] == "transcript.created"
        await ws.send(tone_burst(300, 40))
        final = await recv_json(ws)                         # no interim: not asked for
        assert (final["is_final"], final["speech_final"], final["text"]) == (True, True, "a b")
        await ws.send(json.dumps({"type": "nope"}))
        assert (await recv_json(ws))["type"] == "error"
        await ws.send(json.dumps({"type": "audio.done"}))
        done = await recv_json(ws)
        assert done == {"type": "transcript.done", "text": "a b", "duration": 0.34}
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), TIMEOUT)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000
        assert fake.last.early_audio_bytes == 160


# --------------------------------------------------------------------------- shared parts


def test_segmenter_events_for_a_tone_burst() -> None:
    seg = Segmenter(8000, threshold=0.02, end_silence_ms=800, gap_ms=1000, word_ms=100)
    events = seg.feed(mulaw_to_pcm16(tone_burst(300, 1000)))
    assert [(e.kind, round(e.at_ms)) for e in events] == [
        ("start", 0), ("word", 100), ("word", 200), ("word", 300), ("end", 300), ("gap", 300)]
    assert seg.state == "idle" and seg.t_ms == pytest.approx(1300)


def test_segmenter_ignores_clicks_and_flushes() -> None:
    seg = Segmenter(16000, threshold=0.02, end_silence_ms=500, min_speech_ms=40)
    click = np.full(160, 8000, dtype=np.int16)              # 10 ms loud
    assert seg.feed(np.concatenate([click, np.zeros(3200, np.int16)])) == []
    assert [e.kind for e in seg.feed(np.full(1600, 8000, np.int16))] == ["start", "word"]
    assert [e.kind for e in seg.flush()] == ["end"] and seg.flush() == []


def test_decode_audio_encodings() -> None:
    assert decode_audio("mulaw", b"\xff\x7f").tolist() == [0, 0]
    assert decode_audio("alaw", b"\xd5\x55").tolist() == [8, -8]      # A-law "zero"
    assert decode_audio("pcm16", b"\x01\x00\xff\xff\x00").tolist() == [1, -1]
    with pytest.raises(ValueError):
        decode_audio("opus", b"")
