"""The carrier shell's wiring: build(), verification verdicts, stream URLs and tokens."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from voicecall.calls import Call, CallState
from voicecall.carriers.telnyx.carrier import Carrier, build, verify_request
from voicecall.carriers.telnyx.rest import TelnyxRest
from voicecall.carriers.telnyx.signature import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    load_public_key,
    public_key_b64,
    sign,
)
from voicecall.carriers.telnyx.webhook import decode_client_state, encode_client_state
from voicecall.config import load_config
from voicecall.errors import ConfigError
from voicecall.gateway.runtime import build_carrier
from voicecall.gateway.security import RequestView

SEED = bytes(range(100, 132))


def loaded(tmp_path: Path, **overrides: Any) -> Any:
    cfg: dict[str, Any] = {
        "provider": "telnyx", "fromNumber": "+15550009999",
        "publicUrl": "https://voice.example.com/voice/webhook",
        "telnyx": {"apiKey": "KEY", "connectionId": "conn", "publicKey": public_key_b64(SEED),
                   "apiBaseUrl": "http://127.0.0.1:9"},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    path = tmp_path / "config.json5"
    path.write_text(json.dumps(cfg))
    return load_config(path, env={})


async def test_build_and_runtime_wiring(tmp_path: Path) -> None:
    carrier = build_carrier(loaded(tmp_path), tmp_path)
    assert isinstance(carrier, Carrier)
    assert carrier.required_headers == (SIGNATURE_HEADER, TIMESTAMP_HEADER)
    assert carrier.cache_replies and carrier.survives_restart and not carrier.notify_inline
    assert carrier.rest.base_url == "http://127.0.0.1:9/v2"
    await carrier.aclose()
    skip = build(loaded(tmp_path, skipSignatureVerification=True,
                        telnyx={"publicKey": None}), tmp_path,
                 stream_secret=b"k" * 32, stt=None, tts=None)
    assert skip.required_headers == ()
    assert not skip.verify_webhook(RequestView("POST", "/", "", {}, None), b"{}").ok
    await skip.aclose()


@pytest.mark.parametrize("key", ["AAAA", "not a key", "-----BEGIN PUBLIC KEY-----\nAA"])
def test_bad_public_key_is_a_config_error(tmp_path: Path, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        build(loaded(tmp_path, telnyx={"publicKey": key}), tmp_path,
              stream_secret=b"k" * 32, stt=None, tts=None)
    assert info.value.path == "telnyx.publicKey"


async def test_stream_urls_and_tokens(tmp_path: Path) -> None:
    carrier = build(loaded(tmp_path, streaming={"enabled": True}), tmp_path,
                    stream_secret=b"s" * 32, stt=None, tts=None)
    url = urlsplit(carrier.stream_url("call-1"))
    assert (url.scheme, url.netloc, url.path) == ("wss", "voice.example.com", "/voice/stream")
    query = parse_qs(url.query)
    assert query["callId"] == ["call-1"]
    assert query["token"] == [carrier.stream_token("call-1")]
    assert carrier.stream_token("call-1") != carrier.stream_token("call-2")
    other = build(loaded(tmp_path, streaming={"enabled": True}), tmp_path,
                  stream_secret=b"t" * 32, stt=None, tts=None)
    assert other.stream_token("call-1") != carrier.stream_token("call-1")
    params = carrier._stream_params("call-1")
    assert params is not None and params.auth_token == carrier.stream_token("call-1")
    await carrier.aclose()
    await other.aclose()


def test_verify_request_keys_replays_on_the_signature() -> None:
    key = load_public_key(public_key_b64(SEED))
    body = b'{"data":{"event_type":"call.answered","id":"x"}}'
    headers = {SIGNATURE_HEADER: sign(SEED, "1000", body), TIMESTAMP_HEADER: "1000"}
    view = RequestView("POST", "/voice/webhook", "", headers, "127.0.0.1")
    first = verify_request(view, body, key, now=1000)
    again = verify_request(view, body, key, now=1100)
    assert first.ok and first.request_key and first.request_key == again.request_key
    fresh = {SIGNATURE_HEADER: sign(SEED, "1001", body), TIMESTAMP_HEADER: "1001"}
    redelivery = verify_request(RequestView("POST", "/", "", fresh, None), body, key, now=1001)
    assert redelivery.ok and redelivery.request_key != first.request_key
    late = verify_request(view, body, key, now=1301)
    assert not late.ok and late.request_key is None


class _Host:
    """The manager side, reduced to what the shell calls."""

    def __init__(self, calls: dict[str, Any]) -> None:
        self.calls = calls
        self.events: list[Any] = []

    async def handle_event(self, event: Any, *, ack: bool = True) -> None:
        self.events.append(event)

    def get(self, call_id: str) -> Any:
        return self.calls.get(call_id)

    def barge_in_allowed(self, call_id: str) -> bool:
        return True


def _carrier_with(tmp_path: Path, responses: list[Any]) -> tuple[Carrier, list[Any]]:
    seen: list[Any] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, request.url.path.rsplit("/", 1)[-1],
                     json.loads(request.content) if request.content else None))
        status, body = responses.pop(0) if responses else (200, {"data": {"result": "ok"}})
        return httpx.Response(status, json=body)

    cfg = loaded(tmp_path, skipSignatureVerification=True).config
    rest = TelnyxRest("KEY", base_url="http://127.0.0.1:9", backoff_s=0.001,
                      transport=httpx.MockTransport(handler))
    return Carrier(cfg, rest, connection_id="conn", public_key=None,
                   public_url="https://voice.example.com/voice/webhook",
                   stream_secret=b"k" * 32), seen


async def test_turns_gate_transcripts_and_survive_a_running_transcription(
        tmp_path: Path) -> None:
    call = Call(call_id="c1", provider="telnyx", direction="outbound",
                state=CallState.LISTENING, from_number="+1", to_number="+2", started_at=0,
                provider_call_id="v3:a")
    host = _Host({"c1": call, "v3:a": call})
    carrier, seen = _carrier_with(tmp_path, [
        (422, {"errors": [{"code": "90055", "title": "Transcription already started"}]})])
    await carrier.start(host)

    def transcript(token: str | None, text: str) -> bytes:
        return json.dumps({"data": {"event_type": "call.transcription", "id": text,
                                    "payload": {"call_control_id": "v3:a", "client_state":
                                                encode_client_state("c1", turn_token=token),
                                                "transcription_data": {
                                                    "transcript": text, "is_final": True}}}}
                          ).encode()

    view = RequestView("POST", "/voice/webhook", "", {}, None)
    # Not a turn of this process (say, opened before a restart): passed on to the manager.
    await carrier.handle_webhook(view, transcript("before-restart", "kept"), None)
    assert [e.transcript for e in host.events] == ["kept"]
    # transcription_start refused as already running: the turn moves onto it instead.
    await carrier.start_listening(call, "turn-2")
    assert [(m, a) for m, a, _ in seen] == [("POST", "transcription_start"),
                                            ("PUT", "client_state_update")]
    assert decode_client_state(seen[1][2]["client_state"]).turn_token == "turn-2"
    await carrier.handle_webhook(view, transcript("turn-1", "stale"), None)
    await carrier.handle_webhook(view, transcript(None, "no token"), None)
    await carrier.handle_webhook(view, transcript("turn-2", "fresh"), None)
    await carrier.handle_webhook(view, transcript("turn-2", "second final"), None)
    assert [e.transcript for e in host.events] == ["kept", "fresh"]
    for _ in range(20):  # the turn's transcription stops in the background
        if any(a == "transcription_stop" for _, a, _ in seen):
            break
        await asyncio.sleep(0.01)
    assert seen[-1][1] == "transcription_stop"
    await carrier.aclose()
