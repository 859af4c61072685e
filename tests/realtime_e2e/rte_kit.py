"""A gateway wired to the fake Twilio and a fake realtime provider over real loopback sockets."""

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
from voicecall.config import load_config
from voicecall.gateway.manager import CallManager
from voicecall.gateway.server import Gateway, run_gateway
from voicecall.gateway.token import read_token
from voicecall.testing.fake_gemini_live import FakeGeminiLive
from voicecall.testing.fake_openai_realtime import FakeOpenAIRealtime
from voicecall.testing.fake_twilio import CalleeScript, FakeCall, FakeTwilio, Timings

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "twilio-auth-token-for-tests"
PUBLIC_HOST = "voice.example.com"
PUBLIC_URL = f"https://{PUBLIC_HOST}/voice/webhook"
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
    fake: FakeTwilio
    gateway: Gateway
    home: Path
    webhook_port: int
    responder: RecordingResponder

    @property
    def manager(self) -> CallManager:
        assert self.gateway.runtime.manager is not None
        return self.gateway.runtime.manager

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
        sid = await self.fake.place_inbound(CALLER, OUR_NUMBER, PUBLIC_URL)
        return sid, self.fake.calls[sid]


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


@contextlib.asynccontextmanager
async def rig(tmp_path: Path, *, callee: CalleeScript | None = None,
              timings: Timings | None = None, responder: RecordingResponder | None = None,
              **config: Any) -> AsyncIterator[Rig]:
    """Fake Twilio + a real gateway (realtime config passed in ``config``)."""
    webhook_port = free_port()
    fake = FakeTwilio(ACCOUNT_SID, AUTH_TOKEN, callee=callee or CalleeScript(replies=[]),
                      timings=timings,
                      public_to_local={PUBLIC_HOST: f"127.0.0.1:{webhook_port}"})
    recorder = responder or RecordingResponder()
    async with fake:
        cfg: dict[str, Any] = {
            "provider": "twilio", "fromNumber": OUR_NUMBER, "publicUrl": PUBLIC_URL,
            "inboundPolicy": "open",
            "twilio": {"accountSid": ACCOUNT_SID, "authToken": AUTH_TOKEN,
                       "apiBaseUrl": fake.api_base},
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
