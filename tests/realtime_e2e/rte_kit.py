"""A gateway wired to the fake Twilio and a fake realtime provider over real loopback sockets."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voicecall.testing.fake_twilio import CalleeScript, FakeCall, FakeTwilio, Timings
from voicecall.testing.gateway_rig import (
    GatewayRig,
    RecordingResponder,
    base_config,
    free_port,
    serve_gateway,
)
from voicecall.testing.gateway_rig import google_cfg as google_cfg
from voicecall.testing.gateway_rig import media_ms as media_ms
from voicecall.testing.gateway_rig import openai_cfg as openai_cfg

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "twilio-auth-token-for-tests"
PUBLIC_HOST = "voice.example.com"
PUBLIC_URL = f"https://{PUBLIC_HOST}/voice/webhook"
OUR_NUMBER = "+15550009999"
CALLEE = "+15550002222"
CALLER = "+15550001111"
BOUND = 30.0


@dataclass
class Rig(GatewayRig[FakeTwilio]):
    responder: RecordingResponder

    async def inbound(self) -> tuple[str, FakeCall]:
        sid = await self.fake.place_inbound(CALLER, OUR_NUMBER, PUBLIC_URL)
        return sid, self.fake.calls[sid]


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
    async with fake, serve_gateway(tmp_path, {**base_config(
            "twilio", {"accountSid": ACCOUNT_SID, "authToken": AUTH_TOKEN,
                       "apiBaseUrl": fake.api_base},
            from_number=OUR_NUMBER, public_url=PUBLIC_URL, webhook_port=webhook_port),
            "inboundPolicy": "open"}, config) as gateway:
        r = Rig(fake, gateway, tmp_path, webhook_port, recorder)
        r.manager.responder = recorder
        yield r
