"""One media-streaming WebSocket, dialled from the fake to the gateway like Telnyx does.

Telnyx's side: send ``connected`` (with the ``x-telnyx-streaming-auth-token`` when the
dial set one, also sent as a header) and ``start``, then the caller's audio as 20 ms
PCMU ``media`` frames (plus ``dtmf``); play the gateway's ``media`` back at real time,
echo each ``mark`` once everything queued before it has played (at once if nothing
is queued), and on ``clear`` drop unplayed audio and return pending marks.
The carrier-neutral session lives in ``fake_carrier._stream``.
"""

from __future__ import annotations

from voicecall.carriers.telnyx.media import (
    AUTH_TOKEN_FIELD,
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
from voicecall.testing.fake_carrier._audio import FRAME_BYTES, SILENCE_BYTE
from voicecall.testing.fake_carrier._stream import MediaStreamSession, SessionHost
from voicecall.testing.fake_telnyx._model import ClearRecord, FakeCall, StreamRecord
from voicecall.testing.fake_telnyx._webhooks import Target

WS_USER_AGENT = "Telnyx-Media-Streaming/1.0"


class StreamSession(MediaStreamSession):
    user_agent = WS_USER_AGENT
    scripted_dtmf = False  # the engine presses the script's keys (webhooks and stream)

    call: FakeCall
    record: StreamRecord

    def __init__(self, host: SessionHost, call: FakeCall, record: StreamRecord,
                 custom_parameters: dict[str, str] | None = None) -> None:
        super().__init__(host, call, record, frame_bytes=FRAME_BYTES,
                         silence=bytes([SILENCE_BYTE]) * FRAME_BYTES)
        self.custom_parameters = dict(custom_parameters or {})

    @property
    def stream_id(self) -> str:
        return self.record.stream_id

    @property
    def _call_id(self) -> str:
        return self.call.call_control_id

    @property
    def _stream_ref(self) -> str:
        return self.record.stream_id

    async def open(self, target: Target) -> bool:
        """Dial the gateway; False (with the reason recorded) if the upgrade fails."""
        headers: dict[str, str] = {}
        if self.record.auth_token:
            headers[AUTH_TOKEN_FIELD] = self.record.auth_token
        return await self._dial(target, headers)

    async def _hello(self) -> None:
        call = self.call
        await self._send(encode_connected(auth_token=self.record.auth_token))
        await self._send(encode_start(
            self.stream_id, call.call_control_id, call_session_id=call.call_session_id,
            from_number=call.from_, to_number=call.to, client_state=call.client_state,
            custom_parameters=self.custom_parameters, sequence_number=self._next_seq()))

    def _record_failure(self, why: str) -> None:
        self.call.errors.append(f"stream connection failed: {why}")

    def _encode_stop(self) -> str:
        return encode_stop(self.stream_id, self.call.call_control_id,
                           sequence_number=self._next_seq())

    def _encode_media(self, frame: bytes) -> str:
        return encode_inbound_media(self.stream_id, frame, sequence_number=self._next_seq(),
                                    chunk=self._chunk, timestamp_ms=(self._chunk - 1) * 20)

    def _encode_dtmf(self, digit: str) -> str:
        return encode_dtmf(self.stream_id, digit, sequence_number=self._next_seq())

    def _warn_binary(self) -> None:
        self.call.errors.append("binary frame on media stream (Telnyx expects JSON media)")

    def _warn_invalid(self, exc: Exception) -> None:
        self.call.errors.append(f"invalid media stream message: {exc}")

    def _parse(self, message: str) -> ClientFrame:
        return parse_client_frame(message)

    async def _dispatch(self, frame: ClientFrame) -> None:
        if isinstance(frame, OutboundMedia):
            if len(frame.payload) < FRAME_BYTES:
                self.call.errors.append(
                    f"media chunk shorter than 20 ms ({len(frame.payload)} B)")
            self.call.outbound_audio.extend(frame.payload)
            self._queue_audio(len(frame.payload))
        elif isinstance(frame, Mark):
            self._queue_mark(frame.name)
        elif isinstance(frame, Clear):
            await self._clear()

    async def _mark_played(self, name: str) -> None:
        await self._send(encode_mark_echo(self.stream_id, name,
                                          sequence_number=self._next_seq()))
        self.call.marks_echoed.append(name)
        self.host._log(self.call.call_control_id, "stream.mark", name=name)

    async def _cleared(self, dropped: int, marks: tuple[str, ...]) -> None:
        self.call.clears.append(ClearRecord(self.stream_id, dropped, marks))
        self.host._log(self.call.call_control_id, "stream.clear", dropped_bytes=dropped,
                       marks=list(marks))
        for name in marks:
            await self._mark_played(name)
