"""The shared base of the STT wire-protocol fakes.

A fake is a real ``websockets`` server on ``127.0.0.1:0``. The base handles
what every vendor fake needs:

- the HTTP upgrade: an optional connect delay, the path, a forced rejection
  status, and the vendor hook ``check_handshake`` (auth, query validation)
  which may refuse the upgrade with a vendor-shaped HTTP error;
- one ``ConnRecord`` per connection attempt with what the client sent
  (query, headers with the credential masked, config, control messages,
  audio byte and millisecond counts, keepalives) and what the fake sent;
- ``FakeConn``: an ordered outbox with per-event delays, a queued close, an
  abrupt abort, and the fault injection switches (close or abort after N ms
  of audio, a vendor error event after N ms of audio);
- ``Segmenter``: the energy detector (speech = RMS above a threshold for a
  few windows; an utterance ends after the configured silence), timed by
  samples received, not by the wall clock, so tests can send audio as fast as
  they like;
- audio decoding per negotiated encoding (mu-law, A-law, PCM16 LE).
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import itertools
import json
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

import numpy as np
import numpy.typing as npt
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from voicecall.audio.g711 import mulaw_to_pcm16
from voicecall.audio.resample import pcm16_bytes

DEFAULT_API_KEY = "test-stt-key-0123456789"
DEFAULT_TRANSCRIPT = "hello"

# --------------------------------------------------------------------------- audio


def _alaw_table() -> npt.NDArray[np.int16]:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    sign = a & 0x80
    exponent = (a >> 4) & 0x07
    mantissa = a & 0x0F
    magnitude = np.where(exponent == 0, (mantissa << 4) + 8,
                         ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0))
    return np.where(sign != 0, magnitude, -magnitude).astype(np.int16)


_ALAW = _alaw_table()


def decode_audio(encoding: str, data: bytes) -> npt.NDArray[np.int16]:
    """PCM16 samples of ``data`` in ``encoding`` (mulaw, alaw, or 16-bit LE PCM)."""
    if encoding == "mulaw":
        return mulaw_to_pcm16(data)
    if encoding == "alaw":
        return _ALAW[np.frombuffer(data, dtype=np.uint8)]
    if encoding == "pcm16":
        return pcm16_bytes(data)
    raise ValueError(f"fake cannot decode {encoding!r}")


# --------------------------------------------------------------------------- segmenter

SegKind = Literal["start", "word", "end", "gap"]


@dataclass(frozen=True)
class SegEvent:
    kind: SegKind      # start of speech, one more word's worth of speech, endpoint, long gap
    at_ms: float       # audio time: utterance start for "start", last loud audio for end/gap
    words: int = 0     # for "word": how many words' worth of speech so far


class Segmenter:
    """Energy-based utterance segmentation on PCM16, timed by samples.

    ``start`` after ``min_speech_ms`` of windows louder than ``threshold``
    (RMS, fraction of full scale); ``word`` each ``word_ms`` of loud audio in an
    utterance; ``end`` once ``end_silence_ms`` of quiet follows the last loud
    window; ``gap`` once ``gap_ms`` of quiet does (if set).
    """

    def __init__(self, sample_rate: int, *, threshold: float, end_silence_ms: float,
                 gap_ms: float | None = None, min_speech_ms: float = 40.0,
                 word_ms: float = 100.0, window_ms: int = 10, offset_ms: float = 0.0) -> None:
        self.sample_rate = sample_rate
        self.threshold = threshold
        self.end_silence_ms = end_silence_ms
        self.gap_ms = gap_ms
        self.min_speech_ms = min_speech_ms
        self.word_ms = max(1.0, word_ms)
        self._win = max(1, sample_rate * window_ms // 1000)
        self._win_ms = self._win * 1000 / sample_rate
        self._buf: npt.NDArray[np.int16] = np.zeros(0, dtype=np.int16)
        self.t_ms = offset_ms
        self.state: Literal["idle", "speech", "trailing"] = "idle"
        self._loud_run = 0.0
        self._last_loud_end = 0.0
        self._utt_loud = 0.0
        self._words = 0
        self._end_done = False
        self._gap_done = False

    @property
    def in_speech(self) -> bool:
        return self.state == "speech"

    def feed(self, samples: npt.NDArray[np.int16]) -> list[SegEvent]:
        buf = np.concatenate([self._buf, samples]) if self._buf.size else samples
        n = len(buf) // self._win
        out: list[SegEvent] = []
        if n:
            frames = buf[: n * self._win].reshape(n, self._win).astype(np.float32) / 32768.0
            levels = np.sqrt(np.mean(frames * frames, axis=1))
            for level in levels:
                self._step(float(level) > self.threshold, out)
        self._buf = buf[n * self._win:]
        return out

    def flush(self) -> list[SegEvent]:
        """End the current utterance now (client commit / finalize / end of audio)."""
        if self.state != "speech":
            return []
        self.state = "idle"
        self._end_done = self._gap_done = True
        return [SegEvent("end", self._last_loud_end)]

    def _step(self, loud: bool, out: list[SegEvent]) -> None:
        self.t_ms += self._win_ms
        now = self.t_ms
        if loud:
            self._loud_run += self._win_ms
            self._last_loud_end = now
            if self.state == "speech":
                self._utt_loud += self._win_ms
                self._words_due(now, out)
            elif self._loud_run >= self.min_speech_ms:
                self.state = "speech"
                self._utt_loud = self._loud_run
                self._words = 0
                self._end_done = self._gap_done = False
                out.append(SegEvent("start", now - self._loud_run))
                self._words_due(now, out)
            return
        self._loud_run = 0.0
        if self.state == "idle":
            return
        silence = now - self._last_loud_end
        if not self._end_done and silence >= self.end_silence_ms:
            self._end_done = True
            self.state = "trailing"
            out.append(SegEvent("end", self._last_loud_end))
        if self.gap_ms is not None and not self._gap_done and silence >= self.gap_ms:
            self._gap_done = True
            out.append(SegEvent("gap", self._last_loud_end))
        if self._end_done and (self.gap_ms is None or self._gap_done):
            self.state = "idle"

    def _words_due(self, now: float, out: list[SegEvent]) -> None:
        while self._utt_loud >= (self._words + 1) * self.word_ms:
            self._words += 1
            out.append(SegEvent("word", now, self._words))


# --------------------------------------------------------------------------- records


@dataclass
class ConnRecord:
    """What one client connection did, for test assertions."""

    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]                 # lower-case names; the credential is masked
    authorized: bool = False
    rejected_status: int | None = None      # the upgrade was refused with this status
    config: dict[str, Any] = field(default_factory=dict)     # negotiated settings
    messages: list[dict[str, Any]] = field(default_factory=list)  # client control messages
    audio_bytes: int = 0                    # audio payload bytes received (after base64)
    audio_ms: float = 0.0
    early_audio_bytes: int = 0              # audio that arrived before the fake was ready
    keepalives: int = 0
    sent: list[dict[str, Any]] = field(default_factory=list)  # JSON events the fake sent
    close_code: int | None = None           # code the fake closed with (None: client closed)
    aborted: bool = False
    closed: bool = False

    def q(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None

    def sent_types(self) -> list[str]:
        return [str(e.get("type")) for e in self.sent]

    def message_types(self) -> list[str]:
        return [str(m.get("type")) for m in self.messages]


def json_response(status: int, body: Mapping[str, Any] | str,
                  headers: Sequence[tuple[str, str]] = ()) -> Response:
    """A refused upgrade: ``status`` with a JSON (or text) body."""
    is_text = isinstance(body, str)
    data = (body if isinstance(body, str) else json.dumps(body)).encode()
    h = Headers([("Content-Type", "text/plain; charset=utf-8" if is_text else "application/json"),
                 ("Content-Length", str(len(data))), ("Connection", "close"), *headers])
    return Response(status, http.HTTPStatus(status).phrase, h, data)


def mask_key(key: str) -> str:
    """How vendors echo a wrong key: first two and last two characters."""
    return f"{key[:2]}***{key[-2:]}" if len(key) > 4 else "***"


# --------------------------------------------------------------------------- connection


@dataclass
class _Out:
    kind: Literal["event", "close"]
    delay: float
    payload: dict[str, Any] | None = None
    code: int = 1000
    reason: str = ""


class FakeConn:
    """One accepted connection: an ordered, delayed outbox plus fault switches."""

    def __init__(self, server: FakeSttServer, ws: ServerConnection, record: ConnRecord) -> None:
        self.server = server
        self.ws = ws
        self.record = record
        self.closing = False
        self.close_queued = False
        self._outbox: asyncio.Queue[_Out] = asyncio.Queue()
        self._error_done = False
        self._ids = itertools.count(1)
        self.sender = asyncio.get_running_loop().create_task(self._send_loop())

    def next_id(self, prefix: str) -> str:
        return f"{prefix}_{next(self._ids):04d}"

    def send(self, event: dict[str, Any], delay: float = 0.0) -> None:
        """Queue ``event``; it goes out after the ones before it, ``event_delay + delay`` later."""
        if not self.closing:
            self._outbox.put_nowait(_Out("event", self.server.event_delay + delay, event))

    def close(self, code: int = 1000, reason: str = "", delay: float = 0.0) -> None:
        """Close after everything already queued has been sent."""
        if not self.closing:
            self.closing = self.close_queued = True
            self._outbox.put_nowait(_Out("close", delay, code=code, reason=reason))

    def abort(self) -> None:
        """Drop the TCP connection now, without a close frame (the client sees 1006)."""
        self.closing = True
        self.record.aborted = True
        self.ws.transport.abort()

    def on_audio(self, nbytes: int, ms: float) -> bool:
        """Count audio and apply fault injection; False when the audio must be ignored."""
        if self.closing:
            return False
        rec, srv = self.record, self.server
        rec.audio_bytes += nbytes
        rec.audio_ms += ms
        if srv.error_after_ms is not None and not self._error_done \
                and rec.audio_ms >= srv.error_after_ms:
            self._error_done = True
            srv.inject_error(self)
            if self.closing:
                return False
        if srv.close_after_ms is not None and rec.audio_ms >= srv.close_after_ms:
            if srv.close_code is None:
                self.abort()
            else:
                self.close(srv.close_code, srv.close_reason)
            return False
        return True

    async def _send_loop(self) -> None:
        while True:
            item = await self._outbox.get()
            if item.delay > 0:
                await asyncio.sleep(item.delay)
            try:
                if item.kind == "event" and item.payload is not None:
                    self.record.sent.append(item.payload)   # before the client can react
                    await self.ws.send(json.dumps(item.payload))
                elif item.kind == "close":
                    self.record.close_code = item.code
                    await self.ws.close(item.code, item.reason)
                    return
            except ConnectionClosed:
                return


# --------------------------------------------------------------------------- server


class FakeSttServer:
    """Base of the vendor fakes; use as ``async with Fake(...) as fake:``.

    Timing knobs: ``connect_delay`` (before the upgrade is answered),
    ``ready_delay`` (before the vendor's "ready" message), ``event_delay``
    (before every event), ``final_delay`` (extra, before a final transcript).
    Faults: ``close_after_ms`` of audio received -> close with ``close_code``
    (``None``: drop the TCP connection); ``error_after_ms`` -> the vendor's
    error event; ``reject_status`` -> refuse every upgrade with that status.
    Detection: ``rms_threshold`` (fraction of full scale), ``min_speech_ms``,
    ``word_ms`` (speech per interim word).
    """

    path = "/"

    def __init__(self, transcripts: Sequence[str] = (), *, api_key: str = DEFAULT_API_KEY,
                 connect_delay: float = 0.0, ready_delay: float = 0.0,
                 event_delay: float = 0.0, final_delay: float = 0.0,
                 word_ms: float = 100.0, rms_threshold: float = 0.02,
                 min_speech_ms: float = 40.0, close_after_ms: float | None = None,
                 close_code: int | None = 1011, close_reason: str = "",
                 error_after_ms: float | None = None,
                 reject_status: int | None = None) -> None:
        self.transcripts = list(transcripts)
        self.api_key = api_key
        self.connect_delay = connect_delay
        self.ready_delay = ready_delay
        self.event_delay = event_delay
        self.final_delay = final_delay
        self.word_ms = word_ms
        self.rms_threshold = rms_threshold
        self.min_speech_ms = min_speech_ms
        self.close_after_ms = close_after_ms
        self.close_code = close_code
        self.close_reason = close_reason
        self.error_after_ms = error_after_ms
        self.reject_status = reject_status
        self.connections: list[ConnRecord] = []
        self._next_transcript = 0
        self._server: Server | None = None
        self._records: dict[int, ConnRecord] = {}
        self.port = 0

    # ------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> FakeSttServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        self._server = await serve(self._handle, "127.0.0.1", 0,
                                   process_request=self._process_request,
                                   max_size=4 * 1024 * 1024, ping_interval=None)
        sock = next(iter(self._server.sockets))
        self.port = int(sock.getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            self._server = None

    @property
    def origin(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The vendor endpoint on this fake, without a query string."""
        return self.origin + self.path

    @property
    def last(self) -> ConnRecord:
        if not self.connections:
            raise AssertionError("no connection reached the fake")
        return self.connections[-1]

    def next_transcript(self) -> str:
        if self._next_transcript < len(self.transcripts):
            self._next_transcript += 1
            return self.transcripts[self._next_transcript - 1]
        return DEFAULT_TRANSCRIPT

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 2.0) -> None:
        """Poll ``predicate`` until true; AssertionError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError("condition not met in time")
            await asyncio.sleep(0.005)

    # ------------------------------------------------------------ vendor hooks

    def check_handshake(self, request: Request, record: ConnRecord) -> Response | None:
        """Validate auth and query; return a vendor-shaped refusal or None to accept."""
        return None

    async def serve(self, conn: FakeConn) -> None:
        raise NotImplementedError

    def inject_error(self, conn: FakeConn) -> None:
        """Send the vendor's error event (and close, where the vendor would)."""
        conn.close(1011, "injected error")

    # ------------------------------------------------------------ internals

    async def _process_request(self, connection: ServerConnection,
                               request: Request) -> Response | None:
        if self.connect_delay:
            await asyncio.sleep(self.connect_delay)
        parts = urlsplit(request.path)
        headers = {k.lower(): v for k, v in request.headers.raw_items()}
        for name in ("authorization", "xi-api-key", "x-api-key"):
            if name in headers:
                scheme, _, _ = headers[name].partition(" ")
                headers[name] = f"{scheme} ***" if _ else "***"
        record = ConnRecord(path=parts.path, query=parse_qs(parts.query, keep_blank_values=True),
                            headers=headers)
        self.connections.append(record)
        if parts.path != self.path:
            record.rejected_status = 404
            return json_response(404, {"error": f"no route {parts.path}"})
        if self.reject_status is not None:
            record.rejected_status = self.reject_status
            return json_response(self.reject_status, {"error": "injected rejection"})
        response = self.check_handshake(request, record)
        if response is not None:
            record.rejected_status = response.status_code
            return response
        self._records[id(connection)] = record
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        record = self._records.pop(id(ws))
        conn = FakeConn(self, ws, record)
        try:
            await self.serve(conn)
        except ConnectionClosed:
            pass
        finally:
            if conn.close_queued and not conn.sender.done():
                await asyncio.wait({conn.sender}, timeout=2.0)
            conn.sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await conn.sender
            record.closed = True


def new_request_id() -> str:
    return str(uuid.uuid4())
