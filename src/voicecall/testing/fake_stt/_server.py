"""The shared base of the STT wire-protocol fakes.

A fake is a real ``websockets`` server on ``127.0.0.1:0``. The base handles
what every vendor fake needs:

- the HTTP upgrade: an optional connect delay, the path, a forced rejection
  status, and the vendor hook ``check_handshake`` (auth, query validation)
  which may refuse the upgrade with a vendor-shaped HTTP error;
- one ``ConnRecord`` per connection attempt with what the client sent
  (query, headers with the credential masked, config, control messages,
  audio byte and millisecond counts, keepalives) and what the fake sent;
- ``FakeConn``: an ordered ``Outbox`` with per-event delays and a queued
  close, an abrupt abort, and the fault injection switches (close or abort
  after N ms of audio, a vendor error event after N ms of audio); a fake
  whose connections send differently returns its own from ``new_conn``;
- ``Segmenter``: the energy detector (speech = RMS above a threshold for a
  few windows; an utterance ends after the configured silence), timed by
  samples received, not by the wall clock, so tests can send audio as fast as
  they like;
- audio decoding per negotiated encoding (mu-law, A-law, PCM16 LE).

``LoopbackServer`` below ``FakeSttServer`` is only the server's life (start on
a free port, stop, scripted transcripts, ``wait_for``); ``JsonAudioFake`` builds
on it for the vendors whose audio travels as base64 in JSON messages and whose
fakes keep every byte (ElevenLabs Scribe, Mistral Voxtral).
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import itertools
import json
import math
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, Self, TypeVar
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


def alaw_to_pcm16(data: bytes) -> npt.NDArray[np.int16]:
    """G.711 A-law -> PCM16 (the fakes' own table, independent of ``voicecall.audio``)."""
    return _ALAW[np.frombuffer(data, dtype=np.uint8)]


def decode_audio(encoding: str, data: bytes) -> npt.NDArray[np.int16]:
    """PCM16 samples of ``data`` in ``encoding`` (mulaw, alaw, or 16-bit LE PCM)."""
    if encoding == "mulaw":
        return mulaw_to_pcm16(data)
    if encoding == "alaw":
        return alaw_to_pcm16(data)
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


class Outbox:
    """JSON events to one client in order, each after its own delay, then maybe a close.

    Every event is appended to ``sent`` as it goes out (before the client can
    react); ``closed_with`` hears the code of a close this side sends. The
    queue (``_outbox``) and the task (``sender``, running ``_send_loop``) are
    the extension points of the fakes that send differently (binary frames).
    """

    def __init__(self, ws: ServerConnection, sent: list[dict[str, Any]]) -> None:
        self.ws = ws
        self.sent = sent
        self._outbox: asyncio.Queue[_Out] = asyncio.Queue()
        self.sender = asyncio.get_running_loop().create_task(self._send_loop())

    def send(self, event: dict[str, Any], delay: float = 0.0) -> None:
        self._outbox.put_nowait(_Out("event", delay, event))

    def close(self, code: int = 1000, reason: str = "", delay: float = 0.0) -> None:
        self._outbox.put_nowait(_Out("close", delay, code=code, reason=reason))

    async def send_now(self, event: dict[str, Any]) -> None:
        """Send ``event`` at once, ahead of anything queued."""
        self.sent.append(event)
        await self.ws.send(json.dumps(event))

    def closed_with(self, code: int) -> None:
        return None

    async def stop(self, wait: float = 0.0) -> None:
        """Give what is queued up to ``wait`` seconds to go out, then stop."""
        if wait and not self.sender.done():
            await asyncio.wait({self.sender}, timeout=wait)
        self.sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.sender

    async def _send_loop(self) -> None:
        while True:
            item = await self._outbox.get()
            if item.delay > 0:
                await asyncio.sleep(item.delay)
            try:
                if item.kind == "event" and item.payload is not None:
                    await self.send_now(item.payload)
                elif item.kind == "close":
                    self.closed_with(item.code)
                    await self.ws.close(item.code, item.reason)
                    return
            except ConnectionClosed:
                return


class FakeConn(Outbox):
    """One accepted connection: an ordered, delayed outbox plus fault switches."""

    def __init__(self, server: FakeSttServer, ws: ServerConnection, record: ConnRecord) -> None:
        self.server = server
        self.record = record
        self.closing = False
        self.close_queued = False
        self._error_done = False
        self._ids = itertools.count(1)
        super().__init__(ws, record.sent)

    def closed_with(self, code: int) -> None:
        self.record.close_code = code

    def next_id(self, prefix: str) -> str:
        return f"{prefix}_{next(self._ids):04d}"

    def send(self, event: dict[str, Any], delay: float = 0.0) -> None:
        """Queue ``event``; it goes out after the ones before it, ``event_delay + delay`` later."""
        if not self.closing:
            super().send(event, self.server.event_delay + delay)

    def close(self, code: int = 1000, reason: str = "", delay: float = 0.0) -> None:
        """Close after everything already queued has been sent."""
        if not self.closing:
            self.closing = self.close_queued = True
            super().close(code, reason, delay)

    def abort(self) -> None:
        """Drop the TCP connection now, without a close frame (the client sees 1006)."""
        self.closing = True
        self.record.aborted = True
        self.ws.transport.abort()

    def control(self, text: str) -> object:
        """A text control frame: recorded when it is a JSON object; its ``type`` (or None)."""
        try:
            msg = json.loads(text)
        except ValueError:
            return None
        if not isinstance(msg, dict):
            return None
        self.record.messages.append(msg)
        kind: object = msg.get("type")
        return kind

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


# --------------------------------------------------------------------------- server


class LoopbackServer:
    """A ``websockets`` server on a free loopback port that serves scripted transcripts.

    The life every fake shares: ``async with Fake(...) as fake:`` (or
    ``start``/``stop``), ``origin`` and ``endpoint`` (``origin`` + ``path``),
    ``next_transcript`` (the scripted texts in order, then ``"hello"``) and
    ``wait_for``. Subclasses give ``_process_request`` and ``_handle``.
    """

    path = "/"

    def __init__(self, transcripts: Sequence[str] = (), *,
                 api_key: str = DEFAULT_API_KEY) -> None:
        self.transcripts = list(transcripts)
        self.api_key = api_key
        self._next_transcript = 0
        self._server: Server | None = None
        self.port = 0

    async def __aenter__(self) -> Self:
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
    def endpoint(self) -> str:
        """The vendor endpoint on this fake, without a query string."""
        return self.origin + self.path

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

    async def _process_request(self, connection: ServerConnection,
                               request: Request) -> Response | None:
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        raise NotImplementedError


class FakeSttServer(LoopbackServer):
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

    def __init__(self, transcripts: Sequence[str] = (), *, api_key: str = DEFAULT_API_KEY,
                 connect_delay: float = 0.0, ready_delay: float = 0.0,
                 event_delay: float = 0.0, final_delay: float = 0.0,
                 word_ms: float = 100.0, rms_threshold: float = 0.02,
                 min_speech_ms: float = 40.0, close_after_ms: float | None = None,
                 close_code: int | None = 1011, close_reason: str = "",
                 error_after_ms: float | None = None,
                 reject_status: int | None = None) -> None:
        super().__init__(transcripts, api_key=api_key)
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
        self._records: dict[int, ConnRecord] = {}

    @property
    def url(self) -> str:
        """The vendor endpoint on this fake, without a query string."""
        return self.endpoint

    @property
    def last(self) -> ConnRecord:
        if not self.connections:
            raise AssertionError("no connection reached the fake")
        return self.connections[-1]

    # ------------------------------------------------------------ vendor hooks

    def check_handshake(self, request: Request, record: ConnRecord) -> Response | None:
        """Validate auth and query; return a vendor-shaped refusal or None to accept."""
        return None

    async def serve(self, conn: FakeConn) -> None:
        raise NotImplementedError

    def inject_error(self, conn: FakeConn) -> None:
        """Send the vendor's error event (and close, where the vendor would)."""
        conn.close(1011, "injected error")

    def new_conn(self, ws: ServerConnection, record: ConnRecord) -> FakeConn:
        """The connection object for an accepted upgrade (a vendor may send differently)."""
        return FakeConn(self, ws, record)

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
        conn = self.new_conn(ws, record)
        try:
            await self.serve(conn)
        except ConnectionClosed:
            pass
        finally:
            await conn.stop(wait=2.0 if conn.close_queued else 0.0)
            record.closed = True


def new_request_id() -> str:
    return str(uuid.uuid4())


# --------------------------------------------------------------------------- JSON-audio fakes


@dataclass
class AudioRecord:
    """What one connection to a ``JsonAudioFake`` sent and was sent (headers as sent)."""

    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    authorized: bool = False
    messages: list[dict[str, Any]] = field(default_factory=list)   # client JSON, in order
    audio: bytearray = field(default_factory=bytearray)             # payload bytes as sent
    pcm: list[npt.NDArray[np.int16]] = field(default_factory=list)  # decoded, session rate
    sent: list[dict[str, Any]] = field(default_factory=list)        # server messages
    protocol_errors: list[str] = field(default_factory=list)
    error_injected: bool = False
    close_code: int | None = None              # when the client closed first, its code
    closed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def sample_rate(self) -> int:
        """The rate the audio is decoded at (the vendor's negotiated format)."""
        raise NotImplementedError

    @property
    def audio_ms(self) -> float:
        return sum(len(p) for p in self.pcm) * 1000 / self.sample_rate


R = TypeVar("R", bound=AudioRecord)


class JsonAudioFake(LoopbackServer, Generic[R]):
    """Base of the fakes whose audio comes base64 in JSON (ElevenLabs, Mistral).

    ``url`` is the fake's origin (point the provider's ``baseUrl`` at it). The
    upgrade is refused with a vendor body (``refusal_body``) on a wrong path
    (404), with ``reject_status``, and, with ``auth_failure="http"``, for a bad
    key (401). After it the vendor's ``session`` runs; ``hello`` sends its first
    message after ``session_delay_s``, ``check_faults`` applies ``drop_after_ms``
    (abort the TCP connection) and ``error_after_ms`` (the vendor's error, then
    a close with ``error_close_code``) once that much audio arrived.
    """

    def __init__(self, transcripts: Sequence[str], *, api_key: str, session_delay_s: float,
                 rms_threshold: float, auth_failure: Literal["message", "http"],
                 reject_status: int | None, drop_after_ms: float | None,
                 error_after_ms: float | None, error_close_code: int | None) -> None:
        super().__init__(transcripts, api_key=api_key)
        self.session_delay_s = session_delay_s
        self.rms_threshold = rms_threshold
        self.auth_failure = auth_failure
        self.reject_status = reject_status
        self.drop_after_ms = drop_after_ms
        self.error_after_ms = error_after_ms
        self.error_close_code = error_close_code
        self.connections: list[R] = []

    @property
    def url(self) -> str:
        return self.origin

    # ------------------------------------------------------------ vendor hooks

    def authorized(self, request: Request) -> bool:
        raise NotImplementedError

    def refusal_body(self, status: int) -> str:
        """The body of a refused upgrade with ``status`` (404, 401 or ``reject_status``)."""
        raise NotImplementedError

    def new_record(self, path: str, query: dict[str, list[str]], headers: dict[str, str]) -> R:
        raise NotImplementedError

    async def session(self, ws: ServerConnection, conn: R, outbox: Outbox) -> None:
        """The accepted connection, from the auth check to its end."""
        raise NotImplementedError

    def error_event(self) -> tuple[dict[str, Any], str]:
        """The injected error message, and the reason of the close that follows it."""
        raise NotImplementedError

    # ------------------------------------------------------------ for the vendor fakes

    async def refuse(self, ws: ServerConnection, outbox: Outbox, event: dict[str, Any],
                     reason: str) -> None:
        """Before the session: ``event`` now, then close with 1008."""
        await outbox.send_now(event)
        await ws.close(1008, reason)

    async def hello(self, ws: ServerConnection, outbox: Outbox, event: dict[str, Any]) -> bool:
        """The session's first message after ``session_delay_s``; False if the client left."""
        if self.session_delay_s and await closed_within(ws, self.session_delay_s):
            return False
        await outbox.send_now(event)
        return True

    def segmenter(self, rate: int, end_silence_ms: float | None, word_ms: float) -> Segmenter:
        """Speech from the first loud 20 ms, a word each ``word_ms`` of it, the end after
        ``end_silence_ms`` of quiet (None: only when the client says so, ``flush``)."""
        return Segmenter(rate, threshold=self.rms_threshold,
                         end_silence_ms=math.inf if end_silence_ms is None else end_silence_ms,
                         min_speech_ms=20.0, word_ms=word_ms, window_ms=20)

    async def protocol_error(self, ws: ServerConnection, conn: R, outbox: Outbox, error: str,
                             event: dict[str, Any], reason: str = "") -> None:
        """A client mistake: recorded, answered with ``event`` and a 1008 close."""
        conn.protocol_errors.append(error)
        outbox.send(event)
        outbox.close(1008, reason)
        await ws.wait_closed()

    def check_faults(self, ws: ServerConnection, conn: R, outbox: Outbox) -> bool:
        """After each audio chunk; True when the connection was dropped."""
        if self.drop_after_ms is not None and conn.audio_ms >= self.drop_after_ms:
            ws.transport.abort()
            return True
        if self.error_after_ms is not None and not conn.error_injected \
                and conn.audio_ms >= self.error_after_ms:
            conn.error_injected = True
            event, reason = self.error_event()
            outbox.send(event)
            if self.error_close_code is not None:
                outbox.close(self.error_close_code, reason)
        return False

    # ------------------------------------------------------------ internals

    async def _process_request(self, connection: ServerConnection,
                               request: Request) -> Response | None:
        if urlsplit(request.path).path != self.path:
            status = 404
        elif self.reject_status is not None:
            status = self.reject_status
        elif self.auth_failure == "http" and not self.authorized(request):
            status = 401
        else:
            return None
        return connection.respond(http.HTTPStatus(status), self.refusal_body(status))

    async def _handle(self, ws: ServerConnection) -> None:
        request = ws.request
        assert request is not None
        conn = self.new_record(request.path,
                               parse_qs(urlsplit(request.path).query, keep_blank_values=True),
                               {k.lower(): v for k, v in request.headers.raw_items()})
        self.connections.append(conn)
        outbox = Outbox(ws, conn.sent)
        try:
            await self.session(ws, conn, outbox)
        except ConnectionClosed as exc:
            if exc.rcvd is not None and exc.rcvd_then_sent:  # the client closed first
                conn.close_code = exc.rcvd.code
        finally:
            await outbox.stop()
            conn.closed.set()


async def closed_within(ws: ServerConnection, seconds: float) -> bool:
    """Wait ``seconds`` (a configured delay) unless the client goes first; True if it went."""
    try:
        await asyncio.wait_for(ws.wait_closed(), seconds)
    except TimeoutError:
        return False
    return True
