"""The realtime fakes themselves, driven by a raw WebSocket client: vendor-shaped refusals."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from voicecall.testing.fake_gemini_live import FakeGeminiLive
from voicecall.testing.fake_openai_realtime import FakeOpenAIRealtime, last_quoted

TIMEOUT = 3.0
GOOD_MODEL = "models/gemini-2.5-flash-native-audio-preview-12-2025"


async def _recv(ws: ClientConnection, until: str, timeout: float = TIMEOUT) -> dict[str, Any]:
    """The next server event of type ``until`` (OpenAI), skipping others."""
    async def run() -> dict[str, Any]:
        while True:
            data = json.loads(await ws.recv())
            if data.get("type") == until:
                return dict(data)
    return await asyncio.wait_for(run(), timeout)


async def _closed(ws: ClientConnection, timeout: float = TIMEOUT) -> tuple[int, str]:
    """Read until the server closes; its close code and reason."""
    async def run() -> tuple[int, str]:
        try:
            while True:
                await ws.recv()
        except ConnectionClosed as exc:
            assert exc.rcvd is not None
            return exc.rcvd.code, exc.rcvd.reason
    return await asyncio.wait_for(run(), timeout)


def _oa(fake: FakeOpenAIRealtime, **headers: str) -> Any:
    return connect(fake.url + "?model=gpt-realtime",
                   additional_headers={"Authorization": f"Bearer {fake.api_key}", **headers})


# --------------------------------------------------------------------------- OpenAI


async def test_openai_fake_auth_and_beta_header() -> None:
    async with FakeOpenAIRealtime() as fake:
        with pytest.raises(InvalidStatus) as info:
            async with connect(fake.url + "?model=gpt-realtime"):
                pass
        assert info.value.response.status_code == 401
        async with _oa(fake, **{"OpenAI-Beta": "realtime=v1"}) as ws:
            err = await _recv(ws, "error")
            assert err["error"]["code"] == "beta_api_shape_disabled"
            assert (await _closed(ws))[0] == 4000
        assert fake.last.headers["openai-beta"] == "realtime=v1"


@pytest.mark.parametrize(("session", "code", "param"), [
    ({"instructions": "x"}, "missing_required_parameter", "session.type"),
    ({"type": "realtime", "voice": "alloy"}, "unknown_parameter", "session.voice"),
    ({"type": "realtime", "input_audio_format": "g711_ulaw"}, "unknown_parameter",
     "session.input_audio_format"),
    ({"type": "realtime", "tools": [{"type": "function", "function": {"name": "f"}}]},
     "unknown_parameter", "session.tools[0].function"),
    ({"type": "realtime", "audio": {"output": {"format": {"type": "audio/pcm", "rate": 16000}}}},
     "invalid_value", "session.audio.output.format.rate"),
    ({"type": "realtime", "audio": {"input": {"turn_detection": {"type": "server_vad",
                                                                 "threshold": 3}}}},
     "invalid_value", "session.audio.input.turn_detection.threshold"),
])
async def test_openai_fake_refuses_bad_session_updates(session: dict[str, Any], code: str,
                                                      param: str) -> None:
    async with FakeOpenAIRealtime() as fake, _oa(fake) as ws:
        await _recv(ws, "session.created")
        await ws.send(json.dumps({"type": "session.update", "event_id": "e1",
                                  "session": session}))
        err = (await _recv(ws, "error"))["error"]
        assert (err["code"], err["param"], err["event_id"]) == (code, param, "e1")
        assert fake.last.config["audio"]["input"]["format"] == {"type": "audio/pcm",
                                                                "rate": 24000}


async def test_openai_fake_response_races_and_truncate_checks() -> None:
    async with FakeOpenAIRealtime(pace_s=0.05) as fake, _oa(fake) as ws:
        await _recv(ws, "session.created")
        await ws.send(json.dumps({"type": "response.cancel", "event_id": "c0"}))
        err = (await _recv(ws, "error"))["error"]
        assert err["code"] == "response_cancel_not_active"
        await ws.send(json.dumps({"type": "response.create", "event_id": "r1"}))
        await ws.send(json.dumps({"type": "response.create", "event_id": "r2"}))
        err = (await _recv(ws, "error"))["error"]
        assert (err["code"], err["event_id"]) == ("conversation_already_has_active_response",
                                                  "r2")
        await ws.send(json.dumps({"type": "conversation.item.truncate", "item_id": "nope",
                                  "content_index": 0, "audio_end_ms": 10}))
        err = (await _recv(ws, "error"))["error"]
        assert err["code"] == "item_truncate_invalid_item_id"
        await ws.send(json.dumps({"type": "response.cancel"}))
        done = await _recv(ws, "response.done")
        assert done["response"]["status"] == "cancelled"
        assert done["response"]["status_details"]["reason"] == "client_cancelled"
        item = fake.replies[-1]["item_id"]
        await ws.send(json.dumps({"type": "conversation.item.truncate", "item_id": item,
                                  "content_index": 0, "audio_end_ms": 60_000}))
        err = (await _recv(ws, "error"))["error"]
        assert err["param"] == "audio_end_ms" and not fake.truncations[-1]["accepted"]


def test_last_quoted() -> None:
    assert last_quoted('Say "a" then "b c"') == "b c"
    assert last_quoted("no quotes") is None


# --------------------------------------------------------------------------- Gemini


def _setup(**extra: Any) -> str:
    return json.dumps({"setup": {"model": GOOD_MODEL, **extra}})


async def test_gemini_fake_accepts_snake_case_and_query_key() -> None:
    async with FakeGeminiLive() as fake:
        async with connect(fake.url + f"?key={fake.api_key}") as ws:
            await ws.send(json.dumps({"setup": {
                "model": GOOD_MODEL,
                "generation_config": {"response_modalities": ["AUDIO"]},
                "system_instruction": {"parts": [{"text": "hi"}]},
                "tools": [{"function_declarations": [{"name": "f", "parameters": {
                    "type": "OBJECT", "properties": {"order_id": {"type": "STRING"}}}}]}],
                "session_resumption": {}}}))
            assert json.loads(await ws.recv()) == {"setupComplete": {}}
            update = json.loads(await ws.recv())
            assert update["sessionResumptionUpdate"]["resumable"] is True
        config = fake.last.config
        assert config["generationConfig"] == {"responseModalities": ["AUDIO"]}
        params = config["tools"][0]["functionDeclarations"][0]["parameters"]
        assert "order_id" in params["properties"]         # user data is not renamed
        assert fake.last.query["key"] == ["***"]


@pytest.mark.parametrize(("first", "code", "reason"), [
    (_setup(foo=1), 1007, "Unknown name \"foo\" at 'setup'"),
    (_setup(tools=[{"functionDeclarations": [{"name": "f", "parameters": {
        "type": "object", "properties": {"a": {"type": "STRING"}}}}]}]), 1007,
     "setup.tools[0].function_declarations[0].parameters.type"),
    (_setup(generationConfig={"speechConfig": {"voiceConfig": {"prebuiltVoiceConfig": {
        "voiceName": "Robot"}}}}), 1007, "Voice name Robot"),
    (_setup(realtimeInputConfig={"automaticActivityDetection": {
        "startOfSpeechSensitivity": "HIGH"}}), 1007, "start_of_speech_sensitivity"),
    (_setup(sessionResumption={"handle": "made-up"}), 1007, "resumption handle"),
    (json.dumps({"setup": {"model": "models/gemini-nope"}}), 1008, "not found"),
    (json.dumps({"realtimeInput": {"audioStreamEnd": True}}), 1007, "first message"),
    (json.dumps({"setup": {"model": GOOD_MODEL}, "toolResponse": {}}), 1007, ""),
])
async def test_gemini_fake_closes_with_vendor_codes(first: str, code: int, reason: str) -> None:
    async with FakeGeminiLive() as fake:
        async with connect(fake.url, additional_headers={"x-goog-api-key": fake.api_key}) as ws:
            await ws.send(first)
            got_code, got_reason = await _closed(ws)
        assert got_code == code and reason in got_reason


async def test_gemini_fake_auth_and_activity_rules() -> None:
    async with FakeGeminiLive() as fake:
        async with connect(fake.url) as ws:
            await ws.send(_setup())
            code, reason = await _closed(ws)
            assert code == 1008 and "API Key" in reason
        async with connect(fake.url, additional_headers={"x-goog-api-key": "nope"}) as ws:
            await ws.send(_setup())
            assert await _closed(ws) == (1007, "API key not valid. Please pass a valid API key.")
        async with connect(fake.url, additional_headers={"x-goog-api-key": fake.api_key}) as ws:
            await ws.send(_setup())
            await ws.recv()
            await ws.send(json.dumps({"realtimeInput": {"activityStart": {}}}))
            code, reason = await _closed(ws)
            assert code == 1007 and "automatic activity detection" in reason


async def test_gemini_fake_go_away_timer_hits_first_connection_only() -> None:
    async with FakeGeminiLive(go_away_after_s=0.05, go_away_grace_s=0.05) as fake:
        headers = {"x-goog-api-key": fake.api_key}
        async with connect(fake.url, additional_headers=headers) as ws:
            await ws.send(_setup(sessionResumption={}))
            messages = []
            with pytest.raises(ConnectionClosed):
                while True:
                    messages.append(json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT)))
            assert {"goAway": {"timeLeft": "0.05s"}} in messages
        handle = fake.issued_handles[-1]
        async with connect(fake.url, additional_headers=headers) as ws:
            await ws.send(_setup(sessionResumption={"handle": handle}))
            assert json.loads(await ws.recv()) == {"setupComplete": {}}
            await asyncio.sleep(0.2)
            assert fake.go_aways == 1 and fake.resumed_handles == [handle]
