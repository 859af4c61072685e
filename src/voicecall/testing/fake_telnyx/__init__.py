"""A fake Telnyx (Call Control v2) on a real loopback socket, speaking Telnyx's protocols.

It accepts the real REST request shapes (``POST /v2/calls``,
``POST /v2/calls/{id}/actions/<command>``, ``GET /v2/calls/{id}``) with strict
validation and Telnyx-shaped errors, simulates the call legs, sends Ed25519-signed
webhooks with a key it generates (``public_key`` is what the gateway is configured
with), and dials the gateway's media-stream WebSocket like Telnyx::

    async with FakeTelnyx(API_KEY, CONNECTION_ID,
                          callee=CalleeScript(replies=["Yes, tomorrow works."]),
                          public_to_local={"voice.example.com": gateway_netloc},
                          connection_webhook_url=PUBLIC_WEBHOOK) as fake:
        ...  # gateway: telnyx.apiBaseUrl = fake.api_base, telnyx.publicKey = fake.public_key
        call = fake.latest_call
        await fake.wait_for(lambda: not call.is_alive)
        assert call.heard == [...]

Deviations from Telnyx are deliberate simplifications noted where they occur.
"""

from voicecall.testing.fake_telnyx._engine import STREAM_KEYS
from voicecall.testing.fake_telnyx._fake import FakeTelnyx
from voicecall.testing.fake_telnyx._model import (
    AnswerMode,
    CalleeScript,
    ClearRecord,
    FakeCall,
    FakeEvent,
    Press,
    Reply,
    RestRequest,
    SentWebhook,
    StreamRecord,
    Timings,
)
from voicecall.testing.fake_telnyx._rest import ALLOWED, REQUIRED, TelnyxApiError, validate
from voicecall.testing.fake_telnyx._webhooks import FakeRoutingError, envelope

__all__ = [
    "ALLOWED",
    "REQUIRED",
    "STREAM_KEYS",
    "AnswerMode",
    "CalleeScript",
    "ClearRecord",
    "FakeCall",
    "FakeEvent",
    "FakeRoutingError",
    "FakeTelnyx",
    "Press",
    "Reply",
    "RestRequest",
    "SentWebhook",
    "StreamRecord",
    "TelnyxApiError",
    "Timings",
    "envelope",
    "validate",
]
