"""The fake Telnyx, checked against the official SDK over real loopback sockets.

The SDK's async client drives the fake's REST API (so the fake accepts the real
request shapes and answers in shapes the SDK parses), and every webhook the fake
sends is verified and parsed by the SDK's own webhook code.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import telnyx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from telnyx.lib.webhook_verification import verify_webhook_signature

from voicecall.testing.fake_telnyx import (
    CalleeScript,
    FakeTelnyx,
    Press,
    TelnyxApiError,
    Timings,
    validate,
)

API_KEY = "KEY-fake-tests"
CONNECTION = "2100000000000000009"


class Receiver:
    """A stand-in application: verifies each webhook with the SDK, then records it."""

    def __init__(self, fake: FakeTelnyx) -> None:
        self.fake = fake
        self.events: list[Any] = []
        self.raw: list[tuple[dict[str, str], bytes]] = []
        self.status = 200
        self.client = telnyx.Telnyx(api_key="unused", public_key=None)

    async def handle(self, request: Request) -> Response:
        body = await request.body()
        headers = dict(request.headers)
        self.raw.append((headers, body))
        verify_webhook_signature(body, headers, self.fake.public_key)
        self.client.webhooks._unwrap_hmac(  # type: ignore[attr-defined]
            body.decode(), headers=headers, key=self.fake.public_key)  # strict variant too
        self.events.append(self.client.webhooks.unwrap(body.decode(), headers=headers,
                                                       key=self.fake.public_key).data)
        return PlainTextResponse("ok", status_code=self.status)

    def kinds(self, ccid: str | None = None) -> list[str]:
        return [e.event_type for e in self.events
                if ccid is None or e.payload.call_control_id == ccid]


@contextlib.asynccontextmanager
async def stack(callee: CalleeScript | None = None, timings: Timings | None = None,
                ) -> AsyncIterator[tuple[FakeTelnyx, Receiver, telnyx.AsyncTelnyx]]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    fake = FakeTelnyx(API_KEY, CONNECTION, callee=callee,
                      timings=timings or Timings(webhook_retries=0),
                      public_to_local={"app.example.com": f"127.0.0.1:{port}"},
                      connection_webhook_url="https://app.example.com/hook")
    receiver = Receiver(fake)
    app = Starlette(routes=[Route("/hook", receiver.handle, methods=["POST"])])
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:  # noqa: ASYNC110 - uvicorn offers no started event
        await asyncio.sleep(0.005)
    try:
        async with fake:
            client = telnyx.AsyncTelnyx(api_key=API_KEY, base_url=fake.api_base, max_retries=0)
            try:
                yield fake, receiver, client
            finally:
                await client.close()
    finally:
        server.should_exit = True
        await task


async def test_sdk_dials_speaks_and_hangs_up_through_the_fake() -> None:
    callee = CalleeScript(replies=["Yes, that works.", Press("7")])

    async def run() -> None:
        async with stack(callee) as (fake, rx, client):
            dialled = await client.calls.dial(
                connection_id=CONNECTION, to="+14155551234", from_="+15005550006",
                client_state="eyJjIjoiMSJ9", command_id="dial-1", timeout_secs=30,
                webhook_url="https://app.example.com/hook")
            assert dialled.data is not None and dialled.data.is_alive is False
            ccid = dialled.data.call_control_id
            await fake.wait_for(lambda: "call.answered" in rx.kinds(ccid))
            resp = await client.calls.actions.speak(ccid, payload="Hello there",
                                                    voice="AWS.Polly.Joanna-Neural",
                                                    command_id="s-1")
            assert resp.data is not None and resp.data.result == "ok"
            # The same command_id again is acknowledged and ignored.
            await client.calls.actions.speak(ccid, payload="Hello there", voice="female",
                                             command_id="s-1")
            await fake.wait_for(lambda: "call.speak.ended" in rx.kinds(ccid))
            await client.calls.actions.start_transcription(
                ccid, transcription_engine="Google",
                transcription_engine_config={"transcription_engine": "Google",
                                             "language": "en"})
            await fake.wait_for(lambda: "call.transcription" in rx.kinds(ccid))
            transcript = next(e for e in rx.events if e.event_type == "call.transcription")
            assert transcript.payload.transcription_data.transcript == "Yes, that works."
            assert transcript.payload.client_state == "eyJjIjoiMSJ9"  # echoed state
            await client.calls.actions.update_client_state(ccid, client_state="eA==")
            await fake.wait_for(lambda: "call.dtmf.received" in rx.kinds(ccid))
            await client.calls.actions.send_dtmf(ccid, digits="1w2#", duration_millis=200)
            status = await client.calls.retrieve_status(ccid)
            assert status.data is not None and status.data.is_alive is True
            await client.calls.actions.hangup(ccid)
            await fake.wait_for(lambda: "call.hangup" in rx.kinds(ccid))
            hangup = [e for e in rx.events if e.event_type == "call.hangup"][0]
            assert hangup.payload.hangup_cause == "normal_clearing"
            assert hangup.payload.hangup_source == "caller"
            call = fake.calls[ccid]
            assert call.heard == ["Hello there"] and call.dtmf_received == ["1w2#"]
            assert [r.duplicate for r in call.requests if r.action == "speak"] == [False, True]
            assert rx.kinds(ccid)[:2] == ["call.initiated", "call.answered"]
            with pytest.raises(telnyx.UnprocessableEntityError) as ended:
                await client.calls.actions.speak(ccid, payload="late", voice="female")
            assert ended.value.body["errors"][0]["code"] == "90018"  # type: ignore[index]
            status = await client.calls.retrieve_status(ccid)
            assert status.data is not None and status.data.is_alive is False
            # Every delivery carried a fresh, correctly signed timestamp.
            assert all("telnyx-signature-ed25519" in h for h, _ in rx.raw)
    await asyncio.wait_for(run(), 15)


async def test_inbound_call_waits_for_answer_or_reject() -> None:
    async def run() -> None:
        async with stack(timings=Timings(webhook_retries=0, inbound_answer_timeout=0.3)) as (
                fake, rx, client):
            ccid = await fake.place_inbound("+15550001111", "+15550009999")
            first = rx.events[0]
            assert (first.event_type, first.payload.direction, first.payload.state) == (
                "call.initiated", "incoming", "parked")
            await client.calls.actions.answer(ccid, client_state="eA==", command_id="a1")
            await fake.wait_for(lambda: "call.answered" in rx.kinds(ccid))
            with pytest.raises(telnyx.UnprocessableEntityError):  # answered already
                await client.calls.actions.reject(ccid, cause="CALL_REJECTED")
            rejected = await fake.place_inbound("+15550001111", "+15550009999")
            await client.calls.actions.reject(rejected, cause="USER_BUSY")
            await fake.wait_for(lambda: "call.hangup" in rx.kinds(rejected))
            assert fake.calls[rejected].hangup_cause == "user_busy"
            assert fake.calls[rejected].answered is None
            ignored = await fake.place_inbound("+15550001111", "+15550009999")
            await fake.wait_for(lambda: "call.hangup" in rx.kinds(ignored), 3)
            assert fake.calls[ignored].errors == ["inbound call was never answered"]
            assert fake.calls[ignored].hangup_cause == "originator_cancel"
    await asyncio.wait_for(run(), 15)


async def test_errors_are_telnyx_shaped() -> None:
    async def run() -> None:
        async with stack() as (fake, rx, client):
            with pytest.raises(telnyx.UnprocessableEntityError) as bad:
                await client.calls.dial(connection_id=CONNECTION, to="not-a-number",
                                        from_="+15005550006")
            assert bad.value.body["errors"][0]["source"] == {"pointer": "/to"}  # type: ignore[index]
            with pytest.raises(telnyx.UnprocessableEntityError) as unknown:
                await client.calls.dial(connection_id=CONNECTION, to="+14155551234",
                                        from_="+15005550006", extra_body={"tipo": 1})
            assert "tipo" in unknown.value.body["errors"][0]["detail"]  # type: ignore[index]
            with pytest.raises(telnyx.UnprocessableEntityError):
                await client.calls.dial(connection_id="someone-else", to="+14155551234",
                                        from_="+15005550006")
            with pytest.raises(telnyx.NotFoundError):
                await client.calls.actions.hangup("v3:nope")
            wrong = telnyx.AsyncTelnyx(api_key="wrong", base_url=fake.api_base, max_retries=0)
            with pytest.raises(telnyx.AuthenticationError):
                await wrong.calls.retrieve_status("v3:nope")
            await wrong.close()
            fake.fail_next(503, count=1, retry_after=0.01)
            with pytest.raises(telnyx.InternalServerError) as unavailable:
                await client.calls.retrieve_status("v3:nope")
            assert unavailable.value.response.headers["retry-after"] == "0.01"
            assert not fake.calls
    await asyncio.wait_for(run(), 15)


async def test_webhook_failures_are_redelivered_with_fresh_signatures() -> None:
    async def run() -> None:
        async with stack(timings=Timings(webhook_retries=2, webhook_retry_delay=0.01)) as (
                fake, rx, client):
            rx.status = 500
            ccid = await fake.place_inbound("+15550001111", "+15550009999")
            await fake.wait_for(lambda: fake.calls[ccid].errors)
            bodies = [json.loads(b) for _, b in rx.raw]
            assert {b["data"]["id"] for b in bodies} == {bodies[0]["data"]["id"]}
            assert [b["meta"]["attempt"] for b in bodies] == [1, 2, 3]
            assert fake.calls[ccid].errors == ["webhook call.initiated failed: HTTP 500"]
    await asyncio.wait_for(run(), 15)


def test_keys_are_exposed_in_every_form() -> None:
    fake = FakeTelnyx(seed=bytes(range(32)))
    from voicecall.carriers.telnyx.signature import load_public_key
    raw = load_public_key(fake.public_key)
    assert load_public_key(fake.public_key_der) == raw == load_public_key(fake.public_key_pem)


@pytest.mark.parametrize(("action", "body", "param"), [
    ("speak", {"payload": "x"}, "voice"),
    ("speak", {"payload": "x" * 3001, "voice": "female"}, "payload"),
    ("speak", {"payload": "x", "voice": "female", "language": "xx"}, "language"),
    ("send_dtmf", {"digits": "12x"}, "digits"),
    ("send_dtmf", {"digits": "1", "duration_millis": 50}, "duration_millis"),
    ("answer", {"client_state": "not base64!"}, "client_state"),
    ("answer", {"stream_url": "https://not-a-ws"}, "stream_url"),
    ("answer", {"stream_bidirectional_sampling_rate": 8000}, "stream_bidirectional_sampling_rate"),
    ("reject", {"cause": "NOPE"}, "cause"),
    ("transcription_start", {"transcription_engine": "Whisper"}, "transcription_engine"),
    ("client_state_update", {}, "client_state"),
    ("hangup", {"command_id": ""}, "command_id"),
])
def test_strict_validation(action: str, body: dict[str, Any], param: str) -> None:
    with pytest.raises(TelnyxApiError) as info:
        validate(action, body)
    assert info.value.status == 422 and info.value.source == param
