"""One Telnyx media stream: inbound audio to STT and barge-in, outbound paced playback.

The session itself (task group, STT, barge-in, playback) is the shared
``MediaStreamSession``, as for Twilio; this is Telnyx's framing of it. Only the
inbound track is listened to. Keypresses seen on the stream go to ``on_dtmf``,
which the carrier merges with the ``call.dtmf.received`` webhooks.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from voicecall.carriers.base import CarrierHost
from voicecall.carriers.streams import MediaStreamSession
from voicecall.carriers.telnyx import media
from voicecall.gateway.media import MediaSocket
from voicecall.speech.stt.base import SttSession


class StreamSession(MediaStreamSession[media.Frame]):
    carrier = "telnyx"
    log = logging.getLogger("voicecall.telnyx.stream")

    def __init__(self, ws: MediaSocket, start: media.Start, call_id: str,
                 host: CarrierHost, stt: SttSession | None,
                 on_dtmf: Callable[[str], Awaitable[None]]) -> None:
        super().__init__(ws, call_id, host, stt, provider_call_id=start.call_control_id,
                         stream_id=start.stream_id)
        self.on_dtmf = on_dtmf
        self.stopped = False  # Telnyx said ``stop`` (vs. the socket just dropping)

    async def _send_media(self, frame: bytes) -> None:
        await self.ws.send_text(media.encode_media(frame))

    async def _send_mark(self, name: str) -> None:
        await self.ws.send_text(media.encode_mark(name))

    async def _send_clear(self) -> None:
        await self.ws.send_text(media.encode_clear())

    def _parse(self, text: str) -> media.Frame:
        return media.parse_frame(text)

    async def _handle_frame(self, frame: media.Frame) -> bool:
        if isinstance(frame, media.Media):
            if frame.track == "inbound":
                await self._on_audio(frame.payload)
        elif isinstance(frame, media.Mark):
            self.queue.on_mark(frame.name)
        elif isinstance(frame, media.Dtmf):
            await self.on_dtmf(frame.digit)
        elif isinstance(frame, media.Error):
            self.log.warning("stream.error_frame", extra={
                "call_id": self.call_id, "why": f"{frame.code} {frame.title} {frame.detail}"})
        elif isinstance(frame, media.Stop):
            self.stopped = True
            return True
        return False
