"""One Plivo audio stream, dialled from the fake to the gateway like Plivo does.

Plivo's side of ``<Stream bidirectional="true">``: send ``start`` with the negotiated
``mediaFormat``, then the caller's audio as 20 ms ``media`` frames in that format
(plus ``dtmf``); play the gateway's ``playAudio`` back at real time (refusing a
format other than the negotiated one), answer each ``checkpoint`` with
``playedStream`` once everything queued before it has played, and on
``clearAudio`` drop unplayed audio and pending checkpoints and answer
``clearedAudio``. ``sendDTMF`` digits are recorded as sent to the callee.
The carrier-neutral session lives in ``fake_carrier._stream``.
"""

from __future__ import annotations

from typing import Any, Protocol

from voicecall.carriers.plivo.media import (
    MULAW,
    AudioCodec,
    Checkpoint,
    ClearAudio,
    ClientFrame,
    PlayAudio,
    SendDtmf,
    encode_audio,
    encode_cleared_audio,
    encode_dtmf,
    encode_media,
    encode_played_stream,
    encode_start,
    encode_stop,
    parse_client_frame,
)
from voicecall.testing.fake_carrier._stream import MediaStreamSession, SessionHost
from voicecall.testing.fake_plivo._model import (
    ClearRecord,
    FakeCall,
    PlivoError,
    StreamRecord,
)
from voicecall.testing.fake_plivo._webhooks import WS_USER_AGENT, Target


class StreamHost(SessionHost, Protocol):
    auth_id: str


class StreamSession(MediaStreamSession):
    user_agent = WS_USER_AGENT

    host: StreamHost
    call: FakeCall
    record: StreamRecord

    def __init__(self, host: StreamHost, call: FakeCall, record: StreamRecord) -> None:
        fmt = record.format
        frame_bytes = fmt.bytes_per_20ms
        silence = (b"\xff" if fmt.encoding == MULAW else b"\x00\x00") * \
            (frame_bytes // (1 if fmt.encoding == MULAW else 2))
        super().__init__(host, call, record, frame_bytes=frame_bytes, silence=silence)
        self.format = fmt
        self._decoder = AudioCodec(fmt)

    @property
    def stream_id(self) -> str:
        return self.record.stream_id

    @property
    def _call_id(self) -> str:
        return self.call.call_uuid

    @property
    def _stream_ref(self) -> str:
        return self.record.stream_id

    async def open(self, target: Target) -> bool:
        """Dial the gateway; False (with the reason recorded) if the upgrade fails."""
        return await self._dial(target)

    async def _hello(self) -> None:
        await self._send(encode_start(
            self.stream_id, self.call.call_uuid, self.host.auth_id, self.format,
            extra_headers=self.record.extra_headers.replace(",", ";"),
            sequence_number=self._next_seq()))

    def _started_data(self) -> dict[str, Any]:
        return {"format": self.format.content_type}

    def _record_failure(self, why: str) -> None:
        self.call.errors.append(PlivoError(0, f"stream connection failed: {why}"))

    def _encode_stop(self) -> str:
        return encode_stop(self.stream_id, sequence_number=self._next_seq())

    def _encode_media(self, frame: bytes) -> str:
        return encode_media(self.stream_id, frame, sequence_number=self._next_seq(),
                            chunk=self._chunk, timestamp_ms=(self._chunk - 1) * 20)

    def _encode_dtmf(self, digit: str) -> str:
        return encode_dtmf(self.stream_id, digit, sequence_number=self._next_seq())

    def _to_wire(self, mulaw: bytes) -> bytes:
        return encode_audio(mulaw, self.format)

    def _warn(self, message: str) -> None:
        self.call.errors.append(PlivoError(0, message, "warning"))
        self.host._log(self.call.call_uuid, "stream.warning", message=message)

    def _warn_binary(self) -> None:
        self._warn("binary frame on audio stream")

    def _warn_invalid(self, exc: Exception) -> None:
        self._warn(f"invalid audio stream message: {exc}")

    def _parse(self, message: str) -> ClientFrame:
        return parse_client_frame(message)

    async def _dispatch(self, frame: ClientFrame) -> None:
        call = self.call
        sid = getattr(frame, "stream_id", None)
        if sid is not None and sid != self.stream_id:
            self._warn(f"streamId {sid!r} is not {self.stream_id!r}")
            return
        if isinstance(frame, PlayAudio):
            if not self.record.bidirectional:
                self._warn("playAudio on a stream that is not bidirectional")
                return
            if frame.format != self.format:
                # Plivo does not switch codecs mid-stream: audio in another format is noise.
                self._warn(f"playAudio as {frame.format.content_type} on a "
                           f"{self.format.content_type} stream")
                return
            call.outbound_raw.extend(frame.payload)
            call.outbound_audio.extend(self._decoder.decode(frame.payload))
            self._queue_audio(len(frame.payload))
        elif isinstance(frame, Checkpoint):
            self._queue_mark(frame.name)
        elif isinstance(frame, ClearAudio):
            await self._clear()
        elif isinstance(frame, SendDtmf):
            call.digits_sent.append(frame.digits)
            self.host._log(call.call_uuid, "stream.send_dtmf", digits=frame.digits)

    async def _mark_played(self, name: str) -> None:
        await self._send(encode_played_stream(self.stream_id, name,
                                              sequence_number=self._next_seq()))
        self.call.checkpoints_played.append(name)
        self.host._log(self.call.call_uuid, "stream.checkpoint", name=name)

    async def _cleared(self, dropped: int, marks: tuple[str, ...]) -> None:
        self.call.clears.append(ClearRecord(self.stream_id, dropped, marks))
        self.host._log(self.call.call_uuid, "stream.clear", dropped_bytes=dropped,
                       checkpoints=list(marks))
        await self._send(encode_cleared_audio(self.stream_id, sequence_number=self._next_seq()))
