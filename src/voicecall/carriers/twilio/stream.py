"""One Twilio Media Stream: inbound audio to STT and barge-in, outbound paced playback.

The session itself (task group, STT, barge-in, playback) is the shared
``MediaStreamSession``; this is Twilio's framing of it.
"""

from __future__ import annotations

import logging

from voicecall.carriers.base import CarrierHost
from voicecall.carriers.streams import MediaStreamSession
from voicecall.carriers.twilio import media
from voicecall.gateway.media import MediaSocket
from voicecall.speech.stt.base import SttSession


class StreamSession(MediaStreamSession[media.Frame]):
    carrier = "twilio"
    log = logging.getLogger("voicecall.twilio.stream")

    def __init__(self, ws: MediaSocket, start: media.Start, call_id: str,
                 host: CarrierHost, stt: SttSession | None) -> None:
        super().__init__(ws, call_id, host, stt, provider_call_id=start.call_sid,
                         stream_id=start.stream_sid)

    async def _send_media(self, frame: bytes) -> None:
        await self.ws.send_text(media.encode_media(self.stream_id, frame))

    async def _send_mark(self, name: str) -> None:
        await self.ws.send_text(media.encode_mark(self.stream_id, name))

    async def _send_clear(self) -> None:
        await self.ws.send_text(media.encode_clear(self.stream_id))

    def _parse(self, text: str) -> media.Frame:
        return media.parse_frame(text)

    async def _handle_frame(self, frame: media.Frame) -> bool:
        if isinstance(frame, media.Media):
            await self._on_audio(frame.payload)
        elif isinstance(frame, media.Mark):
            self.queue.on_mark(frame.name)
        elif isinstance(frame, media.Dtmf):
            await self._report_dtmf(frame.digit)
        return isinstance(frame, media.Stop)
