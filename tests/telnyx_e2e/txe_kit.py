"""A gateway wired to the fake Telnyx over real loopback sockets (imported as ``txe_kit``)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from voicecall.testing.fake_telnyx import CalleeScript, FakeTelnyx, Timings
from voicecall.testing.gateway_rig import GatewayRig, base_config, free_port, serve_gateway

API_KEY = "KEY0123456789ABCDEF_telnyx_test"
CONNECTION_ID = "2100000000000000001"
PUBLIC_HOST = "voice.example.com"
PUBLIC_URL = f"https://{PUBLIC_HOST}/voice/webhook"
OUR_NUMBER = "+15550009999"
CALLEE = "+15550002222"
CALLER = "+15550001111"


class Rig(GatewayRig[FakeTelnyx]):
    def events(self) -> list[dict[str, Any]]:
        path = self.home / "calls.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@contextlib.asynccontextmanager
async def rig(tmp_path: Path, *, callee: CalleeScript | None = None,
              timings: Timings | None = None, public_key: str | None = None,
              **config: Any) -> AsyncIterator[Rig]:
    """Fake Telnyx + a real gateway whose REST base URL and public key point at it."""
    webhook_port = free_port()
    fake = FakeTelnyx(API_KEY, CONNECTION_ID, callee=callee, timings=timings,
                      public_to_local={PUBLIC_HOST: f"127.0.0.1:{webhook_port}"},
                      connection_webhook_url=PUBLIC_URL)
    async with fake, serve_gateway(tmp_path, base_config(
            "telnyx", {"apiKey": API_KEY, "connectionId": CONNECTION_ID,
                       "publicKey": public_key or fake.public_key,
                       "apiBaseUrl": fake.api_base},
            from_number=OUR_NUMBER, public_url=PUBLIC_URL, webhook_port=webhook_port),
            config) as gateway:
        yield Rig(fake, gateway, tmp_path, webhook_port)
