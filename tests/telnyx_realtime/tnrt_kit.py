"""A gateway on the fake Telnyx with a fake realtime model, over real loopback sockets.

Imported as ``tnrt_kit`` by the ``test_tnrt_*`` modules.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from voicecall.agent import ResponseRequest, ResponseResult
from voicecall.agent.base import TextSink
from voicecall.carriers.telnyx.carrier import Carrier as TelnyxCarrier
from voicecall.config import load_config
from voicecall.gateway.manager import CallManager
from voicecall.gateway.server import Gateway, run_gateway
from voicecall.gateway.token import read_token
from voicecall.testing.fake_gemini_live import FakeGeminiLive
from voicecall.testing.fake_openai_realtime import FakeOpenAIRealtime
from voicecall.testing.fake_telnyx import CalleeScript, FakeCall, FakeTelnyx, Timings

API_KEY = "KEY0123456789ABCDEF_telnyx_rt_test"
CONNECTION_ID = "2100000000000000042"
PUBLIC_HOST = "voice.example.com"
PUBLIC_URL = f"https://{PUBLIC_HOST}/voice/webhook"
STREAM_PREFIX = f"wss://{PUBLIC_HOST}/voice/stream/realtime/"
OUR_NUMBER = "+15550009999"
CALLEE = "+15550002222"
CALLER = "+15550001111"
BOUND = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RecordingResponder:
    """The call's agent: records each consult request and answers from a list."""

    answers: list[str] = field(default_factory=lambda: ["The clinic opens at nine."])
    requests: list[ResponseRequest] = field(default_factory=list)
    name: str = "recording"

    async def respond(self, req: ResponseRequest,
                      on_text: TextSink | None = None) -> ResponseResult:
        self.requests.append(req)
        text = self.answers[min(len(self.requests), len(self.answers)) - 1]
        return ResponseResult(text, [{"text": text}], 1.0, 1.0)

    async def aclose(self) -> None:
        return None


@dataclass
class Rig:
    fake: FakeTelnyx
    gateway: Gateway
    home: Path
    webhook_port: int
    responder: RecordingResponder

    @property
    def manager(self) -> CallManager:
        assert self.gateway.runtime.manager is not None
        return self.gateway.runtime.manager

    @property
    def carrier(self) -> TelnyxCarrier:
        carrier = self.manager.carrier
        assert isinstance(carrier, TelnyxCarrier)
        return carrier

    def local(self, stream_url: str) -> str:
        """A stream URL the gateway handed out, dialled directly on the loopback."""
        assert stream_url.startswith(STREAM_PREFIX), stream_url
        return f"ws://127.0.0.1:{self.webhook_port}/voice/stream/realtime/" \
            + stream_url[len(STREAM_PREFIX):]

    async def rpc(self, method: str, params: dict[str, Any] | None = None) -> Any:
        token = read_token(self.home)
        async with httpx.AsyncClient(timeout=10, trust_env=False) as http:
            resp = await http.post(self.gateway.control_url, headers={
                "Authorization": f"Bearer {token}"}, json={
                "jsonrpc": "2.0", "id": 1, "method": method, "params": params or {}})
        doc = resp.json()
        if "error" in doc:
            raise AssertionError(f"rpc {method} failed: {doc['error']}")
        return doc["result"]

    async def wait_call(self, call_id: str, pred: Any, timeout: float = 8.0) -> Any:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            call = self.manager.get(call_id)
            if call is not None and pred(call):
                return call
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"call {call_id} never matched; last: {call}")
            await asyncio.sleep(0.01)

    async def inbound(self) -> tuple[str, FakeCall]:
        ccid = await self.fake.place_inbound(CALLER, OUR_NUMBER)
        return ccid, self.fake.calls[ccid]

    async def outbound(self, message: str) -> tuple[str, FakeCall]:
        placed = await self.rpc("voicecall.initiate", {
            "to": CALLEE, "message": message, "mode": "conversation"})
        call = self.manager.get(placed["callId"])
        assert call is not None and call.provider_call_id
        return placed["callId"], self.fake.calls[call.provider_call_id]

    def call_id(self, ccid: str) -> str:
        call = self.manager.get(ccid)
        assert call is not None
        return call.call_id


def openai_cfg(fake: FakeOpenAIRealtime, **realtime: Any) -> dict[str, Any]:
    return {"realtime": {"enabled": True, "provider": "openai", **realtime, "providers": {
        "openai": {"apiKey": fake.api_key, "baseUrl": fake.base_url}}}}


def google_cfg(fake: FakeGeminiLive, **realtime: Any) -> dict[str, Any]:
    return {"realtime": {"enabled": True, "provider": "google", **realtime, "providers": {
        "google": {"apiKey": fake.api_key, "endpoint": fake.url}}}}


def media_ms(frames: list[dict[str, Any]]) -> int:
    """Milliseconds of mu-law audio in ``media`` frames."""
    return sum(len(base64.b64decode(f["media"]["payload"])) for f in frames
               if f.get("event") == "media") // 8


def stream_starts(fake_call: FakeCall) -> list[dict[str, Any]]:
    return fake_call.action_bodies("streaming_start")


@contextlib.asynccontextmanager
async def rig(tmp_path: Path, *, callee: CalleeScript | None = None,
              timings: Timings | None = None, responder: RecordingResponder | None = None,
              **config: Any) -> AsyncIterator[Rig]:
    """Fake Telnyx + a real gateway (realtime config passed in ``config``)."""
    webhook_port = free_port()
    fake = FakeTelnyx(API_KEY, CONNECTION_ID, callee=callee or CalleeScript(replies=[]),
                      timings=timings,
                      public_to_local={PUBLIC_HOST: f"127.0.0.1:{webhook_port}"},
                      connection_webhook_url=PUBLIC_URL)
    recorder = responder or RecordingResponder()
    async with fake:
        cfg: dict[str, Any] = {
            "provider": "telnyx", "fromNumber": OUR_NUMBER, "publicUrl": PUBLIC_URL,
            "inboundPolicy": "open",
            "telnyx": {"apiKey": API_KEY, "connectionId": CONNECTION_ID,
                       "publicKey": fake.public_key, "apiBaseUrl": fake.api_base},
            "serve": {"port": webhook_port}, "control": {"port": free_port()},
            "outbound": {"notifyHangupDelaySec": 0},
        }
        for key, value in config.items():
            if isinstance(value, dict) and isinstance(cfg.get(key), dict):
                cfg[key] = {**cfg[key], **value}
            else:
                cfg[key] = value
        path = tmp_path / "config.json5"
        path.write_text(json.dumps(cfg))
        loaded = load_config(path, env={})
        stop = asyncio.Event()
        ready: asyncio.Future[Gateway] = asyncio.get_running_loop().create_future()
        server = asyncio.create_task(run_gateway(loaded, tmp_path, stop=stop, ready=ready,
                                                 install_signals=False))
        try:
            gateway = await asyncio.wait_for(ready, 10)
            assert gateway.runtime.manager is not None, gateway.runtime.setup_error
            gateway.runtime.manager.responder = recorder
            yield Rig(fake, gateway, tmp_path, webhook_port, recorder)
        finally:
            stop.set()
            await asyncio.wait_for(server, 15)
