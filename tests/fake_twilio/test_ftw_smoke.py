from __future__ import annotations

from conftest import PUBLIC, MiniGateway, create_call, twiml
import httpx

from voicecall.testing.fake_twilio import FakeTwilio


async def test_smoke(gateway: MiniGateway, fake: FakeTwilio, rest: httpx.AsyncClient) -> None:
    gateway.twiml("/voice", twiml("<Say>Hello there</Say>", "<Hangup/>"))
    body = await create_call(rest, Url=f"{PUBLIC}/voice?callId=c1")
    call = await fake.wait_for_status(body["sid"], "completed")
    await fake.wait_for(lambda: len(call.status_callbacks()) == 4)
    print(call.heard, [(h.path, h.valid, h.params.get("CallStatus")) for h in gateway.hits])
    print(fake.events)
    assert call.heard == ["Hello there"]
