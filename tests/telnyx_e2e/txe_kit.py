"""A gateway wired to the fake Telnyx over real loopback sockets (imported as ``txe_kit``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from voicecall.config import load_config
from voicecall.gateway.manager import CallManager
from voicecall.gateway.server import Gateway, run_gateway
from voicecall.gateway.token import read_token
from voicecall.testing.fake_telnyx import CalleeScript, FakeTelnyx, Timings

API_KEY = "KEY0123456789ABCDEF_telnyx_test"
CONNECTION_ID = "2100000000000000001"
PUBLIC_HOST = "voice.example.com"
PUBLIC_URL = f"https://{PUBLIC_HOST}/voice/webhook"
OUR_NUMBER = "+15550009999"
CALLEE = "+15550002222"
CALLER = "+15550001111"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Rig:
    fake: FakeTelnyx
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
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    async def wait_call(self, call_id: str, pred: Any, timeout: float = 8.0) -> Any:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            call = self.manager.get(call_id)
            if call is not None and pred(call):
                return call
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"call {call_id} never matched; last: {call}")
            await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def rig(tmp_path: Path, *, callee: CalleeScript | None = None,
              timings: Timings | None = None, public_key: str | None = None,
              **config: Any) -> AsyncIterator[Rig]:
    """Fake Telnyx + a real gateway whose REST base URL and public key point at it."""
    webhook_port = free_port()
    fake = FakeTelnyx(API_KEY, CONNECTION_ID, callee=callee, timings=timings,
                      public_to_local={PUBLIC_HOST: f"127.0.0.1:{webhook_port}"},
                      connection_webhook_url=PUBLIC_URL)
    async with fake:
        cfg: dict[str, Any] = {
            "provider": "telnyx", "fromNumber": OUR_NUMBER, "publicUrl": PUBLIC_URL,
            "telnyx": {"apiKey": API_KEY, "connectionId": CONNECTION_ID,
                       "publicKey": public_key or fake.public_key,
                       "apiBaseUrl": fake.api_base},
            "serve": {"port": webhook_port}, "control": {"port": free_port()},
            "outbound": {"notifyHangupDelaySec": 0},
        }
        for key, value in config.items():
            if isinstance(value, dict) and isinstance(cfg.get(key), dict):
                cfg[key] = {**cfg[key], **value}
            else:
                cfg[key] = value
        await asyncio.to_thread(tmp_path.mkdir, parents=True, exist_ok=True)
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
            yield Rig(fake, gateway, tmp_path, webhook_port)
        finally:
            stop.set()
            await asyncio.wait_for(server, 15)
