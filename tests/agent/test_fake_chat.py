"""FakeChatServer speaks the Chat Completions wire format (sync use, raw HTTP)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import httpx
import pytest

from voicecall.testing.fake_chat import FakeChatServer, FakeReply

Chat = Callable[..., AbstractContextManager[FakeChatServer]]
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi there"}]}


@pytest.fixture(scope="module")
def shared_server() -> Iterator[FakeChatServer]:
    with FakeChatServer() as srv:
        yield srv


@pytest.fixture
def chat(shared_server: FakeChatServer) -> Chat:
    """``with chat(replies, **config) as srv``: the shared server, reset."""

    @contextmanager
    def configure(*args: Any, **kwargs: Any) -> Iterator[FakeChatServer]:
        yield shared_server.reset(*args, **kwargs)

    return configure


def sse_events(text: str) -> list[Any]:
    events = [line.removeprefix("data: ") for line in text.split("\n\n") if line]
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


def test_streaming_wire_format() -> None:
    with FakeChatServer([FakeReply("Hello!", reasoning="hmm")], chunk_size=3) as srv:
        response = httpx.post(f"{srv.base_url}/chat/completions",
                              json={**BODY, "stream": True})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    chunks = sse_events(response.text)
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert deltas[0] == {"role": "assistant", "content": "", "refusal": None}
    assert deltas[1:] == [{"reasoning_content": "hmm"}, {"content": "Hel"}, {"content": "lo!"},
                          {}]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert all("usage" not in c for c in chunks)  # only when asked for


def test_usage_chunk_when_requested(chat: Chat) -> None:
    with chat(["One two three."]) as srv:
        response = httpx.post(f"{srv.base_url}/chat/completions", json={
            **BODY, "stream": True, "stream_options": {"include_usage": True}})
    chunks = sse_events(response.text)
    assert all(c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 2, "completion_tokens": 3,
                                   "total_tokens": 5}


def test_non_streaming_wire_format(chat: Chat) -> None:
    with chat(["Plain."], reasoning="thinking") as srv:
        body = httpx.post(f"{srv.base_url}/chat/completions", json=BODY).json()
    assert body["object"] == "chat.completion" and body["model"] == "gpt-4o-mini"
    assert body["choices"][0]["message"] == {
        "role": "assistant", "content": "Plain.", "refusal": None,
        "reasoning_content": "thinking"}
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["total_tokens"] == 4  # 2 prompt + 1 content + 1 reasoning


def test_reply_sources_in_order(chat: Chat) -> None:
    with chat(["queued"], reply_fn=lambda body: "from fn",
                        default_reply="default") as srv:
        url = f"{srv.base_url}/chat/completions"

        def ask() -> str:
            content: str = httpx.post(url, json=BODY).json()["choices"][0]["message"]["content"]
            return content

        assert [ask(), ask()] == ["queued", "from fn"]
        srv.reply_fn = None
        srv.queue_reply("again")
        assert [ask(), ask()] == ["again", "default"]


def test_error_injection_and_recording(chat: Chat) -> None:
    with chat() as srv:
        srv.fail_next(429, "Rate limit reached", count=2, retry_after=1.5)
        url = f"{srv.base_url}/chat/completions"
        first = httpx.post(url, json=BODY, headers={"X-Test": "1"})
        second = httpx.post(url, json=BODY)
        third = httpx.post(url, json=BODY)
        recorded = srv.requests
    assert [r.status_code for r in (first, second, third)] == [429, 429, 200]
    assert first.headers["retry-after"] == "1.5"
    assert first.json() == {"error": {"message": "Rate limit reached",
                                      "type": "rate_limit_exceeded", "param": None,
                                      "code": None}}
    assert len(recorded) == 3 and recorded[0].json == BODY
    assert recorded[0].headers["x-test"] == "1" and recorded[0].path == "/v1/chat/completions"


@pytest.mark.parametrize(("headers", "fragment"), [
    ({}, "You didn't provide an API key"),
    ({"Authorization": "Bearer nope"}, "Incorrect API key provided: nope."),
    ({"Authorization": "Basic secret"}, "Incorrect API key provided"),
])
def test_bearer_token_required(chat: Chat, headers: dict[str, str], fragment: str) -> None:
    with chat(api_key="secret") as srv:
        url = f"{srv.base_url}/chat/completions"
        denied = httpx.post(url, json=BODY, headers=headers)
        allowed = httpx.post(url, json=BODY, headers={"Authorization": "Bearer secret"})
    assert denied.status_code == 401 and fragment in denied.json()["error"]["message"]
    assert allowed.status_code == 200


@pytest.mark.parametrize("body", [
    {"messages": [{"role": "user", "content": "x"}]},
    {"model": "m", "messages": []},
    {"model": "m", "messages": [{"role": "robot", "content": "x"}]},
    ["not", "an", "object"],
])
def test_malformed_requests_get_400(chat: Chat, body: object) -> None:
    with chat() as srv:
        response = httpx.post(f"{srv.base_url}/chat/completions", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_models_and_lifecycle() -> None:
    srv = FakeChatServer()
    with pytest.raises(RuntimeError):
        _ = srv.base_url
    srv.start()
    srv.start()  # idempotent
    try:
        models = httpx.get(f"{srv.base_url}/models").json()
        assert models["object"] == "list" and models["data"][0]["id"]
        srv.fail_next(500)
        httpx.post(f"{srv.base_url}/chat/completions", json=BODY)
        srv.reset(["fresh"])
        assert srv.requests == []
        reply = httpx.post(f"{srv.base_url}/chat/completions", json=BODY)
        assert reply.json()["choices"][0]["message"]["content"] == "fresh"
    finally:
        srv.stop()
        srv.stop()
