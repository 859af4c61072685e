"""Test kit: a real gateway on loopback sockets, configured against a fake carrier.

The per-carrier end-to-end kits (``twe_kit``, ``txe_kit``, ``ple_kit``, ``rte_kit``,
``tnrt_kit``) build their base config and fake, then share the pieces here.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import httpx

from voicecall.agent import ResponseRequest, ResponseResult
from voicecall.agent.base import TextSink
from voicecall.config import load_config
from voicecall.gateway.manager import CallManager
from voicecall.gateway.server import Gateway, run_gateway
from voicecall.gateway.token import read_token

if TYPE_CHECKING:
    from voicecall.testing.fake_gemini_live import FakeGeminiLive
    from voicecall.testing.fake_openai_realtime import FakeOpenAIRealtime

FakeT = TypeVar("FakeT")


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
class GatewayRig(Generic[FakeT]):
    """A running gateway (home ``home``) and the fake carrier it talks to."""

    fake: FakeT
    gateway: Gateway
    home: Path
    webhook_port: int

    @property
    def manager(self) -> CallManager:
        assert self.gateway.runtime.manager is not None
        return self.gateway.runtime.manager

    async def rpc(self, method: str, params: dict[str, Any] | None = None) -> Any:
        doc = await self.rpc_raw(method, params)
        if "error" in doc:
            raise AssertionError(f"rpc {method} failed: {doc['error']}")
        return doc["result"]

    async def rpc_raw(self, method: str, params: dict[str, Any] | None = None) -> Any:
        token = read_token(self.home)
        async with httpx.AsyncClient(timeout=10, trust_env=False) as http:
            resp = await http.post(self.gateway.control_url, headers={
                "Authorization": f"Bearer {token}"}, json={
                "jsonrpc": "2.0", "id": 1, "method": method, "params": params or {}})
        return resp.json()

    def events(self) -> list[dict[str, Any]]:
        path = self.home / "calls.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    async def wait_call(self, call_id: str, pred: Callable[[Any], Any],
                        timeout: float = 8.0) -> Any:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            call = self.manager.get(call_id)
            if call is not None and pred(call):
                return call
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"call {call_id} never matched; last: {call}")
            await asyncio.sleep(0.01)


def base_config(provider: str, carrier: dict[str, Any], *, from_number: str,
                public_url: str, webhook_port: int) -> dict[str, Any]:
    """The config every rig starts from; ``carrier`` is the provider's own section."""
    return {
        "provider": provider, "fromNumber": from_number, "publicUrl": public_url,
        provider: carrier,
        "serve": {"port": webhook_port}, "control": {"port": free_port()},
        "outbound": {"notifyHangupDelaySec": 0},
    }


@contextlib.asynccontextmanager
async def serve_gateway(home: Path, cfg: dict[str, Any],
                        overrides: Mapping[str, Any]) -> AsyncIterator[Gateway]:
    """Run a gateway in ``home`` on ``cfg`` with ``overrides`` merged in (one level deep
    for sections that are dicts on both sides); stop it on exit."""
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    await asyncio.to_thread(home.mkdir, parents=True, exist_ok=True)
    path = home / "config.json5"
    path.write_text(json.dumps(cfg))
    loaded = load_config(path, env={})
    stop = asyncio.Event()
    ready: asyncio.Future[Gateway] = asyncio.get_running_loop().create_future()
    server = asyncio.create_task(run_gateway(loaded, home, stop=stop, ready=ready,
                                             install_signals=False))
    try:
        gateway = await asyncio.wait_for(ready, 10)
        assert gateway.runtime.manager is not None, gateway.runtime.setup_error
        yield gateway
    finally:
        stop.set()
        await asyncio.wait_for(server, 15)


def openai_cfg(fake: FakeOpenAIRealtime, **realtime: Any) -> dict[str, Any]:
    """Config overrides for realtime calls on the fake OpenAI Realtime."""
    return {"realtime": {"enabled": True, "provider": "openai", **realtime, "providers": {
        "openai": {"apiKey": fake.api_key, "baseUrl": fake.base_url}}}}


def google_cfg(fake: FakeGeminiLive, **realtime: Any) -> dict[str, Any]:
    """Config overrides for realtime calls on the fake Gemini Live."""
    return {"realtime": {"enabled": True, "provider": "google", **realtime, "providers": {
        "google": {"apiKey": fake.api_key, "endpoint": fake.url}}}}


def media_ms(frames: list[dict[str, Any]]) -> int:
    """Milliseconds of mu-law audio in ``media`` frames."""
    return sum(len(base64.b64decode(f["media"]["payload"])) for f in frames
               if f.get("event") == "media") // 8
