"""The fake Plivo against a scripted XML server: signatures the official SDK accepts,
and the XML semantics the gateway relies on."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import pytest
import uvicorn
from plivo.utils import validate_signature  # type: ignore[import-untyped]
from plivo.utils.signature_v3 import validate_v3_signature  # type: ignore[import-untyped]
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from voicecall.testing.fake_plivo import CalleeScript, FakePlivo, Press

AUTH_ID = "MAXXXXXXXXXXXXXXXXXX"
TOKEN = "fake-plivo-token"
HOST = "voice.example.com"


@dataclass
class Seen:
    method: str
    url: str
    headers: dict[str, str]
    params: dict[str, str]


@dataclass
class XmlServer:
    """Answers each request with ``docs[flow]`` (``flow`` from the query string)."""

    docs: dict[str, str | Callable[[dict[str, str]], str]]
    seen: list[Seen] = field(default_factory=list)
    content_type: str = "application/xml"

    async def handle(self, request: Request) -> Response:
        params = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
        query = dict(request.query_params)
        url = f"https://{HOST}{request.url.path}" + (f"?{request.url.query}"
                                                     if request.url.query else "")
        self.seen.append(Seen(request.method, url, dict(request.headers), params))
        doc = self.docs.get(query.get("flow", ""), "<Response/>")
        body = doc(params) if callable(doc) else doc
        return Response(body, media_type=self.content_type)


@contextlib.asynccontextmanager
async def plivo_and_server(docs: dict[str, Any], callee: CalleeScript | None = None,
                           port: int = 0, **kw: Any) -> AsyncIterator[tuple[FakePlivo,
                                                                             XmlServer]]:
    app = XmlServer(docs)
    server = uvicorn.Server(uvicorn.Config(
        Starlette(routes=[Route("/cb", app.handle, methods=["POST", "GET"])]),
        port=port, log_level="warning", lifespan="off"))
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:  # noqa: ASYNC110 - uvicorn has no "started" event
            await asyncio.sleep(0.01)
        async with FakePlivo(AUTH_ID, TOKEN, callee=callee,
                             public_to_local={HOST: f"127.0.0.1:{port}"}, **kw) as fake:
            yield fake, app
    finally:
        server.should_exit = True
        await serving


def dial(fake: FakePlivo, **extra: Any) -> Any:
    from voicecall.testing.fake_plivo._rest import RestApi
    body = {"from": "15550009999", "to": "15550002222",
            "answer_url": f"https://{HOST}/cb?flow=answer",
            "hangup_url": f"https://{HOST}/cb?flow=hangup",
            "ring_url": f"https://{HOST}/cb?flow=ring", **extra}
    return fake._create_outbound(RestApi.validate_create(body))


async def test_callbacks_are_signed_as_the_sdk_validates(unused_tcp_port: int) -> None:
    docs = {"answer": "<Response><Speak>Hello</Speak></Response>"}
    async with plivo_and_server(docs, port=unused_tcp_port) as (fake, app):
        fake.sign_also_with(["an-older-token"])
        call = dial(fake)
        await fake.wait_for(lambda: call.is_terminal and len(app.seen) == 3, 5)
        assert [s.params.get("Event") for s in app.seen] == ["Ring", "StartApp", "Hangup"]
        for seen in app.seen:
            h = seen.headers
            nonce = h["x-plivo-signature-v3-nonce"]
            assert nonce.isdigit() and len(nonce) == 20
            assert "," in h["x-plivo-signature-v3"]  # one signature per auth token
            assert validate_v3_signature("POST", seen.url, nonce, TOKEN,
                                         h["x-plivo-signature-v3"], params=seen.params)
            assert validate_v3_signature("POST", seen.url, nonce, TOKEN,
                                         h["x-plivo-signature-ma-v3"], params=seen.params)
            assert validate_signature(seen.url, h["x-plivo-signature-v2-nonce"],
                                      h["x-plivo-signature-v2"], TOKEN)
        answer = app.seen[1].params
        assert answer["CallUUID"] == call.call_uuid
        assert answer["RequestUUID"] == answer["ALegRequestUUID"] == call.request_uuid
        assert answer["CallStatus"] == "in-progress" and answer["Direction"] == "outbound"
        hangup = app.seen[2].params
        assert hangup["CallStatus"] == "completed" and hangup["HangupCause"] == "NORMAL_CLEARING"
        assert call.heard == ["Hello"] and call.hung_up_by == "xml"


async def test_getinput_reply_silence_and_redirect_false(unused_tcp_port: int) -> None:
    action = f"https://{HOST}/cb?flow=getinput"
    docs = {
        "answer": (f'<Response><GetInput action="{action}" inputType="speech">'
                   f'<Speak>Q1</Speak></GetInput><Speak>fell through</Speak>'
                   f'<GetInput action="{action}" inputType="dtmf speech" redirect="false"/>'
                   f'<Speak>after</Speak></Response>'),
        "getinput": "<Response><Speak>ignored when redirect is false</Speak></Response>",
    }
    callee = CalleeScript(replies=[Press("1"), Press("42#9")])
    async with plivo_and_server(docs, callee, port=unused_tcp_port) as (fake, app):
        call = dial(fake)
        await fake.wait_for(lambda: call.is_terminal, 5)
        # A keypress into a speech-only GetInput is no input: fall through, no action call.
        assert call.heard == ["Q1", "fell through", "after"]
        [result] = [s.params for s in app.seen if "InputType" in s.params]
        assert result["InputType"] == "dtmf" and result["Digits"] == "42"


async def test_inbound_hangup_first_rejects_without_answering(unused_tcp_port: int) -> None:
    async with plivo_and_server({"answer": '<Response><Hangup reason="rejected"/></Response>'},
                                port=unused_tcp_port) as (fake, app):
        uid = await fake.place_inbound("+15550001111", "+15550009999",
                                       f"https://{HOST}/cb?flow=answer",
                                       hangup_url=f"https://{HOST}/cb?flow=hangup")
        call = fake.calls[uid]
        await fake.wait_for(lambda: call.is_terminal and len(app.seen) == 2, 5)
        assert call.answered is None and call.hangup_cause == "CALL_REJECTED"
        assert app.seen[0].params["CallStatus"] == "ringing"
        assert app.seen[0].params["From"] == "15550001111"  # no "+", as Plivo sends it


@pytest.mark.parametrize(("doc", "ctype", "code"), [
    ("<Response><Dance/></Response>", "application/xml", 8011),
    ("<Response><Speak>ok</Speak></Response>", "text/plain", 8011),
])
async def test_bad_answer_xml_fails_the_call(unused_tcp_port: int, doc: str, ctype: str,
                                             code: int) -> None:
    async with plivo_and_server({"answer": doc}, port=unused_tcp_port) as (fake, app):
        app.content_type = ctype
        call = dial(fake)
        await fake.wait_for(lambda: call.is_terminal, 5)
        assert call.status == "failed" and call.errors[0].code == code


async def test_stream_without_keepcallalive_lets_the_xml_end_the_call(
        unused_tcp_port: int) -> None:
    # Why the gateway sets keepCallAlive: otherwise the call ends with the document.
    async with plivo_and_server({"answer": "<Response><Stream>wss://nowhere.example/s"
                                           "</Stream></Response>"},
                                port=unused_tcp_port) as (fake, app):
        call = dial(fake)
        await fake.wait_for(lambda: call.is_terminal, 5)
        assert call.hung_up_by == "xml"


async def test_hangup_on_ring_also_ends_an_answered_call(unused_tcp_port: int) -> None:
    # Why the gateway sends ring_timeout and not hangup_on_ring.
    async with plivo_and_server({"answer": '<Response><Wait length="300"/></Response>'},
                                port=unused_tcp_port) as (fake, app):
        call = dial(fake, hangup_on_ring=1)
        await fake.wait_for(lambda: call.answered is not None, 3)
        await fake.wait_for(lambda: call.is_terminal, 3)
        assert call.hung_up_by == "hangup_on_ring" and call.hangup_cause == "ALLOTTED_TIMEOUT"


async def test_ring_timeout_gives_up_on_an_unanswered_call(unused_tcp_port: int) -> None:
    async with plivo_and_server({}, CalleeScript(answer_delay=5.0),
                                port=unused_tcp_port) as (fake, app):
        call = dial(fake, ring_timeout=1)
        await fake.wait_for(lambda: call.is_terminal and len(app.seen) == 2, 3)
        assert call.status == "no-answer" and call.answered is None
        assert app.seen[-1].params["HangupCause"] == "NO_ANSWER"
