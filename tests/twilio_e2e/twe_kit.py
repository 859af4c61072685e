"""A gateway wired to the fake Twilio over real loopback sockets (imported as ``twe_kit``)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from voicecall.testing.fake_twilio import CalleeScript, FakeTwilio, Timings
from voicecall.testing.gateway_rig import GatewayRig, base_config, free_port, serve_gateway

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "twilio-auth-token-for-tests"
PUBLIC_HOST = "voice.example.com"
PUBLIC_URL = f"https://{PUBLIC_HOST}/voice/webhook"
OUR_NUMBER = "+15550009999"
CALLEE = "+15550002222"
CALLER = "+15550001111"


class Rig(GatewayRig[FakeTwilio]):
    @property
    def local_webhook(self) -> str:
        return f"http://127.0.0.1:{self.webhook_port}/voice/webhook"


@contextlib.asynccontextmanager
async def rig(tmp_path: Path, *, callee: CalleeScript | None = None,
              timings: Timings | None = None, **config: Any) -> AsyncIterator[Rig]:
    """Fake Twilio + a real gateway whose REST base URL points at it."""
    webhook_port = free_port()
    fake = FakeTwilio(ACCOUNT_SID, AUTH_TOKEN, callee=callee, timings=timings,
                      public_to_local={PUBLIC_HOST: f"127.0.0.1:{webhook_port}"})
    async with fake, serve_gateway(tmp_path, base_config(
            "twilio", {"accountSid": ACCOUNT_SID, "authToken": AUTH_TOKEN,
                       "apiBaseUrl": fake.api_base},
            from_number=OUR_NUMBER, public_url=PUBLIC_URL, webhook_port=webhook_port),
            config) as gateway:
        yield Rig(fake, gateway, tmp_path, webhook_port)
