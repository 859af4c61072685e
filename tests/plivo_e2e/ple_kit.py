"""A gateway wired to the fake Plivo over real loopback sockets (imported as ``ple_kit``)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from voicecall.carriers.plivo.carrier import Carrier as PlivoCarrier
from voicecall.carriers.plivo.media import StreamFormat
from voicecall.gateway import runtime as runtime_module
from voicecall.testing.fake_plivo import CalleeScript, FakePlivo, Timings
from voicecall.testing.gateway_rig import GatewayRig, base_config, free_port, serve_gateway

AUTH_ID = "MAXXXXXXXXXXXXXXXXXX"
AUTH_TOKEN = "plivo-auth-token-for-tests"
PUBLIC_HOST = "voice.example.com"
PUBLIC_URL = f"https://{PUBLIC_HOST}/voice/webhook"
OUR_NUMBER = "+15550009999"
CALLEE = "+15550002222"
CALLER = "+15550001111"


class Rig(GatewayRig[FakePlivo]):
    @property
    def carrier(self) -> PlivoCarrier:
        carrier = self.manager.carrier
        assert isinstance(carrier, PlivoCarrier)
        return carrier


@contextlib.contextmanager
def _plivo_streaming_allowed() -> Iterator[None]:
    """Setup still says streaming is Twilio-only (config/validate.py); lift that one rule
    for these tests. See the report: the rule should accept Plivo."""
    original = runtime_module.validate_setup

    def patched(cfg: Any, prefix: str = "") -> list[str]:
        return [p for p in original(cfg, prefix) if "when streaming.enabled is true" not in p]

    runtime_module.validate_setup = patched  # type: ignore[assignment]
    try:
        yield
    finally:
        runtime_module.validate_setup = original  # type: ignore[assignment]


@contextlib.asynccontextmanager
async def rig(tmp_path: Path, *, callee: CalleeScript | None = None,
              timings: Timings | None = None, stream_format: StreamFormat | None = None,
              force_stream_format: StreamFormat | None = None,
              **config: Any) -> AsyncIterator[Rig]:
    """Fake Plivo + a real gateway whose REST base URL points at it."""
    webhook_port = free_port()
    fake = FakePlivo(AUTH_ID, AUTH_TOKEN, callee=callee, timings=timings,
                     force_stream_format=force_stream_format,
                     public_to_local={PUBLIC_HOST: f"127.0.0.1:{webhook_port}"})
    with _plivo_streaming_allowed():
        async with fake, serve_gateway(tmp_path, base_config(
                "plivo", {"authId": AUTH_ID, "authToken": AUTH_TOKEN,
                          "apiBaseUrl": fake.api_base},
                from_number=OUR_NUMBER, public_url=PUBLIC_URL, webhook_port=webhook_port),
                config) as gateway:
            r = Rig(fake, gateway, tmp_path, webhook_port)
            if stream_format is not None:
                r.carrier.stream_format = stream_format
            yield r
