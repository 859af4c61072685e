"""The fake's REST API: request shapes, auth, errors and fault injection.

The official SDK is the oracle for shapes: if ``twilio.rest.Client`` can create,
fetch and update calls against the fake, and parses its errors into the right
``TwilioRestException`` fields, the fake speaks Twilio's REST dialect.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx
import pytest
from conftest import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    FROM,
    PUBLIC,
    TO,
    FakeFactory,
    MiniGateway,
    client_for,
    create_call,
    twiml,
)
from twilio.base.exceptions import TwilioRestException  # type: ignore[import-untyped]
from twilio.rest import Client  # type: ignore[import-untyped]

from voicecall.testing.fake_twilio import CalleeScript, FakeTwilio

SID = re.compile(r"^CA[0-9a-f]{32}$")


def sdk_client(fake: FakeTwilio, token: str = AUTH_TOKEN) -> Client:
    client = Client(ACCOUNT_SID, token)
    client.api.base_url = fake.base_url  # the only change: api.twilio.com -> the fake
    return client


def error_shape(response: httpx.Response, status: int, code: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"code", "message", "more_info", "status"}
    assert body["code"] == code and body["status"] == status
    assert body["more_info"] == f"https://www.twilio.com/docs/errors/{code}"
    return body


async def test_sdk_create_fetch_update_round_trip(gateway: MiniGateway, fake: FakeTwilio) -> None:
    gateway.twiml("/voice", twiml('<Pause length="100"/>'))
    client = sdk_client(fake)
    created = await asyncio.to_thread(
        client.calls.create, to=TO, from_=FROM, url=f"{PUBLIC}/voice?callId=c1",
        status_callback=f"{PUBLIC}/status",
        status_callback_event=["initiated", "ringing", "answered", "completed"], timeout=30)
    assert SID.match(created.sid)
    assert created.status == "queued" and created.direction == "outbound-api"
    assert (created.to, created._from, created.account_sid) == (TO, FROM, ACCOUNT_SID)
    assert created.uri == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/{created.sid}.json"

    call = fake.calls[created.sid]
    request = call.requests[0]
    assert request.getlist("StatusCallbackEvent") == ["initiated", "ringing", "answered",
                                                      "completed"]
    assert request.form["Timeout"] == "30"
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"

    await fake.wait_for_status(created.sid, "in-progress")
    fetched = await asyncio.to_thread(client.calls(created.sid).fetch)
    assert fetched.status == "in-progress" and fetched.start_time is not None

    updated = await asyncio.to_thread(client.calls(created.sid).update, status="completed")
    assert updated.status == "completed"
    await fake.wait_for(lambda: call.status_callbacks()[-1].params["CallStatus"] == "completed")
    assert call.hung_up_by == "api"


async def test_auth_is_required_and_checked(fake: FakeTwilio) -> None:
    async with httpx.AsyncClient(base_url=fake.api_base, trust_env=False) as anon:
        response = await anon.post(f"/Accounts/{ACCOUNT_SID}/Calls.json",
                                    data={"To": TO, "From": FROM, "Twiml": "<Response/>"})
    body = error_shape(response, 401, 20003)
    assert body["message"] == "Authenticate"
    assert response.headers["www-authenticate"].startswith("Basic")
    with pytest.raises(TwilioRestException) as info:
        await asyncio.to_thread(sdk_client(fake, "wrong-token").calls.create,
                                to=TO, from_=FROM, twiml="<Response/>")
    assert (info.value.status, info.value.code) == (401, 20003)
    assert fake.calls == {}


@pytest.mark.parametrize(("params", "code"), [
    ({"To": ""}, 21201),
    ({"From": ""}, 21213),
    ({"To": "5551234567"}, 21211),
    ({"From": "not-a-number"}, 21212),
    ({"Twiml": "", "Url": ""}, 21205),
    ({"Url": "ftp://example.com/x", "Twiml": ""}, 21205),
    ({"Twiml": "<Response><Say>" + "x" * 4000 + "</Say></Response>"}, 32018),
    ({"StatusCallbackEvent": ["answered", "bogus"]}, 21626),
    ({"SendDigits": "12x"}, 21206),
])
async def test_create_validation_errors(rest: httpx.AsyncClient, fake: FakeTwilio,
                                        params: dict[str, Any], code: int) -> None:
    data: dict[str, Any] = {"To": TO, "From": FROM, "Twiml": "<Response/>"}
    data.update(params)
    error_shape(await rest.post("/Calls.json", data=data), 400, code)
    assert fake.calls == {}


async def test_unknown_call_and_path_are_404(rest: httpx.AsyncClient) -> None:
    missing = "CA" + "f" * 32
    error_shape(await rest.get(f"/Calls/{missing}.json"), 404, 20404)
    error_shape(await rest.post(f"/Calls/{missing}.json", data={"Status": "completed"}),
                404, 20404)
    error_shape(await rest.get("/Recordings.json"), 404, 20404)


async def test_redirect_before_answer_is_21220(make_fake: FakeFactory) -> None:
    fake = await make_fake(CalleeScript(answer_delay=5))
    async with client_for(fake) as rest:
        body = await create_call(rest, Twiml=twiml("<Say>hi</Say>"))
        await fake.wait_for_status(body["sid"], "ringing")
        body400 = error_shape(await rest.post(f"/Calls/{body['sid']}.json",
                                              data={"Twiml": twiml("<Hangup/>")}), 400, 21220)
        assert body400["message"] == "Call is not in-progress. Cannot redirect."
        with pytest.raises(TwilioRestException) as info:
            await asyncio.to_thread(sdk_client(fake).calls(body["sid"]).update,
                                    url=f"{PUBLIC}/voice")
        assert info.value.code == 21220
        # Cancelling a ringing call works, and ends it as canceled.
        response = await rest.post(f"/Calls/{body['sid']}.json", data={"Status": "canceled"})
        assert response.status_code == 200 and response.json()["status"] == "canceled"


async def test_fault_injection(rest: httpx.AsyncClient, fake: FakeTwilio) -> None:
    fake.fail_next(429, retry_after=2)
    fake.fail_next(500, count=2)
    data = {"To": TO, "From": FROM, "Twiml": twiml("<Hangup/>")}
    first = await rest.post("/Calls.json", data=data)
    error_shape(first, 429, 20429)
    assert first.headers["retry-after"] == "2"
    error_shape(await rest.post("/Calls.json", data=data), 500, 20500)
    error_shape(await rest.get("/Calls/CA0.json"), 500, 20500)
    assert (await rest.post("/Calls.json", data=data)).status_code == 201
    assert [r.status for r in fake.requests] == [429, 500, 500, 201]
    fake.fail_next(503, code=20503, message="try later")
    body = error_shape(await rest.post("/Calls.json", data=data), 503, 20503)
    assert body["message"] == "try later"


async def test_url_wins_over_twiml_and_delete_is_not_hangup(
        gateway: MiniGateway, fake: FakeTwilio, rest: httpx.AsyncClient) -> None:
    gateway.twiml("/voice", twiml('<Pause length="100"/>'))
    body = await create_call(rest, Url=f"{PUBLIC}/voice", Twiml=twiml("<Say>ignored</Say>"))
    call = await fake.wait_for_status(body["sid"], "in-progress")
    await fake.wait_for(lambda: call.verbs == ["Pause"])
    assert call.heard == [] and len(gateway.hits_for("/voice")) == 1

    assert (await rest.delete(f"/Calls/{call.sid}.json")).status_code == 204
    error_shape(await rest.get(f"/Calls/{call.sid}.json"), 404, 20404)
    assert call.status == "in-progress"  # deleting the record does not hang up


async def test_update_twiml_replaces_execution(
        gateway: MiniGateway, fake: FakeTwilio, rest: httpx.AsyncClient) -> None:
    body = await create_call(rest, Twiml=twiml('<Say>first</Say><Pause length="100"/>',
                                               "<Say>never</Say>"))
    call = await fake.wait_for_status(body["sid"], "in-progress")
    await fake.wait_for(lambda: call.verbs[-1:] == ["Pause"])
    response = await rest.post(f"/Calls/{call.sid}.json",
                               data={"Twiml": twiml("<Say>second</Say>", "<Hangup/>")})
    assert response.status_code == 200
    await fake.wait_for_status(call.sid, "completed")
    assert call.heard == ["first", "second"]
    assert call.hung_up_by == "twiml"
    # Completed calls can no longer be redirected; hanging up again is a no-op.
    error_shape(await rest.post(f"/Calls/{call.sid}.json", data={"Url": f"{PUBLIC}/v"}),
                400, 21220)
    again = await rest.post(f"/Calls/{call.sid}.json", data={"Status": "completed"})
    assert again.status_code == 200 and again.json()["status"] == "completed"
