"""The REST shell: bearer auth, base URLs, retries with the same body, Telnyx errors."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from voicecall.carriers.telnyx import commands
from voicecall.carriers.telnyx.rest import TelnyxApiError, TelnyxRest, api_root
from voicecall.errors import CarrierError

CCID = "v3:abc-DEF_123"


def rest_with(responses: list[httpx.Response | Exception]) -> tuple[TelnyxRest, list[Any]]:
    seen: list[Any] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, str(request.url), request.headers.get("authorization"),
                     request.content))
        item = responses.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    return TelnyxRest("KEY123", base_url="http://127.0.0.1:9/v2", backoff_s=0.001,
                      transport=httpx.MockTransport(handler)), seen


def test_api_root() -> None:
    assert api_root(None) == "https://api.telnyx.com/v2"
    assert api_root("https://api.telnyx.com") == "https://api.telnyx.com/v2"
    assert api_root("http://127.0.0.1:8080/v2/") == "http://127.0.0.1:8080/v2"


async def test_retries_429_and_5xx_with_the_same_body() -> None:
    rest, seen = rest_with([
        httpx.Response(429, headers={"Retry-After": "0.01"}, json={"errors": []}),
        httpx.Response(503, json={"errors": [{"code": "10008", "title": "x"}]}),
        httpx.ConnectError("boom"),
        httpx.Response(200, json={"data": {"result": "ok"}}),
    ])
    rest._retries = 3
    cmd = commands.speak("hi", call_id="c1", seq=1, client_state="eA==")
    assert await rest.action(CCID, cmd) == {"result": "ok"}
    await rest.aclose()
    assert len(seen) == 4 and len({s[3] for s in seen}) == 1  # same command_id each time
    assert all(s[2] == "Bearer KEY123" for s in seen)
    assert seen[0][1] == "http://127.0.0.1:9/v2/calls/v3:abc-DEF_123/actions/speak"


async def test_errors_carry_telnyx_codes() -> None:
    rest, _ = rest_with([httpx.Response(422, json={"errors": [
        {"code": "90018", "title": "Call has already ended", "detail": "gone"}]})])
    with pytest.raises(TelnyxApiError) as info:
        await rest.action(CCID, commands.hangup(call_id="c1"))
    assert info.value.codes == ("90018",) and info.value.call_ended
    assert "90018: Call has already ended (gone)" in str(info.value)
    assert not info.value.retryable
    rest2, _ = rest_with([httpx.Response(500, json={})] * 3)
    with pytest.raises(TelnyxApiError) as info2:
        await rest2.action(CCID, commands.hangup(call_id="c1"))
    assert info2.value.retryable and info2.value.status_code == 500
    rest3, _ = rest_with([httpx.ConnectError("x")] * 3)
    with pytest.raises(CarrierError) as info3:
        await rest3.dial(commands.dial(connection_id="c", to="+1", from_="+2",
                                       webhook_url="https://x/y", client_state="eA==",
                                       call_id="c1", timeout_secs=30))
    assert info3.value.retryable
    for r in (rest, rest2, rest3):
        await r.aclose()


async def test_fetch_and_shapes() -> None:
    rest, seen = rest_with([
        httpx.Response(404, json={"errors": [{"code": "10005"}]}),
        httpx.Response(200, json={"data": {"is_alive": True}}),
        httpx.Response(200, text="not json"),
        httpx.Response(200, json={"nodata": 1}),
    ])
    assert await rest.fetch_call(CCID) is None
    assert await rest.fetch_call(CCID) == {"is_alive": True}
    assert seen[0][0] == "GET" and seen[0][1].endswith("/v2/calls/v3:abc-DEF_123")
    for _ in range(2):
        with pytest.raises(CarrierError):
            await rest.fetch_call(CCID)
    with pytest.raises(CarrierError):
        await rest.dial(commands.hangup(call_id="x"))
    with pytest.raises(CarrierError):
        await rest.action(CCID, commands.dial(connection_id="c", to="+1", from_="+2",
                                              webhook_url="https://x/y", client_state="eA==",
                                              call_id="c1", timeout_secs=30))
    await rest.aclose()


async def test_client_state_update_is_a_put() -> None:
    rest, seen = rest_with([httpx.Response(200, json={"data": {"result": "ok"}})])
    await rest.action(CCID, commands.client_state_update(client_state="eA=="))
    assert seen[0][0] == "PUT" and json.loads(seen[0][3]) == {"client_state": "eA=="}
    await rest.aclose()
