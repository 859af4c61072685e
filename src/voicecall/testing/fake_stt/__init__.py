"""Fakes of the streaming STT vendors' WebSocket protocols, for tests.

Each is a real ``websockets`` server on loopback that checks auth and
configuration like the vendor, segments the audio it receives with an energy
detector, and answers with the vendor's events in the vendor's order::

    async with FakeDeepgram(transcripts=["where is my order"]) as fake:
        stt = deepgram.create({"apiKey": fake.api_key, "endpoint": fake.url})
        ...
        assert fake.last.config["encoding"] == "mulaw"
"""

from voicecall.testing.fake_stt._server import (
    DEFAULT_API_KEY,
    ConnRecord,
    FakeConn,
    FakeSttServer,
    SegEvent,
    Segmenter,
    decode_audio,
)
from voicecall.testing.fake_stt.deepgram import FakeDeepgram
from voicecall.testing.fake_stt.openai import FakeOpenAITranscription
from voicecall.testing.fake_stt.xai import FakeXai

__all__ = [
    "DEFAULT_API_KEY",
    "ConnRecord",
    "FakeConn",
    "FakeDeepgram",
    "FakeOpenAITranscription",
    "FakeSttServer",
    "FakeXai",
    "SegEvent",
    "Segmenter",
    "decode_audio",
]
