"""A tiny stand-in gateway for testing the fake Twilio over real sockets.

It serves TwiML per path, accepts the media-stream WebSocket, and checks every
signature with the official SDK's ``RequestValidator`` against the *public* URL,
exactly as the real gateway must.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from twilio.request_validator import RequestValidator  # type: ignore[import-untyped]

from voicecall.testing.fake_twilio import CalleeScript, FakeTwilio, Timings

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "fake-auth-token-5f1c2e"
PUBLIC_HOST = "voice.example.com"
PUBLIC = f"https://{PUBLIC_HOST}"
STREAM_URL = f"wss://{PUBLIC_HOST}/stream"
TO = "+14155550100"
FROM = "+15005550006"

validator = RequestValidator(AUTH_TOKEN)


@dataclass
class Hit:
    """One webhook the stand-in gateway received."""

    method: str
    path: str
    public_url: str
    params: dict[str, str]
    headers: dict[str, str]
    signature: str | None
    valid: bool


@dataclass
class WsSession:
    """One media-stream connection; ``drain`` records frames, tests read them from a queue."""

    ws: WebSocket
    headers: dict[str, str]
    valid: bool
    frames: list[dict[str, Any]] = field(default_factory=list)
    queue: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    close_code: int | None = None  # as the gateway saw it; 1006 = connection lost

    async def recv_event(self, event: str, within: float = 5.0) -> dict[str, Any]:
        """The next frame of type ``event`` (earlier frames of other types are skipped)."""
        async with asyncio.timeout(within):
            while True:
                frame = await self.queue.get()
                if frame["event"] == event:
                    return frame

    async def send(self, frame: dict[str, Any]) -> None:
        await self.ws.send_text(json.dumps(frame))

    def events(self) -> list[str]:
        return [f["event"] for f in self.frames]

    def of(self, event: str) -> list[dict[str, Any]]:
        return [f for f in self.frames if f["event"] == event]


TwimlRoute = Callable[[Hit], str | Response]
WsHandler = Callable[[WsSession], Awaitable[None]]


async def drain(session: WsSession) -> None:
    """Default stream handler: record every frame until the fake closes the socket."""
    while True:
        frame: dict[str, Any] = json.loads(await session.ws.receive_text())
        session.frames.append(frame)
        session.queue.put_nowait(frame)


class _QuickServer(uvicorn.Server):
    """uvicorn minus signal capture and its 100 ms shutdown polling (keeps tests fast)."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.stopped = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def main_loop(self) -> None:
        await self.stopped.wait()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        for connection in list(self.server_state.connections):
            connection.shutdown()
        async with asyncio.timeout(2):
            while self.server_state.connections:  # noqa: ASYNC110 (uvicorn has no event)
                await asyncio.sleep(0.005)
        for server in self.servers:
            await server.wait_closed()


class MiniGateway:
    def __init__(self) -> None:
        self.routes: dict[str, TwimlRoute] = {}
        self.hits: list[Hit] = []
        self.sessions: list[WsSession] = []
        self.ws_handler: WsHandler = drain
        self.refuse_streams = False
        self.app = Starlette(routes=[
            WebSocketRoute("/stream", self._ws),
            Route("/{path:path}", self._http, methods=["GET", "POST"]),
        ])
        self.port = 0
        self._server: _QuickServer | None = None
        self._task: asyncio.Task[None] | None = None

    def twiml(self, path: str, route: str | TwimlRoute) -> None:
        """Serve ``route`` at ``path``: a fixed document, or a function of the request."""
        if isinstance(route, str):
            doc = route
            self.routes[path] = lambda _hit: doc
        else:
            self.routes[path] = route

    def hits_for(self, path: str) -> list[Hit]:
        return [h for h in self.hits if h.path == path]

    async def _http(self, request: Request) -> Response:
        body = (await request.body()).decode()
        query = request.url.query
        public_url = f"{PUBLIC}{request.url.path}" + (f"?{query}" if query else "")
        params = dict(parse_qsl(body, keep_blank_values=True)) if request.method == "POST" else {}
        signature = request.headers.get("x-twilio-signature")
        valid = signature is not None and validator.validate(public_url, params, signature)
        hit = Hit(request.method, request.url.path, public_url, params,
                  dict(request.headers), signature, valid)
        self.hits.append(hit)
        route = self.routes.get(request.url.path)
        if route is None:
            return Response("<Response/>", media_type="text/xml")
        result = route(hit)
        if isinstance(result, Response):
            return result
        return Response(result, media_type="text/xml")

    async def _ws(self, ws: WebSocket) -> None:
        signature = ws.headers.get("x-twilio-signature", "")
        valid = validator.validate(STREAM_URL, {}, signature)
        if self.refuse_streams:
            await ws.close(code=1008)  # before accept: uvicorn refuses the upgrade (HTTP 403)
            return
        await ws.accept()
        session = WsSession(ws, dict(ws.headers), valid)
        self.sessions.append(session)
        try:
            await self.ws_handler(session)
        except WebSocketDisconnect as exc:
            session.close_code = exc.code
        finally:
            session.closed.set()

    async def start(self) -> None:
        # IPPROTO_TCP: asyncio then sets TCP_NODELAY (else ~40 ms per kept-alive request).
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="warning", access_log=False,
                                lifespan="off", ws="websockets-sansio",
                                timeout_graceful_shutdown=1)
        self._server = _QuickServer(config)
        self._task = asyncio.get_running_loop().create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:  # noqa: ASYNC110 (uvicorn has no event)
            await asyncio.sleep(0.005)

    async def stop(self) -> None:
        assert self._server is not None and self._task is not None
        self._server.should_exit = True
        self._server.stopped.set()
        await asyncio.gather(self._task, return_exceptions=True)


def twiml(*verbs: str) -> str:
    return '<?xml version="1.0" encoding="UTF-8"?><Response>' + "".join(verbs) + "</Response>"


@pytest.fixture
async def gateway() -> AsyncIterator[MiniGateway]:
    gw = MiniGateway()
    await gw.start()
    try:
        yield gw
    finally:
        await gw.stop()


FakeFactory = Callable[..., Awaitable[FakeTwilio]]


@pytest.fixture
async def make_fake(gateway: MiniGateway) -> AsyncIterator[FakeFactory]:
    """Start a FakeTwilio routed to the stand-in gateway (public host -> loopback)."""
    fakes: list[FakeTwilio] = []

    async def factory(callee: CalleeScript | None = None, **kwargs: Any) -> FakeTwilio:
        kwargs.setdefault("timings", Timings())
        fake = FakeTwilio(ACCOUNT_SID, AUTH_TOKEN, callee=callee,
                          public_to_local={PUBLIC_HOST: f"127.0.0.1:{gateway.port}"}, **kwargs)
        await fake.start()
        fakes.append(fake)
        return fake

    try:
        yield factory
    finally:
        for fake in fakes:
            await fake.__aexit__(None, None, None)


@pytest.fixture
async def fake(make_fake: FakeFactory) -> FakeTwilio:
    return await make_fake()


@pytest.fixture
async def rest(fake: FakeTwilio) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=fake.api_base + f"/Accounts/{ACCOUNT_SID}",
                                 auth=(ACCOUNT_SID, AUTH_TOKEN), trust_env=False) as client:
        yield client


async def create_call(rest: httpx.AsyncClient, **params: str | list[str]) -> dict[str, Any]:
    data: dict[str, str | list[str]] = {
        "To": TO, "From": FROM, "StatusCallback": f"{PUBLIC}/status?callId=c1&type=status",
        "StatusCallbackEvent": ["initiated", "ringing", "answered", "completed"],
    }
    data.update(params)
    response = await rest.post("/Calls.json", data=data)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def client_for(fake: FakeTwilio) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=fake.api_base + f"/Accounts/{ACCOUNT_SID}",
                             auth=(ACCOUNT_SID, AUTH_TOKEN), trust_env=False)
