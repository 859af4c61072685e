"""A fake Twilio on a real loopback socket, speaking Twilio's wire protocols.

It accepts the real REST request shapes (``/2010-04-01/Accounts/{sid}/Calls.json``),
then plays Twilio's part: signed status callbacks and voice/Gather/Redirect webhooks,
a strict TwiML interpreter, and Media Streams dialled to the gateway's WebSocket::

    async with FakeTwilio(ACCOUNT_SID, AUTH_TOKEN,
                          callee=CalleeScript(replies=["Yes, tomorrow works."]),
                          public_to_local={"voice.example.com": gateway_netloc}) as fake:
        ...  # point the gateway's Twilio REST base URL at fake.api_base
        call = fake.latest_call
        await fake.wait_for(lambda: call.status == "completed")
        assert call.heard == [...]

Deviations from Twilio are deliberate simplifications, noted where they occur:
one status callback at a time per call, application errors end the call with
status ``failed``, and only the verbs the gateway uses are simulated.
"""

from voicecall.testing.fake_twilio._audio import mulaw_encode, rms, silence, tone_burst
from voicecall.testing.fake_twilio._engine import APP_ERROR_SPEECH, CONFIDENCE
from voicecall.testing.fake_twilio._fake import FakeTwilio
from voicecall.testing.fake_twilio._model import (
    AnswerMode,
    AppError,
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
from voicecall.testing.fake_twilio._twiml import TwimlError, parse_twiml
from voicecall.testing.fake_twilio._webhooks import FakeRoutingError

__all__ = [
    "APP_ERROR_SPEECH",
    "CONFIDENCE",
    "AnswerMode",
    "AppError",
    "CalleeScript",
    "ClearRecord",
    "FakeCall",
    "FakeEvent",
    "FakeRoutingError",
    "FakeTwilio",
    "Press",
    "Reply",
    "RestRequest",
    "SentWebhook",
    "StreamRecord",
    "Timings",
    "TwimlError",
    "mulaw_encode",
    "parse_twiml",
    "rms",
    "silence",
    "tone_burst",
]
