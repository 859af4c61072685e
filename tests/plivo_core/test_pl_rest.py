"""The Plivo REST shell (request shapes, retries, errors) and the fake's REST API,
cross-checked with the official SDK's client."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from typing import Any

import httpx
import plivo  # type: ignore[import-untyped]
import plivo.rest.client as sdk_client  # type: ignore[import-untyped]
import pytest

from voicecall.carriers.plivo.rest import PlivoRest
from voicecall.errors import CarrierError
from voicecall.testing.fake_plivo import CalleeScript, FakePlivo

AUTH_ID = "MAXXXXXXXXXXXXXXXXXX"
TOKEN = "rest-token"


class Recorder:
    def __init__(self, *responses: httpx.Response) -> None:
        self.responses = list(responses)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.responses:
            return self.responses.pop(0)
        return httpx.Response(200, json={"api_id": "x"})


def rest_with(rec: Recorder, **kw: Any) -> PlivoRest:
    return PlivoRest(AUTH_ID, TOKEN, base_url="https://api.example.test",
                     transport=httpx.MockTransport(rec), backoff_s=0.001, **kw)


async def test_create_call_request_shape() -> None:
    rec = Recorder(httpx.Response(201, json={"api_id": "a", "message": "call fired",
                                             "request_uuid": "r-1"}))
    rest = rest_with(rec)
    body = {"from": "15550009999", "to": "15550002222", "answer_url": "https://h/a"}
    created = await rest.create_call(body)
    await rest.aclose()
    assert created["request_uuid"] == "r-1"
    [req] = rec.requests
    assert req.method == "POST"
    assert str(req.url) == f"https://api.example.test/v1/Account/{AUTH_ID}/Call/"
    assert req.headers["content-type"] == "application/json"
    assert json.loads(req.content) == body
    assert req.headers["authorization"] == "Basic " + base64.b64encode(
        f"{AUTH_ID}:{TOKEN}".encode()).decode()


async def test_every_path_has_a_trailing_slash() -> None:
    rec = Recorder(*[httpx.Response(204) for _ in range(3)],
                   *[httpx.Response(202, json={"api_id": "a"}) for _ in range(3)],
                   httpx.Response(201, json={"api_id": "a", "stream_id": "s"}))
    rest = rest_with(rec)
    assert await rest.hangup("u1") is True
    assert await rest.cancel_request("r1") is True
    await rest.stop_streams("u1")
    await rest.transfer("u1", "https://h/doc")
    await rest.speak("u1", "hello", voice="WOMAN", language="en-US")
    await rest.send_dtmf("u1", "12#")
    await rest.start_stream("u1", "wss://h/s", extra_headers="token=t")
    await rest.aclose()
    paths = [(r.method, r.url.path) for r in rec.requests]
    base = f"/v1/Account/{AUTH_ID}"
    assert paths == [("DELETE", f"{base}/Call/u1/"), ("DELETE", f"{base}/Request/r1/"),
                     ("DELETE", f"{base}/Call/u1/Stream/"), ("POST", f"{base}/Call/u1/"),
                     ("POST", f"{base}/Call/u1/Speak/"), ("POST", f"{base}/Call/u1/DTMF/"),
                     ("POST", f"{base}/Call/u1/Stream/")]
    bodies = [json.loads(r.content) if r.content else None for r in rec.requests]
    assert bodies[3] == {"legs": "aleg", "aleg_url": "https://h/doc", "aleg_method": "POST"}
    assert bodies[4] == {"text": "hello", "legs": "aleg", "voice": "WOMAN",
                         "language": "en-US"}
    assert bodies[5] == {"digits": "12#", "leg": "aleg"}
    assert bodies[6] == {"service_url": "wss://h/s", "bidirectional": True,
                         "audio_track": "inbound", "content_type": "audio/x-mulaw;rate=8000",
                         "extra_headers": "token=t"}


async def test_retries_429_and_5xx_honouring_retry_after() -> None:
    rec = Recorder(httpx.Response(429, headers={"Retry-After": "0.01"},
                                  json={"api_id": "a", "error": "slow down"}),
                   httpx.Response(503, json={"api_id": "a", "error": "busy"}),
                   httpx.Response(201, json={"api_id": "a", "request_uuid": "r"}))
    rest = rest_with(rec)
    assert (await rest.create_call({}))["request_uuid"] == "r"
    await rest.aclose()
    assert len(rec.requests) == 3


async def test_gives_up_with_plivos_error_message() -> None:
    rec = Recorder(*[httpx.Response(500, json={"api_id": "a", "error": "boom"})] * 3)
    rest = rest_with(rec)
    with pytest.raises(CarrierError, match="HTTP 500: boom") as err:
        await rest.create_call({})
    await rest.aclose()
    assert err.value.retryable and len(rec.requests) == 3
    rec2 = Recorder(httpx.Response(400, json={"api_id": "a", "error": "invalid to"}))
    rest2 = rest_with(rec2)
    with pytest.raises(CarrierError, match="invalid to") as err2:
        await rest2.create_call({})
    await rest2.aclose()
    assert not err2.value.retryable and len(rec2.requests) == 1


async def test_transport_errors_are_retried_then_raised() -> None:
    calls = 0

    def boom(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        raise httpx.ConnectError("down", request=request)

    rest = PlivoRest(AUTH_ID, TOKEN, transport=httpx.MockTransport(boom), backoff_s=0.001)
    with pytest.raises(CarrierError, match="ConnectError") as err:
        await rest.hangup("u")
    await rest.aclose()
    assert err.value.retryable and calls == 3


async def test_404_is_tolerated_where_gone_is_fine() -> None:
    rec = Recorder(*[httpx.Response(404, json={"api_id": "a", "error": "not found"})] * 6)
    rest = rest_with(rec)
    assert await rest.hangup("u") is False
    assert await rest.cancel_request("r") is False
    assert await rest.get_live_call("u") is None
    assert await rest.get_queued_call("r") is None
    assert await rest.get_call("u") is None
    await rest.stop_streams("u")
    await rest.aclose()
    assert [r.url.params.get("status") for r in rec.requests[2:5]] == ["live", "queued", None]


def test_default_base_url_is_plivos() -> None:
    rest = PlivoRest(AUTH_ID, TOKEN)
    assert rest.url("Call") == f"https://api.plivo.com/v1/Account/{AUTH_ID}/Call/"
    assert PlivoRest(AUTH_ID, TOKEN, base_url="http://x/v1/").url("Call") == \
        f"http://x/v1/Account/{AUTH_ID}/Call/"


# -- the fake's REST API ------------------------------------------------------------------


async def test_fake_rest_lifecycle_through_our_client() -> None:
    callee = CalleeScript(answer_delay=5.0)
    async with FakePlivo(AUTH_ID, TOKEN, callee=callee) as fake:
        rest = PlivoRest(AUTH_ID, TOKEN, base_url=fake.api_base)
        created = await rest.create_call({"from": "15550009999", "to": "15550002222",
                                          "answer_url": "http://127.0.0.1:9/a"})
        request_uuid = created["request_uuid"]
        assert created["message"] == "call fired"
        assert await rest.get_queued_call(request_uuid) is not None
        call = fake.latest_call
        await fake.wait_for(lambda: call.status == "ringing")
        assert await rest.get_live_call(call.call_uuid) is not None
        assert await rest.get_call(call.call_uuid) is None  # no CDR while live
        assert await rest.cancel_request(request_uuid) is True
        assert call.status == "cancel" and call.hung_up_by == "cancel"
        cdr = await rest.get_call(call.call_uuid)
        assert cdr is not None and cdr["call_uuid"] == call.call_uuid
        assert await rest.hangup(call.call_uuid) is False  # already gone
        await rest.aclose()


@pytest.mark.parametrize(("body", "error"), [
    ({"to": "15550002222", "answer_url": "https://h/a"}, "from is required"),
    ({"from": "15550009999", "to": "abc", "answer_url": "https://h/a"}, "invalid to"),
    ({"from": "15550009999", "to": "15550002222"}, "answer_url is required"),
    ({"from": "15550009999", "to": "15550002222", "answer_url": "/relative"}, "not a valid URL"),
    ({"from": "15550009999", "to": "1555<1666", "answer_url": "https://h/a"}, "bulk"),
    ({"from": "15550009999", "to": "15550002222", "answer_url": "https://h/a",
      "hangupUrl": "https://h/h"}, "unexpected parameter"),
    ({"from": "15550009999", "to": "15550002222", "answer_url": "https://h/a",
      "ring_timeout": "soon"}, "ring_timeout must be an integer"),
])
async def test_fake_rest_is_strict_with_plivo_shaped_errors(body: dict[str, Any],
                                                            error: str) -> None:
    async with FakePlivo(AUTH_ID, TOKEN) as fake, httpx.AsyncClient(
            auth=(AUTH_ID, TOKEN), trust_env=False) as http:
        resp = await http.post(f"{fake.api_base}/v1/Account/{AUTH_ID}/Call/", json=body)
        assert resp.status_code == 400
        doc = resp.json()
        assert set(doc) == {"api_id", "error"} and error in doc["error"]
        assert not fake.calls


async def test_fake_rest_auth_paths_and_content_type() -> None:
    async with FakePlivo(AUTH_ID, TOKEN) as fake, httpx.AsyncClient(trust_env=False) as http:
        base = f"{fake.api_base}/v1/Account/{AUTH_ID}"
        unauth = await http.post(f"{base}/Call/", json={})
        assert unauth.status_code == 401 and "error" in unauth.json()
        no_slash = await http.post(f"{base}/Call", json={}, auth=(AUTH_ID, TOKEN))
        assert no_slash.status_code == 404 and "end with '/'" in no_slash.json()["error"]
        form = await http.post(f"{base}/Call/", data={"from": "1"}, auth=(AUTH_ID, TOKEN))
        assert form.status_code == 400 and "application/json" in form.json()["error"]
        other = await http.post(f"{fake.api_base}/v1/Account/MAYYYYYYYYYYYYYYYYYY/Call/",
                                json={}, auth=(AUTH_ID, TOKEN))
        assert other.status_code == 404
        fake.fail_next(503, error="maintenance")
        failed = await http.get(f"{base}/Call/x/", auth=(AUTH_ID, TOKEN))
        assert failed.status_code == 503 and failed.json()["error"] == "maintenance"


@pytest.fixture
def sdk_at() -> Iterator[Any]:
    """The official SDK pointed at a base URL (its voice base is a module constant)."""
    saved = (sdk_client.API_VOICE_BASE_URI, sdk_client.API_VOICE_BASE_URI_FALLBACK_1,
             sdk_client.API_VOICE_BASE_URI_FALLBACK_2)

    def make(base: str) -> Any:
        for name in ("API_VOICE_BASE_URI", "API_VOICE_BASE_URI_FALLBACK_1",
                     "API_VOICE_BASE_URI_FALLBACK_2"):
            setattr(sdk_client, name, f"{base}/v1/Account")
        client = plivo.RestClient(AUTH_ID, TOKEN)
        client.session.trust_env = False
        return client

    yield make
    (sdk_client.API_VOICE_BASE_URI, sdk_client.API_VOICE_BASE_URI_FALLBACK_1,
     sdk_client.API_VOICE_BASE_URI_FALLBACK_2) = saved


async def test_fake_accepts_the_official_sdks_requests(sdk_at: Any) -> None:
    """The SDK's own request shapes (defaults, quirks such as call_uuid in bodies) work."""
    async with FakePlivo(AUTH_ID, TOKEN, callee=CalleeScript(answer_delay=0.05)) as fake:
        client = sdk_at(fake.api_base)
        created = await asyncio.to_thread(
            client.calls.create, from_="15550009999", to_="15550002222",
            answer_url="https://voice.example.com/a", hangup_url="https://voice.example.com/h",
            ring_timeout=30)
        call = fake.latest_call
        assert created.request_uuid == call.request_uuid and call.ring_timeout == 30
        assert call.create_body["machine_detection_time"] == 5000  # the SDK's defaults
        await fake.wait_for(lambda: call.status == "in-progress" or call.is_terminal, 3)
        # The answer URL is not reachable (no gateway): the fake ended it as an app error.
        await fake.wait_for(lambda: call.is_terminal, 3)
        assert call.errors and call.errors[0].code == 7011
        cdr = await asyncio.to_thread(client.calls.get, call.call_uuid)
        assert cdr.call_uuid == call.call_uuid


async def test_fake_accepts_sdk_live_call_actions(sdk_at: Any, unused_tcp_port: int) -> None:
    # A call held on a long <Wait> by a tiny XML server, driven by the SDK.
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    async def answer(request: Any) -> Response:
        return Response('<Response><Wait length="60"/></Response>',
                        media_type="application/xml")

    import uvicorn
    server = uvicorn.Server(uvicorn.Config(Starlette(routes=[Route("/a", answer,
                                                                   methods=["POST"])]),
                                           port=unused_tcp_port, log_level="warning",
                                           lifespan="off"))
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:  # noqa: ASYNC110 - uvicorn has no "started" event
            await asyncio.sleep(0.01)
        async with FakePlivo(AUTH_ID, TOKEN, public_to_local={
                "voice.example.com": f"127.0.0.1:{unused_tcp_port}"}) as fake:
            client = sdk_at(fake.api_base)
            await asyncio.to_thread(client.calls.create, from_="15550009999",
                                    to_="15550002222", answer_url="https://voice.example.com/a")
            call = fake.latest_call
            await fake.wait_for(lambda: "Wait" in call.elements, 3)
            uid = call.call_uuid
            live = await asyncio.to_thread(client.live_calls.get, uid)
            assert live.call_status == "in-progress"
            await asyncio.to_thread(client.calls.send_digits, uid, "12w#", leg="aleg")
            await asyncio.to_thread(client.calls.speak, uid, "Hello there")
            assert call.digits_sent == ["12w#"] and call.heard == ["Hello there"]
            await asyncio.to_thread(client.calls.hangup, uid)
            assert call.status == "completed" and call.hung_up_by == "api"
    finally:
        server.should_exit = True
        await serving
