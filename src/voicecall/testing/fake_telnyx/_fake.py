"""``FakeTelnyx``: the loopback server, its lifecycle and the public test API.

Everything runs as tasks in the test's event loop (uvicorn included, no threads);
``aclose`` cancels them all. Failures of the fake's own tasks are collected in
``task_errors`` and re-raised when the ``async with`` block exits.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import os
import socket
import time
import uuid
from collections.abc import AsyncIterable, Callable, Iterator, Mapping
from types import TracebackType
from typing import Any

import httpx
import uvicorn

from voicecall.carriers.telnyx.signature import SPKI_PREFIX, public_key_b64
from voicecall.testing.fake_telnyx._engine import CallEngine, Live
from voicecall.testing.fake_telnyx._model import (
    CalleeScript,
    FakeCall,
    FakeEvent,
    RestRequest,
    SentWebhook,
    StreamRecord,
    Timings,
)
from voicecall.testing.fake_telnyx._rest import RestApi
from voicecall.testing.fake_telnyx._webhooks import Router, WebhookSender, envelope


class _Server(uvicorn.Server):
    """uvicorn without signal capture and without its 100 ms shutdown polling."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._stop = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    def stop(self) -> None:
        self.should_exit = True
        self._stop.set()

    async def main_loop(self) -> None:
        await self._stop.wait()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        for connection in list(self.server_state.connections):
            connection.shutdown()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.config.timeout_graceful_shutdown or 1)
        while self.server_state.connections and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
        for task in list(self.server_state.tasks):
            task.cancel()
        for server in self.servers:
            await server.wait_closed()


class FakeTelnyx(CallEngine):
    """A loopback Telnyx: Call Control REST in, Ed25519-signed webhooks and media out."""

    def __init__(self, api_key: str = "KEY-fake-telnyx", connection_id: str = "1234567890",
                 *, callee: CalleeScript | None = None, timings: Timings | None = None,
                 public_to_local: Mapping[str, str] | None = None,
                 connection_webhook_url: str | None = None, seed: bytes | None = None,
                 realtime: bool | None = None, raise_task_errors: bool = True) -> None:
        self.api_key = api_key
        self.connection_id = connection_id
        self.connection_webhook_url = connection_webhook_url
        self.callee = callee or CalleeScript()
        self.callees: dict[str, CalleeScript] = {}
        self.timings = timings or Timings()
        if realtime is not None:
            self.timings = dataclasses.replace(self.timings, realtime=realtime)
        self.raise_task_errors = raise_task_errors
        self.seed = seed or os.urandom(32)
        self.calls: dict[str, FakeCall] = {}
        self.requests: list[RestRequest] = []
        self.webhooks: list[SentWebhook] = []
        self.events: list[FakeEvent] = []
        self.task_errors: list[BaseException] = []
        self._live: dict[str, Live] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._router = Router(public_to_local)
        self._webhooks = WebhookSender(self.seed, self._router, self.timings,
                                       record=self._record_webhook)
        self._rest = RestApi(self)
        self._server: _Server | None = None
        self._serve_task: asyncio.Task[None] | None = None
        self._port: int | None = None
        self._t0 = time.monotonic()
        self._closing = False

    # -- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> FakeTelnyx:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()
        errors = [e for e in self.task_errors if isinstance(e, Exception)]
        if exc_type is None and errors and self.raise_task_errors:
            raise ExceptionGroup("FakeTelnyx background tasks failed", errors)

    async def start(self) -> None:
        if self._serve_task is not None:
            return
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self._port = sock.getsockname()[1]
        config = uvicorn.Config(self._rest.app, log_level="warning", access_log=False,
                                lifespan="off", ws="none", timeout_graceful_shutdown=1)
        self._server = _Server(config)
        await self._webhooks.start()
        self._serve_task = asyncio.get_running_loop().create_task(
            self._server.serve(sockets=[sock]), name="fake-telnyx:serve")
        while not self._server.started:
            if self._serve_task.done():
                await self._webhooks.aclose()
                raise RuntimeError("FakeTelnyx failed to start")
            await asyncio.sleep(0.005)
        self._log(None, "fake.started", api_base=self.api_base)

    async def aclose(self) -> None:
        if self._serve_task is None or self._closing:
            return
        for live in list(self._live.values()):
            if live.session is not None and live.session.is_open:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(live.session.stop(), 1.0)
        self._closing = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for live in self._live.values():
            if live.session is not None and live.session.ws is not None:
                live.session.ws.transport.abort()
        assert self._server is not None
        self._server.stop()
        await asyncio.gather(self._serve_task, return_exceptions=True)
        await self._webhooks.aclose()

    @property
    def base_url(self) -> str:
        if self._port is None:
            raise RuntimeError("FakeTelnyx is not running")
        return f"http://127.0.0.1:{self._port}"

    @property
    def api_base(self) -> str:
        """What the gateway uses instead of ``https://api.telnyx.com/v2``."""
        return f"{self.base_url}/v2"

    # -- the account's webhook key (Mission Control: Keys & Credentials -> Public Key) ----

    @property
    def public_key(self) -> str:
        """Base64 of the raw 32-byte Ed25519 public key (the portal's form)."""
        return public_key_b64(self.seed)

    @property
    def public_key_der(self) -> str:
        """The same key as base64 DER SubjectPublicKeyInfo."""
        raw = base64.b64decode(self.public_key)
        return base64.b64encode(SPKI_PREFIX + raw).decode("ascii")

    @property
    def public_key_pem(self) -> str:
        return ("-----BEGIN PUBLIC KEY-----\n" + self.public_key_der
                + "\n-----END PUBLIC KEY-----\n")

    # -- test controls -----------------------------------------------------------------

    def fail_next(self, status: int = 500, count: int = 1, *, code: str | None = None,
                  title: str | None = None, retry_after: float | None = None,
                  action: str | None = None) -> None:
        """Answer the next ``count`` REST requests (of ``action``, if given: ``dial``,
        ``answer``, ``speak`` ...) with a Telnyx-shaped error."""
        self._rest.fail_next(status, count, code, title, retry_after, action)

    def sign_with(self, seed: bytes | None) -> None:
        """Sign webhooks with another key (``None`` restores the account key)."""
        self._webhooks.signing_seed = self.seed if seed is None else seed

    @property
    def timestamp_skew(self) -> float:
        return self._webhooks.timestamp_skew

    @timestamp_skew.setter
    def timestamp_skew(self, seconds: float) -> None:
        """Shift ``telnyx-timestamp`` (the signature still matches the shifted value)."""
        self._webhooks.timestamp_skew = seconds

    @property
    def signature_override(self) -> str | None:
        return self._webhooks.signature_override

    @signature_override.setter
    def signature_override(self, value: str | None) -> None:
        self._webhooks.signature_override = value

    def tamper_next_webhook(self, count: int = 1) -> None:
        self._webhooks.tamper_remaining += count

    def webhook_url_for(self, call: FakeCall | None = None) -> str:
        url = (call.webhook_url if call is not None else None) or self.connection_webhook_url
        if not url:
            raise RuntimeError("no webhook URL: pass connection_webhook_url")
        return url

    async def send_webhook(self, event_type: str, payload: Mapping[str, Any], *,
                           url: str | None = None, sign: bool = True,
                           timestamp: str | None = None, signature: str | None = None,
                           event_id: str | None = None,
                           body_override: bytes | AsyncIterable[bytes] | None = None,
                           raw_body: bytes | None = None,
                           extra_headers: Mapping[str, str] | None = None,
                           drop_headers: tuple[str, ...] = ()) -> httpx.Response:
        """Send one arbitrary (signed, unsigned or mis-signed) event to the gateway.

        ``body_override`` replaces the body on the wire (the signature still covers the
        event); an async iterable of chunks makes a slow upload. ``raw_body`` replaces the
        envelope and is what gets signed (a validly signed malformed body).
        """
        target_url = url or self.webhook_url_for()
        body = raw_body if raw_body is not None else envelope(
            event_type, payload, event_id=event_id or str(uuid.uuid4()), attempt=1,
            delivered_to=target_url)
        headers = self._webhooks.headers_for(body, sign_it=sign, timestamp=timestamp)
        if signature is not None:
            headers["telnyx-signature-ed25519"] = signature
        headers.update(extra_headers or {})
        for name in drop_headers:
            headers.pop(name, None)
        _, response = await self._webhooks.post(
            target_url, body if body_override is None else body_override, headers,
            kind="raw", call=None, raise_errors=True)
        assert response is not None
        return response

    async def replay(self, webhook: SentWebhook) -> httpx.Response:
        """Send a recorded webhook again: same body, same timestamp, same signature."""
        headers = {k: v for k, v in webhook.headers.items() if k != "host"}
        _, response = await self._webhooks.post(webhook.url, webhook.body, headers,
                                                kind="raw", call=None, raise_errors=True)
        assert response is not None
        return response

    async def place_inbound(self, from_: str, to: str, *, callee: CalleeScript | None = None,
                            webhook_url: str | None = None) -> str:
        """Ring the gateway: ``call.initiated`` (incoming, parked) to the connection's
        webhook URL. Returns the call_control_id once that webhook has been answered; the
        call waits for ``answer``/``reject``/``hangup`` (or the caller gives up after
        ``Timings.inbound_answer_timeout``)."""
        call = self._new_call(direction="incoming", from_=from_, to=to,
                              callee=callee or self.callee,
                              webhook_url=webhook_url or self.connection_webhook_url,
                              state="parked")
        live = self._register(call)
        self._emit(call, "call.initiated", direction="incoming", state="parked",
                   caller_id_name="", start_time=time.strftime("%Y-%m-%dT%H:%M:%SZ"))
        live.lifecycle = self._spawn(self._inbound_patience(call, live),
                                     f"{call.call_control_id}:ringing")
        await self.wait_for(lambda: call.events("call.initiated"), self.timings.webhook_timeout,
                            what="call.initiated delivered")
        return call.call_control_id

    async def _inbound_patience(self, call: FakeCall, live: Live) -> None:
        try:
            await asyncio.wait_for(live.answered.wait(), self.timings.inbound_answer_timeout)
        except TimeoutError:
            if call.state == "parked":
                call.errors.append("inbound call was never answered")
                self._end(call, "originator_cancel", source="caller", by="caller")

    async def hangup(self, call_control_id: str) -> None:
        """The far end hangs up."""
        call = self.calls[call_control_id]
        source = "callee" if call.direction == "outgoing" else "caller"
        cause = "normal_clearing" if call.answered is not None else "originator_cancel"
        self._end(call, cause, source=source, by="callee")

    async def speak(self, call_control_id: str, speech: str | bytes) -> None:
        """The callee says something now on the media stream."""
        call, session = await self._session(call_control_id)
        if isinstance(speech, str):
            call.callee_said.append(speech)
            speech = self._audio_for(call, speech)
        session.speak(speech)

    async def press(self, call_control_id: str, digits: str) -> None:
        """The callee presses keys now (webhooks, plus stream frames when streaming)."""
        call = self.calls[call_control_id]
        call.callee_said.append(f"dtmf:{digits}")
        await self._press(call, self._live[call_control_id], digits)

    async def say(self, call_control_id: str, text: str, *, is_final: bool = True) -> None:
        """The callee's words as Telnyx transcription reports them (``call.transcription``),
        whether or not a transcription window is open."""
        call = self.calls[call_control_id]
        call.callee_said.append(text)
        self._emit(call, "call.transcription", transcription_data={
            "transcript": text, "is_final": is_final, "confidence": 0.9,
            "transcription_track": "inbound"})

    async def _session(self, call_control_id: str) -> tuple[FakeCall, Any]:
        call = self.calls[call_control_id]
        session = self._live[call_control_id].session
        if session is not None:
            await asyncio.wait_for(session.dialled.wait(), self.timings.webhook_timeout)
        if session is None or not session.is_open:
            raise RuntimeError(f"{call_control_id} has no open media stream")
        return call, session

    async def drop_stream(self, call_control_id: str) -> None:
        """Kill the media stream's TCP connection (no ``stop``); the call stays up."""
        _, session = await self._session(call_control_id)
        session.drop()
        await session.closed.wait()

    async def reconnect_stream(self, call_control_id: str) -> str:
        """Dial the call's stream URL again (new stream_id), as a restarted stream would."""
        call = self.calls[call_control_id]
        live = self._live[call_control_id]
        if live.session is not None and live.session.is_open:
            raise RuntimeError(f"{call_control_id} still has an open stream; drop it first")
        if not call.stream_params.get("stream_url"):
            raise RuntimeError(f"{call_control_id} never had a stream")
        await self._open_stream(call, live, call.stream_params)
        stream = call.stream
        assert stream is not None
        return stream.stream_id

    async def wait_for_stream(self, call_control_id: str, timeout: float = 5.0,  # noqa: ASYNC109
                              ) -> StreamRecord:
        call = self.calls[call_control_id]

        def up() -> bool:
            session = self._live[call_control_id].session
            return session is not None and session.is_open and session.started

        await self.wait_for(up, timeout, what=f"{call_control_id} media stream up")
        stream = call.stream
        assert stream is not None
        return stream

    async def wait_for(self, predicate: Callable[[], object], timeout: float = 5.0, *,  # noqa: ASYNC109
                       interval: float = 0.005, what: str | None = None) -> None:
        """Poll ``predicate`` until truthy; TimeoutError names the last events."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not predicate():
            if asyncio.get_running_loop().time() > deadline:
                tail = "\n".join(f"  {e.at:7.3f} {e.call_control_id or '-'} {e.kind} {e.data}"
                                 for e in self.events[-15:])
                raise TimeoutError(f"condition {what or predicate!r} not met within "
                                   f"{timeout}s; last fake events:\n{tail}")
            await asyncio.sleep(interval)

    @property
    def latest_call(self) -> FakeCall:
        if not self.calls:
            raise LookupError("no calls yet")
        return next(reversed(self.calls.values()))
