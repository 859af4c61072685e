"""One Media Streams WebSocket, dialled from the fake to the gateway like Twilio does.

Twilio's side of ``<Connect><Stream>``: send ``connected`` and ``start``, then the
caller's audio as 20 ms ``media`` frames (plus ``dtmf``); play the gateway's
``media`` back at real time, echo each ``mark`` once everything queued before it
has played, and on ``clear`` drop unplayed audio and echo pending marks at once.
The carrier-neutral session lives in ``fake_carrier._stream``.
"""

from __future__ import annotations

from voicecall.carriers.twilio.media import (
    Clear,
    ClientFrame,
    Mark,
    OutboundMedia,
    encode_connected,
    encode_dtmf,
    encode_inbound_media,
    encode_mark_echo,
    encode_start,
    encode_stop,
    parse_client_frame,
)
from voicecall.carriers.twilio.signature import SIGNATURE_HEADER
from voicecall.testing.fake_carrier._audio import FRAME_BYTES, SILENCE_BYTE
from voicecall.testing.fake_carrier._stream import MediaStreamSession, SessionHost
from voicecall.testing.fake_twilio._model import (
    AppError,
    ClearRecord,
    FakeCall,
    StreamRecord,
)
from voicecall.testing.fake_twilio._webhooks import WS_USER_AGENT, Target


class StreamSession(MediaStreamSession):
    user_agent = WS_USER_AGENT
    stream_key = "stream_sid"

    call: FakeCall
    record: StreamRecord

    def __init__(self, host: SessionHost, call: FakeCall, record: StreamRecord) -> None:
        super().__init__(host, call, record, frame_bytes=FRAME_BYTES,
                         silence=bytes([SILENCE_BYTE]) * FRAME_BYTES)

    @property
    def stream_sid(self) -> str:
        return self.record.stream_sid

    @property
    def _call_id(self) -> str:
        return self.call.sid

    @property
    def _stream_ref(self) -> str:
        return self.record.stream_sid

    async def open(self, target: Target, signature: str, headers: dict[str, str]) -> bool:
        """Dial the gateway; False (with the reason recorded) if the upgrade fails."""
        extra = {SIGNATURE_HEADER: signature}
        extra.update({k: v for k, v in headers.items() if k.lower() != "host"})
        return await self._dial(target, extra)

    async def _hello(self) -> None:
        await self._send(encode_connected())
        await self._send(encode_start(self.stream_sid, self.call.sid, self.call.account_sid,
                                      custom_parameters=self.record.custom_parameters,
                                      sequence_number=self._next_seq()))

    def _record_failure(self, why: str) -> None:
        # 31920: Stream - WebSocket - Handshake Error.
        self.call.errors.append(AppError(31920, f"Stream connection failed: {why}"))

    def _encode_stop(self) -> str:
        return encode_stop(self.stream_sid, self.call.sid, self.call.account_sid,
                           sequence_number=self._next_seq())

    def _encode_media(self, frame: bytes) -> str:
        return encode_inbound_media(self.stream_sid, frame, sequence_number=self._next_seq(),
                                    chunk=self._chunk, timestamp_ms=(self._chunk - 1) * 20)

    def _encode_dtmf(self, digit: str) -> str:
        return encode_dtmf(self.stream_sid, digit, sequence_number=self._next_seq())

    def _warn_binary(self) -> None:
        # 31950: Stream - Protocol - Invalid Message Type (binary).
        self.call.errors.append(AppError(31950, "binary frame on media stream", "warning"))

    def _warn_invalid(self, exc: Exception) -> None:
        # 31951: Stream - Protocol - Invalid Message.
        self.call.errors.append(AppError(31951, f"invalid media stream message: {exc}",
                                         "warning"))

    def _parse(self, message: str) -> ClientFrame:
        return parse_client_frame(message)

    async def _dispatch(self, frame: ClientFrame) -> None:
        if frame.stream_sid != self.stream_sid:
            self.call.errors.append(AppError(
                31951, f"streamSid {frame.stream_sid!r} is not {self.stream_sid!r}", "warning"))
            return
        if isinstance(frame, OutboundMedia):
            self.call.outbound_audio.extend(frame.payload)
            self._queue_audio(len(frame.payload))
        elif isinstance(frame, Mark):
            self._queue_mark(frame.name)
        elif isinstance(frame, Clear):
            await self._clear()

    async def _mark_played(self, name: str) -> None:
        await self._send(encode_mark_echo(self.stream_sid, name,
                                          sequence_number=self._next_seq()))
        self.call.marks_echoed.append(name)
        self.host._log(self.call.sid, "stream.mark", name=name)

    async def _cleared(self, dropped: int, marks: tuple[str, ...]) -> None:
        self.call.clears.append(ClearRecord(self.stream_sid, dropped, marks))
        self.host._log(self.call.sid, "stream.clear", dropped_bytes=dropped, marks=list(marks))
        for name in marks:  # Twilio answers every pending mark when a clear flushes it
            await self._mark_played(name)
