"""The ElevenLabs STT and Mistral fakes are strict: raw clients that break the protocol."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from voicecall.testing.fake_elevenlabs_stt import FakeElevenLabsSTT
from voicecall.testing.fake_mistral import FakeMistral, _alaw_to_pcm16

XI = "xi-fake-key"
MI = "mi-fake-key"
EL_QUERY = "model_id=scribe_v2_realtime&audio_format=ulaw_8000&commit_strategy=vad"
SILENCE = base64.b64encode(b"\xff" * 160).decode()


async def _recv(ws: ClientConnection, timeout: float = 2.0) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout))
    return data


async def _closed_code(ws: ClientConnection) -> int | None:
    with pytest.raises(ConnectionClosed):
        while True:
            await asyncio.wait_for(ws.recv(), 2)
    return ws.close_code


def _chunk(**over: Any) -> str:
    msg = {"message_type": "input_audio_chunk", "audio_base_64": SILENCE, "commit": False,
           "sample_rate": 8000}
    msg.update(over)
    return json.dumps({k: v for k, v in msg.items() if v is not ...})


# ---------------------------------------------------------------------------- ElevenLabs

async def test_elevenlabs_fake_serves_only_its_path() -> None:
    async with FakeElevenLabsSTT(api_key=XI) as fake:
        with pytest.raises(InvalidStatus) as info:
            await connect(fake.url + "/v1/speech-to-text/stream?" + EL_QUERY,
                          additional_headers={"xi-api-key": XI})
        assert info.value.response.status_code == 404


@pytest.mark.parametrize("query, error", [
    ("audio_format=ulaw_8000", "model_id is required"),
    (EL_QUERY + "&vad_threshold=0.95", "vad_threshold must be between"),
    (EL_QUERY + "&vad_silence_threshold_secs=0.1", "vad_silence_threshold_secs must be"),
    (EL_QUERY + "&sample_rate=8000", "Unknown query parameter: sample_rate"),
    ("model_id=scribe_v2_realtime&audio_format=mulaw", "Invalid audio_format"),
    (EL_QUERY + "&include_timestamps=maybe", "Invalid boolean"),
])
async def test_elevenlabs_fake_rejects_bad_queries(query: str, error: str) -> None:
    async with FakeElevenLabsSTT(api_key=XI) as fake:
        async with connect(f"{fake.endpoint}?{query}",
                           additional_headers={"xi-api-key": XI}) as ws:
            msg = await _recv(ws)
            assert msg["message_type"] == "invalid_request"
            assert error in msg["error"]
            assert await _closed_code(ws) == 1008


@pytest.mark.parametrize("bad, error", [
    (_chunk(sample_rate=16000), "does not match audio_format"),
    (_chunk(sample_rate=...), "sample_rate must be an integer"),
    (_chunk(commit=...), "commit must be a boolean"),
    (_chunk(audio_base_64="not base64!"), "not valid base64"),
    (_chunk(extra=1), "Unknown field(s): extra"),
    (json.dumps({"message_type": "commit"}), "Unknown message_type"),
    ("[1, 2]", "must be a JSON object"),
])
async def test_elevenlabs_fake_rejects_bad_chunks(bad: str, error: str) -> None:
    async with FakeElevenLabsSTT(api_key=XI) as fake:
        async with connect(f"{fake.endpoint}?{EL_QUERY}",
                           additional_headers={"xi-api-key": XI}) as ws:
            assert (await _recv(ws))["message_type"] == "session_started"
            await ws.send(_chunk())
            await ws.send(bad)
            msg = await _recv(ws)
            assert msg["message_type"] == "input_error" and error in msg["error"]
            assert await _closed_code(ws) == 1008
        assert fake.connections[0].protocol_errors


async def test_elevenlabs_fake_previous_text_only_in_the_first_chunk() -> None:
    async with FakeElevenLabsSTT(api_key=XI) as fake:
        async with connect(f"{fake.endpoint}?{EL_QUERY}",
                           additional_headers={"xi-api-key": XI}) as ws:
            await _recv(ws)
            await ws.send(_chunk(previous_text="Earlier we talked about shoes."))
            await ws.send(_chunk(previous_text=None))
            await ws.send(_chunk(previous_text="again"))
            msg = await _recv(ws)
            assert msg == {"message_type": "input_error",
                           "error": "previous_text is only allowed in the first chunk"}
        assert len(fake.connections[0].chunks()) == 3


async def test_elevenlabs_fake_rejects_binary_audio_and_accepts_a_token() -> None:
    async with FakeElevenLabsSTT(api_key=XI, tokens=["sutkn_1"]) as fake:
        async with connect(f"{fake.endpoint}?{EL_QUERY}&token=sutkn_1") as ws:
            assert (await _recv(ws))["message_type"] == "session_started"
            await ws.send(b"\xff" * 160)
            msg = await _recv(ws)
            assert msg["message_type"] == "input_error" and "Binary" in msg["error"]


# ---------------------------------------------------------------------------- Mistral

def _mi_url(fake: FakeMistral, model: str = "voxtral-mini-transcribe-realtime-2602") -> str:
    return f"{fake.endpoint}?model={model}"


_MI_HEADERS = {"Authorization": f"Bearer {MI}"}
_UPDATE = {"type": "session.update",
           "session": {"audio_format": {"encoding": "pcm_mulaw", "sample_rate": 8000}}}


async def test_mistral_fake_freezes_the_session_once_audio_started() -> None:
    async with FakeMistral(["hi there"], api_key=MI) as fake:
        async with connect(_mi_url(fake), additional_headers=_MI_HEADERS) as ws:
            created = await _recv(ws)
            assert created["type"] == "session.created"
            assert created["session"]["audio_format"] == {"encoding": "pcm_s16le",
                                                          "sample_rate": 16000}
            await ws.send(json.dumps(_UPDATE))
            assert (await _recv(ws))["session"]["audio_format"]["encoding"] == "pcm_mulaw"
            await ws.send(json.dumps({"type": "input_audio.append", "audio": SILENCE}))
            await ws.send(json.dumps({**_UPDATE, "session": {"target_streaming_delay_ms": 960}}))
            err = await _recv(ws)
            assert err == {"type": "error", "error": {
                "message": "Session fields cannot be changed after audio has started",
                "code": 400}}
            await ws.send(json.dumps({"type": "input_audio.flush"}))   # the stream goes on
            done = await _recv(ws)
            assert done["type"] == "transcription.done" and done["text"] == ""
        assert fake.connections[0].session["target_streaming_delay_ms"] is None


@pytest.mark.parametrize("message, error", [
    ({"type": "input_audio.commit"}, "Unknown message type"),
    ({"type": "input_audio.append"}, "needs 'audio'"),
    ({"type": "input_audio.append", "audio": SILENCE, "rate": 8000}, "Unknown field(s)"),
    ({"type": "input_audio.append", "audio": base64.b64encode(b"\0" * 262_145).decode()},
     "exceeds 262144 bytes"),
    ({"type": "session.update", "session": {"audio_format": {"encoding": "opus",
                                                             "sample_rate": 8000}}},
     "Unsupported encoding"),
    ({"type": "session.update", "session": {"audio_format": {"encoding": "pcm_s16le",
                                                             "sample_rate": 24000}}},
     "Unsupported sample_rate"),
    ({"type": "session.update", "session": {"target_streaming_delay_ms": 5}},
     "target_streaming_delay_ms"),
    ({"type": "session.update", "session": {"language": "en"}}, "Unknown session field"),
])
async def test_mistral_fake_rejects_bad_messages(message: dict[str, Any], error: str) -> None:
    async with FakeMistral(api_key=MI) as fake:
        async with connect(_mi_url(fake), additional_headers=_MI_HEADERS,
                           max_size=None) as ws:
            await _recv(ws)
            await ws.send(json.dumps(message))
            msg = await _recv(ws)
            assert msg["type"] == "error" and error in msg["error"]["message"]
            assert await _closed_code(ws) == 1008


async def test_mistral_fake_wants_whole_samples_of_the_negotiated_encoding() -> None:
    async with FakeMistral(api_key=MI) as fake:
        async with connect(_mi_url(fake), additional_headers=_MI_HEADERS) as ws:
            await _recv(ws)                                # default: pcm_s16le
            odd = base64.b64encode(b"\0" * 161).decode()
            await ws.send(json.dumps({"type": "input_audio.append", "audio": odd}))
            msg = await _recv(ws)
            assert "whole number of samples" in msg["error"]["message"]


async def test_mistral_fake_checks_the_model_and_path() -> None:
    async with FakeMistral(api_key=MI) as fake:
        async with connect(_mi_url(fake, "voxtral-mini-2507"),
                           additional_headers=_MI_HEADERS) as ws:
            msg = await _recv(ws)
            assert msg["error"]["message"] == "Invalid model: voxtral-mini-2507"
            assert await _closed_code(ws) == 1008
        with pytest.raises(InvalidStatus) as info:
            await connect(fake.url + "/v1/audio/transcriptions?model=x",
                          additional_headers=_MI_HEADERS)
        assert info.value.response.status_code == 404


def test_mistral_fake_alaw_decoder_matches_g711() -> None:
    # 0xD5/0x55 are the smallest magnitudes (+-8), 0xAA/0x2A the largest (+-32256).
    assert _alaw_to_pcm16(bytes([0xD5, 0x55, 0xAA, 0x2A])).tolist() == [8, -8, 32256, -32256]
