"""A fake Plivo on a real loopback socket, speaking Plivo's wire protocols.

It accepts the real REST request shapes (``/v1/Account/{auth_id}/Call/`` and the
per-call ``Speak``/``DTMF``/``Stream``/transfer resources, JSON bodies, trailing
slashes), then plays Plivo's part: V3-signed ring/answer/hangup callbacks, a strict
Plivo XML interpreter (``Speak``, ``GetInput``, ``Stream``, ``Wait``, ``DTMF``,
``Hangup``, ``Redirect``, ``Play``), and bidirectional audio streams dialled to the
gateway's WebSocket in the negotiated format::

    async with FakePlivo(AUTH_ID, AUTH_TOKEN,
                         callee=CalleeScript(replies=["Yes, tomorrow works."]),
                         public_to_local={"voice.example.com": gateway_netloc}) as fake:
        ...  # point plivo.apiBaseUrl at fake.api_base
        call = fake.latest_call
        await fake.wait_for(lambda: call.status == "completed")
        assert call.heard == [...]

Deviations from Plivo are deliberate simplifications, noted where they occur: no
bulk calls or B legs, application errors end the call with status ``failed``, a
silent ``<GetInput>`` falls through to the next element without calling its action,
and a dropped stream waits for ``reconnect_stream`` instead of redialling itself.
"""

from voicecall.testing.fake_carrier._audio import rms, silence, tone_burst
from voicecall.testing.fake_carrier._webhooks import FakeRoutingError
from voicecall.testing.fake_plivo._engine import CONFIDENCE
from voicecall.testing.fake_plivo._fake import FakePlivo
from voicecall.testing.fake_plivo._model import (
    AnswerMode,
    CalleeScript,
    ClearRecord,
    FakeCall,
    FakeEvent,
    PlivoError,
    Press,
    Reply,
    RestRequest,
    SentWebhook,
    StreamRecord,
    Timings,
)
from voicecall.testing.fake_plivo._xml import PlivoXmlError, parse_xml

__all__ = [
    "CONFIDENCE",
    "AnswerMode",
    "CalleeScript",
    "ClearRecord",
    "FakeCall",
    "FakeEvent",
    "FakePlivo",
    "FakeRoutingError",
    "PlivoError",
    "PlivoXmlError",
    "Press",
    "Reply",
    "RestRequest",
    "SentWebhook",
    "StreamRecord",
    "Timings",
    "parse_xml",
    "rms",
    "silence",
    "tone_burst",
]
