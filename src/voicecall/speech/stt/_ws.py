"""Shared plumbing for streaming STT providers that speak a WebSocket protocol.

``WsSttSession`` is one call's connection. It is generic; a provider module
subclasses it and fills in the hooks (``on_open``, ``on_text``,
``encode_audio``, ...). What it does for every provider:

- connects in the background (``start``), with the provider's headers, a
  connect timeout and a ready timeout;
- queues audio handed to ``send_audio`` before the provider is ready, bounded
  by bytes (2 MiB by default, as OpenClaw's websocket session); when the bound
  is hit the oldest audio goes first, and that is logged (once) and counted in
  ``dropped_bytes``, never silent. Control messages (``send_control``) wait in
  the same queue, in order, and are never dropped. The queue is flushed, in
  order, the moment the provider is ready;
- encodes the caller's mu-law for the wire: as is, or as PCM resampled to the
  provider's rate (``PcmEncoder``), wrapped in the provider's envelope;
- optionally runs a local voice detector (``local_vad``) for providers that do
  no endpointing: it reports ``speech-start`` and sends the provider's commit
  message after each utterance's silence;
- reads server messages in one task and turns them into ``SttEvent``s through
  ``on_text``; ``events()`` yields them and always ends with exactly one
  ``closed`` event;
- turns a connection that the server drops or closes into an ``error`` event
  followed by ``closed`` (no hang, no reconnect: reconnect policy is none;
  the caller decides what to do with a dead session);
- ``aclose`` is idempotent: it sends the provider's "end of audio" message if
  it has one, gives the server a moment to flush and close, then closes.

Errors are ``ProviderError`` and never contain the API key: messages that
come from the server are passed through ``redact``. The plumbing shared with
the realtime sessions (errors, redaction, the queue, the reader loop,
``aclose``) lives in ``voicecall.speech._ws_common``; ``redact``,
``handshake_error``, ``close_error`` and the timeouts are re-exported here.

The module also holds the config helpers the provider ``create`` functions
share (``ProviderConfig``), ``ws_url`` for ``baseUrl``/``endpoint`` overrides,
and ``WsSttProvider``, the base of the ``STT`` classes that open these sessions.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any, Self, TypedDict
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np
from pydantic.alias_generators import to_snake
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from voicecall.audio.g711 import FRAME_BYTES, SAMPLE_RATE, mulaw_to_pcm16
from voicecall.audio.resample import StreamResampler
from voicecall.audio.vad import EnergyVad
from voicecall.config.secret import Secret
from voicecall.errors import ConfigError
from voicecall.speech._ws_common import (
    CLOSE_TIMEOUT_S,
    CONNECT_TIMEOUT_S,
    DEFAULT_MAX_QUEUED_BYTES,
    READY_TIMEOUT_S,
    WsSessionCore,
    close_error,
    handshake_error,
    open_ws,
    redact,
)
from voicecall.speech.stt.base import SttEvent, SttEventType

__all__ = [
    "CLOSE_TIMEOUT_S",
    "CONNECT_TIMEOUT_S",
    "DEFAULT_MAX_QUEUED_BYTES",
    "READY_TIMEOUT_S",
    "ConnectionArgs",
    "PcmEncoder",
    "ProviderConfig",
    "WsSttProvider",
    "WsSttSession",
    "b64",
    "check_encoding",
    "close_error",
    "handshake_error",
    "joined",
    "query_bool",
    "redact",
    "ws_url",
]

log = logging.getLogger("voicecall.stt")



# --------------------------------------------------------------------------- config


class ProviderConfig:
    """Typed reads of a raw ``<section>.providers.<id>`` blob.

    Keys are read as users write them (camelCase), with the snake_case
    spelling accepted too; every error names the full key path.
    """

    def __init__(self, cfg: Mapping[str, Any], provider_id: str,
                 section: str = "streaming") -> None:
        if not isinstance(cfg, Mapping):
            raise ConfigError("must be an object", path=f"{section}.providers.{provider_id}")
        self.cfg = cfg
        self.provider_id = provider_id
        self.section = section

    def path(self, key: str) -> str:
        return f"{self.section}.providers.{self.provider_id}.{key}"

    def raw(self, key: str) -> Any:
        value = self.cfg.get(key)
        if value is None:
            value = self.cfg.get(to_snake(key))
        return value

    def api_key(self, env_names: Sequence[str], *, from_env: bool = False) -> str:
        """The key from ``apiKey``; with ``from_env``, else from the first set ``env_names``."""
        value = self.raw("apiKey")
        if isinstance(value, Secret):
            value = value.reveal()
        if value is not None and not isinstance(value, str):
            raise ConfigError("must be a string", path=self.path("apiKey"))
        value = (value or "").strip()
        if not value and from_env:
            value = next((os.environ[n].strip() for n in env_names
                          if os.environ.get(n, "").strip()), "")
        if not value:
            env = " or ".join(env_names)
            hint = f"set {self.path('apiKey')} or the {env} environment variable" if env \
                else f"set {self.path('apiKey')}"
            raise ConfigError(f"missing API key ({hint})", path=self.path("apiKey"))
        return value

    def get_str(self, key: str, default: str | None = None) -> str | None:
        value = self.raw(key)
        if value is None:
            return default
        if not isinstance(value, str):
            raise ConfigError("must be a string", path=self.path(key))
        value = value.strip()
        return value or default

    def get_choice(self, key: str, default: str, allowed: Sequence[str]) -> str:
        value = self.get_str(key, default) or default
        if value not in allowed:
            raise ConfigError(f"unsupported value {value!r}", path=self.path(key), allowed=allowed)
        return value

    def get_bool(self, key: str, default: bool) -> bool:
        value = self.raw(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise ConfigError("must be true or false", path=self.path(key))
        return value

    def get_number(self, key: str, default: float, *, minimum: float | None = None,
                   maximum: float | None = None) -> float:
        value = self.raw(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float) \
                or not math.isfinite(value):
            raise ConfigError("must be a number", path=self.path(key))
        if minimum is not None and value < minimum:
            raise ConfigError(f"must be >= {minimum:g}", path=self.path(key))
        if maximum is not None and value > maximum:
            raise ConfigError(f"must be <= {maximum:g}", path=self.path(key))
        return float(value)

    def get_int(self, key: str, default: int, *, minimum: int | None = None,
                maximum: int | None = None) -> int:
        value = self.get_number(key, default, minimum=minimum, maximum=maximum)
        if not float(value).is_integer():
            raise ConfigError("must be a whole number", path=self.path(key))
        return int(value)

    def get_sample_rate(self, encoding: str, rates: Sequence[int], *, mulaw: str,
                        pcm: str) -> int:
        """``sampleRate`` for ``encoding``: ``mulaw`` is telephone audio (8000 Hz, sent as
        is); a PCM encoding (``pcm`` names one) is resampled to one of ``rates``."""
        rate = self.get_int("sampleRate", SAMPLE_RATE)
        if encoding == mulaw and rate != SAMPLE_RATE:
            raise ConfigError(f"{mulaw} audio is 8000 Hz (use encoding {pcm} to resample)",
                              path=self.path("sampleRate"))
        if rate not in rates:
            raise ConfigError(f"unsupported sample rate {rate}", path=self.path("sampleRate"),
                              allowed=[str(r) for r in rates])
        return rate

    def get_str_list(self, key: str) -> list[str]:
        value = self.raw(key)
        if value is None:
            return []
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError("must be a list of strings", path=self.path(key))
        return [v.strip() for v in value if v.strip()]

    def url(self, default: str, path: str, query: Sequence[tuple[str, str]]) -> str:
        """The WebSocket URL: ``endpoint`` (used as is) > ``baseUrl`` (+ ``path``) > default."""
        for key, suffix in (("endpoint", ""), ("baseUrl", path)):
            source = self.get_str(key)
            if source:
                try:
                    return ws_url(source, suffix, query)
                except ValueError as exc:
                    raise ConfigError(str(exc), path=self.path(key)) from None
        return ws_url(default, path, query)


def ws_url(base: str, path: str = "", query: Sequence[tuple[str, str]] = ()) -> str:
    """``base`` as a ws(s) URL ending in ``path``, with ``query`` added.

    http/https become ws/wss. ``path`` is appended only as far as ``base`` does
    not already end with it, so ``https://api.x.ai/v1`` + ``/v1/stt`` and
    ``wss://api.x.ai/v1/stt`` + ``/v1/stt`` both give ``wss://api.x.ai/v1/stt``.
    Query parameters already in ``base`` are kept; ``query`` ones are added.
    """
    parts = urlsplit(base.strip())
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme.lower())
    if scheme is None or not parts.netloc:
        raise ValueError(f"not a ws://, wss://, http:// or https:// URL: {base!r}")
    have = [s for s in parts.path.split("/") if s]
    want = [s for s in path.split("/") if s]
    overlap = 0
    for k in range(min(len(have), len(want)), 0, -1):
        if have[-k:] == want[:k]:
            overlap = k
            break
    segments = have + want[overlap:]
    new_path = "/" + "/".join(segments) if segments else ""
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    names = {k for k, _ in query}
    pairs = [(k, v) for k, v in pairs if k not in names] + list(query)
    return urlunsplit((scheme, parts.netloc, new_path, urlencode(pairs), ""))


def query_bool(value: bool) -> str:
    return "true" if value else "false"


# --------------------------------------------------------------------------- audio


class PcmEncoder:
    """The caller's mu-law (8 kHz) as little-endian PCM at ``rate``, resampled as it streams.

    16-bit integers by default, 32-bit floats in [-1, 1) with ``float32``.
    """

    def __init__(self, rate: int, *, float32: bool = False) -> None:
        self.rate = rate
        self.float32 = float32
        self._resampler = StreamResampler(SAMPLE_RATE, rate)

    def __call__(self, mulaw: bytes) -> bytes:
        pcm = self._resampler.feed(mulaw_to_pcm16(mulaw))
        if self.float32:
            return (pcm.astype(np.float32) / 32768.0).astype("<f4").tobytes()
        return pcm.astype("<i2").tobytes()


def b64(data: bytes) -> str:
    """``data`` as base64 text, for the providers that carry audio in JSON."""
    return base64.b64encode(data).decode("ascii")


# --------------------------------------------------------------------------- provider


class ConnectionArgs(TypedDict):
    """The ``WsSttSession`` keyword arguments a ``WsSttProvider`` gives each session."""

    url: str
    headers: Mapping[str, str]
    secret: str
    connect_timeout: float
    ready_timeout: float
    max_queued_bytes: int


class WsSttProvider:
    """Base of the ``STT`` classes whose sessions are ``WsSttSession``s.

    It holds what every session of the provider connects with: the API key (never
    in ``repr``), the URL, the connect and ready timeouts and the pre-ready queue
    bound; plain attributes, read each time a session opens.
    """

    def __init__(self, api_key: str, url: str, *, connect_timeout: float = CONNECT_TIMEOUT_S,
                 ready_timeout: float = READY_TIMEOUT_S,
                 max_queued_bytes: int = DEFAULT_MAX_QUEUED_BYTES) -> None:
        if not api_key:
            raise ValueError("api_key is required")
        self._api_key = api_key
        self.url = url
        self.connect_timeout = connect_timeout
        self.ready_timeout = ready_timeout
        self.max_queued_bytes = max_queued_bytes

    def connection(self, auth_scheme: str) -> ConnectionArgs:
        """A session's connection, the key sent as ``Authorization: <auth_scheme> <key>``."""
        return ConnectionArgs(url=self.url,
                              headers={"Authorization": f"{auth_scheme} {self._api_key}"},
                              secret=self._api_key, connect_timeout=self.connect_timeout,
                              ready_timeout=self.ready_timeout,
                              max_queued_bytes=self.max_queued_bytes)


def check_encoding(encoding: str, sample_rate: int, encodings: Sequence[str], *,
                   pcm: str) -> None:
    """Constructor checks: a known ``encoding``; ``mulaw`` is 8000 Hz (``pcm`` resamples)."""
    if encoding not in encodings:
        raise ValueError(f"encoding must be one of {tuple(encodings)}")
    if encoding == "mulaw" and sample_rate != SAMPLE_RATE:
        raise ValueError(f"mulaw audio is 8000 Hz; use {pcm} for other rates")


def joined(chunks: Sequence[str], interim: str = "") -> str:
    """Locked transcript chunks, and the ``interim`` text after them, as one text."""
    return " ".join([*chunks, interim] if interim else chunks).strip()


# --------------------------------------------------------------------------- session


class WsSttSession(WsSessionCore[SttEvent]):
    """One STT connection for one call. Subclasses implement the vendor protocol.

    Hooks (all optional except ``on_text``):

    - ``on_open``: right after the upgrade; send configuration messages.
    - ``on_text``: each JSON object the server sends. Call ``emit`` for events,
      ``await self.mark_ready()`` when the provider accepts audio, and raise
      ``ProviderError`` for a fatal error (the session then ends).
    - ``encode_audio``: a mu-law chunk as the frame to send (bytes or text). By
      default the ``audio_payload`` (mu-law as is, or PCM when the session was
      given a ``pcm`` encoder) as a binary frame; override it to wrap the
      payload in the provider's message (base64 JSON).
    - ``keepalive_message`` / ``finish_message``: text frames for idle periods
      and for the end of audio.
    - ``commit_message``: with a ``local_vad``, the text frame that ends an
      utterance once the detector hears its silence (``speech-start`` is
      emitted when it hears speech begin).
    - ``flush_pending``: called once before ``closed``; emit any text still held.
    """

    provider = "stt"
    ready_on_open = False       # the provider accepts audio as soon as the socket is open
    _ws_kind = "stt"
    _ws_log = log
    _overflow_why = "pre-ready queue full, oldest audio dropped"
    _closed_why = "session closed before ready"

    def __init__(self, *, call_id: str, url: str, headers: Mapping[str, str], secret: str,
                 connect_timeout: float = CONNECT_TIMEOUT_S,
                 ready_timeout: float = READY_TIMEOUT_S,
                 close_timeout: float = CLOSE_TIMEOUT_S,
                 max_queued_bytes: int = DEFAULT_MAX_QUEUED_BYTES,
                 keepalive_s: float | None = None, pcm: PcmEncoder | None = None,
                 local_vad: EnergyVad | None = None) -> None:
        super().__init__(call_id=call_id, secret=secret, connect_timeout=connect_timeout,
                         ready_timeout=ready_timeout, close_timeout=close_timeout,
                         max_queued_bytes=max_queued_bytes)
        self.url = url
        self._headers = dict(headers)
        self._keepalive_s = keepalive_s
        self._pcm = pcm
        self._vad = local_vad
        self._keepalive_task: asyncio.Task[None] | None = None
        self._last_type: SttEventType | None = None
        self._last_send = time.monotonic()

    # ---------------------------------------------------------------- hooks

    async def on_open(self) -> None:
        return None

    async def on_text(self, data: dict[str, Any]) -> None:
        raise NotImplementedError

    async def on_binary(self, data: bytes) -> None:
        log.debug("stt.unexpected_binary", extra={"provider": self.provider, "bytes": len(data)})

    def encode_audio(self, mulaw: bytes) -> str | bytes:
        return self.audio_payload(mulaw)

    def keepalive_message(self) -> str | None:
        return None

    def finish_message(self) -> str | None:
        return None

    def commit_message(self) -> str | None:
        return None

    def flush_pending(self) -> None:
        return None

    # ---------------------------------------------------------------- for subclasses

    def emit(self, type_: SttEventType, text: str = "", confidence: float | None = None) -> None:
        if self._closed_emitted:
            return
        self._last_type = type_
        self._events.put_nowait(SttEvent(type_, text, confidence))

    async def send_text(self, message: str) -> None:
        ws = self._ws
        if ws is None:
            return
        await ws.send(message)
        self._last_send = time.monotonic()

    async def send_json(self, obj: Mapping[str, Any]) -> None:
        await self.send_text(json.dumps(obj, separators=(",", ":")))

    async def send_control(self, message: str) -> None:
        """A text frame in order with the audio: queued with it until ready (never dropped
        for room), sent at once when live; nothing once the session is closing."""
        if self._closing or self._closed_emitted or self._ready_error is not None:
            return
        if not self._live:
            self._pending.append(message)
            return
        with contextlib.suppress(ConnectionClosed):     # the reader reports the close
            await self.send_text(message)

    def audio_payload(self, mulaw: bytes) -> bytes:
        """The audio bytes for the wire: mu-law as is, or the ``pcm`` encoder's output."""
        return mulaw if self._pcm is None else self._pcm(mulaw)

    async def mark_ready(self) -> None:
        """The provider accepts audio: flush the queue in order, then go live."""
        if self._is_ready or self._ready_error is not None:
            return
        self._is_ready = True
        while self._pending:
            item = self._pending.popleft()
            if isinstance(item, str):
                with contextlib.suppress(ConnectionClosed):
                    await self.send_text(item)
                continue
            self._pending_bytes -= len(item)
            await self._transmit(item)
        self._live = True
        self._ready.set()
        self.emit("ready")
        log.debug("stt.ready", extra={"provider": self.provider, "call_id": self.call_id})
        if self._keepalive_s and self.keepalive_message() is not None:
            self._keepalive_task = asyncio.get_running_loop().create_task(
                self._keepalive(self._keepalive_s))

    # ---------------------------------------------------------------- public API

    def start(self) -> Self:
        """Connect in the background; ``wait_ready`` tells how it went."""
        self._spawn()
        return self

    # ---------------------------------------------------------------- internals

    async def _send_live(self, mulaw: bytes) -> None:
        await self._transmit(mulaw)

    async def _audio_taken(self, mulaw: bytes) -> None:
        """The local VAD over 20 ms frames: ``speech-start``, then the commit after silence."""
        if self._vad is None:
            return
        for i in range(0, len(mulaw), FRAME_BYTES):
            edge = self._vad.feed(mulaw[i:i + FRAME_BYTES])
            if edge == "start":
                self.emit("speech-start")
            elif edge == "end":
                message = self.commit_message()
                if message is not None:
                    await self.send_control(message)

    async def _transmit(self, mulaw: bytes) -> None:
        ws = self._ws
        if ws is None:
            self._drop(len(mulaw), "no connection")
            return
        payload = self.encode_audio(mulaw)
        if not payload:
            # A resampler may hold a chunk back; an empty frame means "end" to some vendors.
            self.sent_bytes += len(mulaw)
            return
        try:
            await ws.send(payload)
        except ConnectionClosed:
            self._drop(len(mulaw), "connection closed")   # the reader reports the close
            return
        self.sent_bytes += len(mulaw)
        self._last_send = time.monotonic()

    async def _keepalive(self, interval: float) -> None:
        while True:
            idle = time.monotonic() - self._last_send
            if idle >= interval:
                message = self.keepalive_message()
                if message is None:
                    return
                try:
                    await self.send_text(message)
                except ConnectionClosed:
                    return
                idle = 0.0
            await asyncio.sleep(interval - idle)

    async def _stop_keepalive(self) -> None:
        task, self._keepalive_task = self._keepalive_task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _connected_session(self) -> None:
        self._ws = await open_ws(self.provider, self.url, self._headers, self._secret,
                                 connect_timeout=self._connect_timeout,
                                 close_timeout=self._close_timeout, max_size=4 * 1024 * 1024,
                                 where=f" to {urlsplit(self.url).netloc}")
        log.debug("stt.connected", extra={"provider": self.provider, "call_id": self.call_id})
        try:
            await self.on_open()
            if self.ready_on_open:
                await self.mark_ready()
        except ConnectionClosed:
            pass    # the reader says why, after whatever the server sent before closing
        await self._read(self._ws)

    # No reconnect, ever: a dropped or closed socket ends the session (``close_error``).

    async def _frame_text(self, data: bytes) -> str | None:
        await self.on_binary(data)
        return None

    async def _dispatch(self, data: dict[str, Any]) -> None:
        await self.on_text(data)

    def _emit_error(self, text: str) -> None:
        if self._last_type != "error":
            self.emit("error", text)

    async def _before_close(self, task: asyncio.Task[None], ws: ClientConnection | None) -> None:
        if ws is not None and self._live:
            finish = self.finish_message()
            if finish is not None:
                with contextlib.suppress(ConnectionClosed):
                    await ws.send(finish)
                # Let the server flush its last results and close.
                await asyncio.wait({task}, timeout=self._close_timeout)

    async def _after_close(self) -> None:
        await self._stop_keepalive()

    async def _teardown(self) -> None:
        ws = self._ws
        if ws is not None and ws.state is not State.CLOSED:
            with contextlib.suppress(Exception):
                await ws.close()
        await self._stop_keepalive()

    def _before_finish(self) -> None:
        with contextlib.suppress(Exception):
            self.flush_pending()

    def _emit_closed(self) -> None:
        self.emit("closed")
