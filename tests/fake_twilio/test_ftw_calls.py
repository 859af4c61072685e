"""Call simulation: signed webhooks, the TwiML interpreter, inbound calls, security knobs.

Every webhook the stand-in gateway receives is checked with the official SDK's
``RequestValidator`` against the public URL.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from conftest import (
    FROM,
    PUBLIC,
    PUBLIC_HOST,
    TO,
    FakeFactory,
    Hit,
    MiniGateway,
    client_for,
    create_call,
    twiml,
)
from starlette.responses import Response

from voicecall.testing.fake_twilio import (
    APP_ERROR_SPEECH,
    CalleeScript,
    FakeTwilio,
    Press,
)


async def test_outbound_status_callbacks_are_signed_and_sequenced(
        gateway: MiniGateway, fake: FakeTwilio, rest: httpx.AsyncClient) -> None:
    body = await create_call(rest, Twiml=twiml("<Say>Your table is booked.</Say>",
                                               '<Pause length="1"/>', "<Hangup/>"))
    call = await fake.wait_for_status(body["sid"], "completed")
    # The fake records a webhook once the response is in, a moment after the gateway saw it.
    await fake.wait_for(lambda: len(call.status_callbacks()) == 4)
    hits = gateway.hits_for("/status")
    assert all(h.valid for h in hits)
    assert [h.params["CallStatus"] for h in hits] == ["initiated", "ringing", "in-progress",
                                                      "completed"]
    assert [h.params["SequenceNumber"] for h in hits] == ["0", "1", "2", "3"]
    assert hits[0].public_url == f"{PUBLIC}/status?callId=c1&type=status"
    for hit in hits:
        assert hit.params["CallSid"] == call.sid
        assert hit.params["Direction"] == "outbound-api"
        assert hit.params["ApiVersion"] == "2010-04-01"
        assert hit.params["CallbackSource"] == "call-progress-events"
        assert (hit.params["From"], hit.params["To"]) == (FROM, TO)
        assert hit.headers["host"] == PUBLIC_HOST
        assert hit.headers["content-type"] == "application/x-www-form-urlencoded"
        assert hit.headers["i-twilio-idempotency-token"]
    assert "CallDuration" in hits[-1].params and "CallDuration" not in hits[0].params
    assert call.heard == ["Your table is booked."]
    assert call.verbs == ["Say", "Pause", "Hangup"]
    assert [w.signature for w in call.status_callbacks()] == [h.signature for h in hits]


async def test_only_completed_callback_by_default(
        gateway: MiniGateway, fake: FakeTwilio, rest: httpx.AsyncClient) -> None:
    response = await rest.post("/Calls.json", data={
        "To": TO, "From": FROM, "Twiml": twiml("<Hangup/>"),
        "StatusCallback": f"{PUBLIC}/status", "StatusCallbackMethod": "GET"})
    call = await fake.wait_for_status(response.json()["sid"], "completed")
    await fake.wait_for(lambda: len(call.status_callbacks()) == 1)
    [hit] = gateway.hits_for("/status")
    # GET: params travel in the query string and are signed as part of the URL.
    assert hit.method == "GET" and hit.valid
    assert "CallStatus=completed" in hit.public_url
    assert call.status_callbacks()[0].method == "GET"


@pytest.mark.parametrize("mode", ["busy", "no-answer", "failed"])
async def test_unanswered_calls(gateway: MiniGateway, make_fake: FakeFactory, mode: str) -> None:
    fake = await make_fake(CalleeScript(answer=mode))  # type: ignore[arg-type]
    async with client_for(fake) as rest:
        body = await create_call(rest, Url=f"{PUBLIC}/voice")
    call = await fake.wait_for_status(body["sid"], mode)
    await fake.wait_for(lambda: len(gateway.hits_for("/status")) == 3)
    assert [h.params["CallStatus"] for h in gateway.hits_for("/status")] == [
        "initiated", "ringing", mode]
    assert gateway.hits_for("/voice") == [] and call.answered is None


async def test_gather_conversation_round_trip(gateway: MiniGateway, make_fake: FakeFactory) -> None:
    fake = await make_fake(CalleeScript(replies=["I'd like a table", "Two people"]))

    def turn(hit: Hit) -> str:
        n = len(gateway.hits_for("/gather"))
        if "SpeechResult" not in hit.params:
            return twiml("<Say>Sorry?</Say>")
        if n >= 2:
            return twiml("<Say>Booked, bye.</Say>", "<Hangup/>")
        return twiml(f'<Gather input="speech" action="/gather?turn={n + 1}" speechTimeout="auto">'
                     f"<Say>You said {hit.params['SpeechResult']}.</Say></Gather>")

    gateway.twiml("/voice", twiml('<Gather input="speech" action="/gather?turn=1" '
                                  'language="en-US" timeout="5"><Say>Hello, how can I help?</Say>'
                                  "</Gather>"))
    gateway.twiml("/gather", turn)
    async with client_for(fake) as rest:
        body = await create_call(rest, Url=f"{PUBLIC}/voice?callId=c1")
    call = await fake.wait_for_status(body["sid"], "completed")
    voice = gateway.hits_for("/voice")[0]
    assert voice.valid and voice.params["CallStatus"] == "in-progress"
    gathers = gateway.hits_for("/gather")
    assert [h.public_url for h in gathers] == [f"{PUBLIC}/gather?turn=1", f"{PUBLIC}/gather?turn=2"]
    assert [h.params["SpeechResult"] for h in gathers] == ["I'd like a table", "Two people"]
    assert all(h.valid and h.params["Confidence"] == "0.92" for h in gathers)
    assert call.heard == ["Hello, how can I help?", "You said I'd like a table.",
                          "Booked, bye."]
    assert call.callee_said == ["I'd like a table", "Two people"]
    assert [w.kind for w in call.webhooks if w.kind != "status"] == ["voice", "gather", "gather"]


async def test_gather_without_reply(gateway: MiniGateway, fake: FakeTwilio,
                                    rest: httpx.AsyncClient) -> None:
    # No replies: actionOnEmptyResult posts without SpeechResult...
    gateway.twiml("/voice", twiml('<Gather input="speech" action="/gather" timeout="3" '
                                  'actionOnEmptyResult="true"/>'))
    gateway.twiml("/gather", twiml(
        # ...and without it, execution falls through to the next verb.
        '<Gather input="speech dtmf" timeout="3"/>', '<Redirect method="GET">/again?x=1</Redirect>'))
    gateway.twiml("/again", twiml("<Hangup/>"))
    body = await create_call(rest, Url=f"{PUBLIC}/voice")
    call = await fake.wait_for_status(body["sid"], "completed")
    empty = gateway.hits_for("/gather")[0]
    assert empty.valid and "SpeechResult" not in empty.params
    again = gateway.hits_for("/again")[0]
    assert again.method == "GET" and again.valid
    assert again.public_url.startswith(f"{PUBLIC}/again?x=1&") and "CallSid=" in again.public_url
    assert call.verbs == ["Gather", "Gather", "Redirect", "Hangup"]


async def test_gather_dtmf_reply_and_callee_hangs_up_when_done(
        gateway: MiniGateway, make_fake: FakeFactory) -> None:
    fake = await make_fake(CalleeScript(replies=[Press("42#")], hangup_when_done=True))
    gateway.twiml("/voice", twiml('<Gather input="dtmf" action="/g"/>'))
    gateway.twiml("/g", twiml('<Gather input="speech" action="/g"><Say>Thanks</Say></Gather>'))
    async with client_for(fake) as rest:
        body = await create_call(rest, Url=f"{PUBLIC}/voice")
    call = await fake.wait_for_status(body["sid"], "completed")
    hit = gateway.hits_for("/g")[0]
    assert hit.params["Digits"] == "42" and hit.params["FinishedOnKey"] == "#"
    assert call.hung_up_by == "callee" and call.heard == ["Thanks"]


async def test_play_digits_validation(gateway: MiniGateway, fake: FakeTwilio,
                                      rest: httpx.AsyncClient) -> None:
    body = await create_call(rest, SendDigits="ww12", Twiml=twiml(
        '<Play digits="w1234#"/>', '<Play digits="12x"/>', "<Say>done</Say>"))
    call = await fake.wait_for_status(body["sid"], "completed")
    assert call.digits_played == ["ww12", "w1234#"]
    assert [(e.code, e.level) for e in call.errors] == [(13430, "warning")]
    assert call.heard == ["done"]  # a bad digit string is skipped, not fatal


@pytest.mark.parametrize(("route", "code"), [
    (Response("boom", status_code=500), 11200),
    (Response('{"not": "twiml"}', media_type="application/json"), 12300),
    (twiml("<Dance/>"), 12200),
    ("<Response><Say>unclosed</Response>", 12100),
    (twiml("<Say>ok</Say>", '<Redirect>/garbage</Redirect>'), 12100),
])
async def test_application_errors_fail_the_call(
        gateway: MiniGateway, fake: FakeTwilio, rest: httpx.AsyncClient,
        route: str | Response, code: int) -> None:
    gateway.twiml("/voice", lambda _hit: route)
    gateway.twiml("/garbage", "not xml at all <")
    body = await create_call(rest, Url=f"{PUBLIC}/voice")
    call = await fake.wait_for_status(body["sid"], "failed")
    assert call.errors[-1].code == code and call.hung_up_by == "error"
    assert call.heard[-1] == APP_ERROR_SPEECH
    await fake.wait_for(lambda: gateway.hits_for("/status")[-1:]
                        and gateway.hits_for("/status")[-1].params["CallStatus"] == "failed")


async def test_fallback_url_is_tried_and_non_loopback_is_refused(
        gateway: MiniGateway, fake: FakeTwilio, rest: httpx.AsyncClient) -> None:
    gateway.twiml("/voice", lambda _hit: Response(status_code=503))
    gateway.twiml("/fallback", twiml("<Say>fallback</Say>"))
    body = await create_call(rest, Url=f"{PUBLIC}/voice", FallbackUrl=f"{PUBLIC}/fallback")
    call = await fake.wait_for_status(body["sid"], "completed")
    assert call.heard == ["fallback"]
    fallback = gateway.hits_for("/fallback")[0]
    assert fallback.valid and fallback.params["ErrorCode"] == "11200"

    body = await create_call(rest, Url="https://elsewhere.example.org/voice")
    call = await fake.wait_for_status(body["sid"], "failed")
    assert call.errors[0].code == 11205 and "non-loopback" in call.errors[0].message


async def test_inbound_call_flow(gateway: MiniGateway, make_fake: FakeFactory) -> None:
    fake = await make_fake(CalleeScript(replies=["Hi, it's Ann"]))
    gateway.twiml("/voice", twiml('<Gather input="speech" action="/gather">'
                                  "<Say>Hello, who is this?</Say></Gather>"))
    gateway.twiml("/gather", twiml("<Say>Bye</Say>"))
    sid = await fake.place_inbound("+15551230000", "+15557654321", f"{PUBLIC}/voice?in=1",
                                   status_callback=f"{PUBLIC}/status",
                                   params={"FromCountry": "US"})
    voice = gateway.hits_for("/voice")[0]  # delivered before place_inbound returned
    assert voice.valid
    assert voice.params["Direction"] == "inbound" and voice.params["CallStatus"] == "ringing"
    assert voice.params["CallSid"] == sid and voice.params["FromCountry"] == "US"
    call = await fake.wait_for_status(sid, "completed")
    assert call.answered is not None and call.heard == ["Hello, who is this?", "Bye"]
    assert gateway.hits_for("/gather")[0].params["SpeechResult"] == "Hi, it's Ann"
    await fake.wait_for(lambda: gateway.hits_for("/status"))
    assert gateway.hits_for("/status")[0].params["CallStatus"] == "completed"


@pytest.mark.parametrize(("reason", "status"), [("busy", "busy"), ("rejected", "no-answer")])
async def test_inbound_reject_is_never_answered(gateway: MiniGateway, fake: FakeTwilio,
                                                reason: str, status: str) -> None:
    gateway.twiml("/voice", twiml(f'<Reject reason="{reason}"/>', "<Say>unreachable</Say>"))
    sid = await fake.place_inbound("+15551230000", TO, f"{PUBLIC}/voice")
    call = await fake.wait_for_status(sid, status)
    assert call.answered is None and call.heard == [] and call.hung_up_by == "twiml"


async def test_enqueue_holds_until_redirected(gateway: MiniGateway, fake: FakeTwilio,
                                              rest: httpx.AsyncClient) -> None:
    gateway.twiml("/voice", twiml('<Say voice="alice">Please hold.</Say>',
                                  '<Enqueue waitUrl="/hold">hold-queue</Enqueue>'))
    gateway.twiml("/resume", twiml("<Say>Thanks for holding</Say>"))
    sid = await fake.place_inbound("+15551230000", TO, f"{PUBLIC}/voice")
    call = fake.calls[sid]
    await fake.wait_for(lambda: call.enqueued == ["hold-queue"])
    response = await rest.post(f"/Calls/{sid}.json", data={"Url": f"{PUBLIC}/resume"})
    assert response.status_code == 200
    await fake.wait_for_status(sid, "completed")
    assert call.heard == ["Please hold.", "Thanks for holding"]
    resume = gateway.hits_for("/resume")[0]
    assert resume.valid and resume.params["CallStatus"] == "in-progress"


@pytest.fixture
async def quiet_call(gateway: MiniGateway, fake: FakeTwilio,
                     rest: httpx.AsyncClient) -> AsyncIterator[str]:
    """An answered call doing nothing, for tests of the webhook knobs."""
    gateway.twiml("/voice", twiml('<Pause length="100"/>'))
    body = await create_call(rest, Url=f"{PUBLIC}/voice")
    await fake.wait_for_status(body["sid"], "in-progress")
    yield body["sid"]


async def test_wrong_token_tampering_and_overrides(gateway: MiniGateway, fake: FakeTwilio,
                                                   quiet_call: str) -> None:
    url = f"{PUBLIC}/probe?x=1"
    params = {"CallSid": quiet_call, "CallStatus": "in-progress"}
    await fake.send_webhook(url, params)
    fake.sign_with("not-the-token")
    await fake.send_webhook(url, params)
    fake.sign_with(None)
    fake.tamper_next_webhook()
    await fake.send_webhook(url, params)
    await fake.send_webhook(url, params)
    fake.signature_override = "c2lnbmF0dXJl"
    await fake.send_webhook(url, params)
    fake.signature_override = None
    await fake.send_webhook(url, params, sign=False)
    hits = gateway.hits_for("/probe")
    assert [h.valid for h in hits] == [True, False, False, True, False, False]
    assert hits[4].signature == "c2lnbmF0dXJl" and hits[5].signature is None
    assert fake.sign(url, params) == hits[0].signature


async def test_raw_bodies_replay_and_forwarded_headers(gateway: MiniGateway,
                                                       make_fake: FakeFactory) -> None:
    fake = await make_fake(forwarded_headers=True)
    url = f"{PUBLIC}/probe"

    async def slow() -> AsyncIterator[bytes]:
        yield b"CallSid=CA1"
        yield b"&extra=2"

    response = await fake.send_webhook(url, {"CallSid": "CA1"}, body_override=slow(),
                                       extra_headers={"X-Test": "1"})
    assert response.status_code == 200
    hit = gateway.hits[-1]
    assert hit.params == {"CallSid": "CA1", "extra": "2"} and not hit.valid
    assert hit.headers["x-test"] == "1"
    assert hit.headers["x-forwarded-proto"] == "https"
    assert hit.headers["x-forwarded-host"] == PUBLIC_HOST
    assert hit.headers["x-forwarded-for"] == "54.172.60.1"

    await fake.send_webhook(url, {"CallSid": "CA2", "CallStatus": "ringing"})
    original = fake.webhooks[-1]
    await fake.replay(original)
    first, replayed = gateway.hits[-2:]
    assert replayed.valid and replayed.signature == first.signature
    assert replayed.params == first.params
    # A fresh idempotency token, as on a real Twilio retry; the signature is unchanged.
    assert replayed.headers["i-twilio-idempotency-token"] != first.headers[
        "i-twilio-idempotency-token"]


async def test_per_call_signature_override(gateway: MiniGateway, fake: FakeTwilio,
                                           rest: httpx.AsyncClient, quiet_call: str) -> None:
    call = fake.calls[quiet_call]
    call.signature_override = "bad"
    await rest.post(f"/Calls/{quiet_call}.json", data={"Status": "completed"})
    await fake.wait_for(lambda: len(gateway.hits_for("/status")) == 4)
    before, completed = gateway.hits_for("/status")[:3], gateway.hits_for("/status")[3]
    assert all(h.valid for h in before)
    assert completed.params["CallStatus"] == "completed"
    assert completed.signature == "bad" and not completed.valid


async def test_ring_timeout_is_honoured(gateway: MiniGateway, make_fake: FakeFactory) -> None:
    fake = await make_fake(CalleeScript(answer_delay=30))
    async with client_for(fake) as rest:
        body = await create_call(rest, Url=f"{PUBLIC}/voice", Timeout="1")
    call = await fake.wait_for_status(body["sid"], "no-answer", timeout=3)
    assert call.hung_up_by == "timeout" and gateway.hits_for("/voice") == []
    with pytest.raises(TimeoutError, match="call.ended"):
        await fake.wait_for(lambda: False, 0.05, what="never")
