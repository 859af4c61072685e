"""One Plivo audio stream: inbound audio to STT and barge-in, outbound paced playback.

Audio crosses the socket in the negotiated format (``start.mediaFormat``) and is
mu-law 8 kHz everywhere else: inbound payloads are converted and re-framed into
20 ms frames before STT and the barge-in detector; outbound frames from the
``PlaybackQueue`` are converted just before ``playAudio``. Playback marks are Plivo
checkpoints (``playedStream`` settles them); barge-in sends ``clearAudio``.

The session itself (task group, STT, barge-in, playback) is the shared
``MediaStreamSession``; this is Plivo's framing and audio conversion around it.
"""

from __future__ import annotations

import asyncio
import logging

from voicecall.audio.g711 import FRAME_BYTES
from voicecall.carriers.base import CarrierHost
from voicecall.carriers.plivo import media
from voicecall.carriers.streams import MediaStreamSession
from voicecall.gateway.media import MediaSocket
from voicecall.speech.stt.base import SttSession

DTMF_PAUSES_S = {"w": 0.5, "W": 1.0}


class StreamSession(MediaStreamSession[media.Frame]):
    carrier = "plivo"
    log = logging.getLogger("voicecall.plivo.stream")

    def __init__(self, ws: MediaSocket, start: media.Start, call_id: str,
                 host: CarrierHost, stt: SttSession | None) -> None:
        super().__init__(ws, call_id, host, stt, provider_call_id=start.call_id,
                         stream_id=start.stream_id)
        self.format = start.format
        self.codec = media.AudioCodec(start.format)
        self._inbound = b""
        self._send_lock = asyncio.Lock()

    # -- outbound --------------------------------------------------------------------

    async def _send_media(self, frame: bytes) -> None:
        payload = self.codec.encode(frame)
        if payload:
            await self.ws.send_text(media.encode_play_audio(payload, self.format))

    async def _send_mark(self, name: str) -> None:
        tail = self.codec.flush_outbound()
        if tail:
            await self.ws.send_text(media.encode_play_audio(tail, self.format))
        await self.ws.send_text(media.encode_checkpoint(self.stream_id, name))

    async def _send_clear(self) -> None:
        self.codec.flush_outbound()  # whatever the filter holds belongs to the cut audio
        await self.ws.send_text(media.encode_clear_audio(self.stream_id))

    async def send_dtmf(self, digits: str) -> None:
        """Keys to the caller via ``sendDTMF``; ``w``/``W`` pause between runs of digits."""
        async with self._send_lock:
            run = ""
            for key in digits:
                if key in DTMF_PAUSES_S:
                    if run:
                        await self.ws.send_text(media.encode_send_dtmf(run))
                        run = ""
                    await asyncio.sleep(DTMF_PAUSES_S[key])
                else:
                    run += key
            if run:
                await self.ws.send_text(media.encode_send_dtmf(run))

    # -- inbound ---------------------------------------------------------------------

    def _parse(self, text: str) -> media.Frame:
        return media.parse_frame(text)

    async def _handle_frame(self, frame: media.Frame) -> bool:
        if isinstance(frame, media.Media):
            await self._on_inbound(self.codec.decode(frame.payload))
        elif isinstance(frame, media.PlayedStream):
            self.queue.on_mark(frame.name)
        elif isinstance(frame, media.Dtmf):
            await self._report_dtmf(frame.digit)
        # ClearedAudio: the queue already settled itself when it sent clearAudio.
        return isinstance(frame, media.Stop)

    async def _on_inbound(self, mulaw: bytes) -> None:
        self._inbound += mulaw
        while len(self._inbound) >= FRAME_BYTES:
            frame, self._inbound = self._inbound[:FRAME_BYTES], self._inbound[FRAME_BYTES:]
            await self._on_audio(frame)
