"""A gateway on the fake Telnyx with a fake realtime model, over real loopback sockets.

Imported as ``tnrt_kit`` by the ``test_tnrt_*`` modules.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voicecall.carriers.telnyx.carrier import Carrier as TelnyxCarrier
from voicecall.testing.fake_telnyx import CalleeScript, FakeCall, FakeTelnyx, Timings
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

API_KEY = "KEY0123456789ABCDEF_telnyx_rt_test"
CONNECTION_ID = "2100000000000000042"
PUBLIC_HOST = "voice.example.com"
PUBLIC_URL = f"https://{PUBLIC_HOST}/voice/webhook"
STREAM_PREFIX = f"wss://{PUBLIC_HOST}/voice/stream/realtime/"
OUR_NUMBER = "+15550009999"
CALLEE = "+15550002222"
CALLER = "+15550001111"
BOUND = 30.0


@dataclass
class Rig(GatewayRig[FakeTelnyx]):
    responder: RecordingResponder

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
    async with fake, serve_gateway(tmp_path, {**base_config(
            "telnyx", {"apiKey": API_KEY, "connectionId": CONNECTION_ID,
                       "publicKey": fake.public_key, "apiBaseUrl": fake.api_base},
            from_number=OUR_NUMBER, public_url=PUBLIC_URL, webhook_port=webhook_port),
            "inboundPolicy": "open"}, config) as gateway:
        r = Rig(fake, gateway, tmp_path, webhook_port, recorder)
        r.manager.responder = recorder
        yield r
