"""OpenAICompatResponder against FakeChatServer over real loopback sockets."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import pytest

from voicecall.agent import (
    SPOKEN_OUTPUT_CONTRACT,
    OpenAICompatResponder,
    ResponseRequest,
    Turn,
)
from voicecall.agent.openai_compat import resolve_model
from voicecall.errors import ProviderError
from voicecall.testing.fake_chat import FakeChatServer, FakeReply

MakeRequest = Callable[..., ResponseRequest]
Chat = Callable[..., AbstractAsyncContextManager[FakeChatServer]]
KEY = "sk-test-0123456789abcdef"


@pytest.fixture(scope="module")
def shared_server() -> Iterator[FakeChatServer]:
    # One server per module: starting and stopping one costs about 0.2 s.
    with FakeChatServer() as srv:
        yield srv


@pytest.fixture
def chat(shared_server: FakeChatServer) -> Chat:
    """``async with chat(replies, **config) as srv``: the shared server, reset."""

    @asynccontextmanager
    async def configure(*args: Any, **kwargs: Any) -> AsyncIterator[FakeChatServer]:
        yield shared_server.reset(*args, **kwargs)

    return configure


def responder(srv: FakeChatServer, api_key: str | None = None, **kwargs: Any
              ) -> OpenAICompatResponder:
    return OpenAICompatResponder(srv.base_url, api_key, retry_backoff_s=0.01, **kwargs)


async def test_streamed_reply_is_extracted(chat: Chat, make_request: MakeRequest) -> None:
    reply = '{"spoken":"Hello there, how can I help?"}'
    async with chat([reply], chunk_size=3) as srv:
        async with responder(srv) as bot:
            result = await bot.respond(make_request())
        body = srv.requests[0].json
    assert result.text == "Hello there, how can I help?"
    assert result.payloads == [{"text": reply}]
    assert result.first_token_ms is not None and 0 <= result.first_token_ms <= result.total_ms
    assert result.end_call is False
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["model"] == "gpt-4o-mini"


async def test_stream_text_yields_raw_deltas(chat: Chat, make_request: MakeRequest) -> None:
    async with chat(["Hello world, friend."], chunk_size=5) as srv:
        async with responder(srv) as bot:
            deltas = [d async for d in bot.stream_text(make_request())]
    assert deltas == ["Hello", " worl", "d, fr", "iend."]


async def test_fenced_json_reply(chat: Chat, make_request: MakeRequest) -> None:
    async with chat(['```json\n{"spoken":"Fenced works."}\n```']) as srv:
        async with responder(srv) as bot:
            assert (await bot.respond(make_request())).text == "Fenced works."


async def test_explicit_empty_reply_is_silence(chat: Chat, make_request: MakeRequest) -> None:
    async with chat(['{"spoken":""}']) as srv:
        async with responder(srv) as bot:
            result = await bot.respond(make_request())
    assert result.text is None and result.payloads == [{"text": '{"spoken":""}'}]


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
async def test_reasoning_deltas_are_never_spoken(chat: Chat, make_request: MakeRequest, field: str) -> None:
    thoughts = "The user said hello. I should greet them back."
    async with chat([FakeReply('{"spoken":"Hi!"}', reasoning=thoughts)],
                              reasoning_field=field, chunk_size=4) as srv:
        async with responder(srv) as bot:
            result = await bot.respond(make_request())
            deltas = [d async for d in bot.stream_text(make_request())]
    assert result.text == "Hi!"
    assert result.payloads == [{"text": thoughts, "isReasoning": True},
                               {"text": '{"spoken":"Hi!"}'}]
    assert "".join(deltas) == '{"spoken":"OK."}'  # the default reply, no reasoning


async def test_think_tags_in_content_are_reasoning(chat: Chat, make_request: MakeRequest) -> None:
    replies = ["<think>\nPlan: be brief.\n</think>\n\nSure, nine to five.",
               "Plan without opening tag.</think>Okay.",
               "<think>cut off mid-thought"]
    async with chat(replies) as srv:
        async with responder(srv) as bot:
            first = await bot.respond(make_request())
            second = await bot.respond(make_request())
            third = await bot.respond(make_request())
    assert first.text == "Sure, nine to five."
    assert first.payloads[0] == {"text": "\nPlan: be brief.\n", "isReasoning": True}
    assert second.text == "Okay."
    assert third.text is None and third.first_token_ms is not None


async def test_auth_header_present_only_with_key(chat: Chat, make_request: MakeRequest) -> None:
    async with chat() as srv:
        async with responder(srv, KEY, extra_headers={"X-Trace": "t1"}) as bot:
            await bot.respond(make_request())
        async with responder(srv) as bot:
            await bot.respond(make_request())
        with_key, without = srv.requests
    assert with_key.headers["authorization"] == f"Bearer {KEY}"
    assert with_key.headers["x-trace"] == "t1"
    assert "authorization" not in without.headers


async def test_401_is_final_and_never_leaks_the_key(chat: Chat, make_request: MakeRequest) -> None:
    wrong = "sk-wrong-key-that-must-not-leak"
    async with chat(api_key=KEY) as srv:
        async with responder(srv, wrong) as bot:
            with pytest.raises(ProviderError) as caught:
                await bot.respond(make_request())
        assert len(srv.requests) == 1  # not retried
    error = caught.value
    assert error.status_code == 401 and error.retryable is False
    assert "Incorrect API key provided" in str(error) and "invalid_api_key" in str(error)
    assert wrong not in str(error) and wrong not in repr(error)
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)


async def test_matching_key_is_accepted(make_request: MakeRequest) -> None:
    async with FakeChatServer(['{"spoken":"In."}'], api_key=KEY) as srv:
        async with responder(srv, KEY) as bot:
            assert (await bot.respond(make_request())).text == "In."


@pytest.mark.parametrize("status", [500, 503, 429])
async def test_retryable_status_retried_once(chat: Chat, make_request: MakeRequest, status: int) -> None:
    async with chat(['{"spoken":"Second time lucky."}']) as srv:
        srv.fail_next(status)
        async with responder(srv) as bot:
            result = await bot.respond(make_request())
        assert len(srv.requests) == 2
    assert result.text == "Second time lucky."


async def test_retry_after_is_honoured(chat: Chat, make_request: MakeRequest) -> None:
    async with chat() as srv:
        srv.fail_next(429, "Rate limit reached", retry_after=0.3)
        async with responder(srv) as bot:
            started = time.monotonic()
            await bot.respond(make_request())
            assert time.monotonic() - started >= 0.3


async def test_second_retryable_failure_is_raised(chat: Chat, make_request: MakeRequest) -> None:
    async with chat() as srv:
        srv.fail_next(502, "Bad gateway upstream", count=2)
        async with responder(srv) as bot:
            with pytest.raises(ProviderError) as caught:
                await bot.respond(make_request())
        assert len(srv.requests) == 2
    assert caught.value.retryable and caught.value.status_code == 502
    assert "Bad gateway upstream" in str(caught.value)


async def test_client_error_not_retried(chat: Chat, make_request: MakeRequest) -> None:
    async with chat() as srv:
        srv.fail_next(404, "The model `nope` does not exist", code="model_not_found")
        async with responder(srv) as bot:
            with pytest.raises(ProviderError) as caught:
                await bot.respond(make_request(model="nope"))
        assert len(srv.requests) == 1
    assert not caught.value.retryable and caught.value.status_code == 404
    assert str(caught.value) == (
        "chat completions HTTP 404: The model `nope` does not exist (model_not_found)")


async def test_timeout_before_first_token(chat: Chat, make_request: MakeRequest) -> None:
    async with chat(first_token_delay=5) as srv:
        async with responder(srv) as bot:
            started = time.monotonic()
            with pytest.raises(ProviderError) as caught:
                await bot.respond(make_request(timeout_ms=300))
            elapsed = time.monotonic() - started
    assert caught.value.retryable and "300 ms" in str(caught.value)
    assert 0.25 <= elapsed < 2


async def test_timeout_covers_the_whole_stream(chat: Chat, make_request: MakeRequest) -> None:
    async with chat(["x" * 40], chunk_size=1, chunk_delay=0.05) as srv:
        async with responder(srv) as bot:
            with pytest.raises(ProviderError, match="no complete reply within 400 ms"):
                await bot.respond(make_request(timeout_ms=400))
        assert len(srv.requests) == 1  # tokens were already streamed: no retry


async def test_unreachable_server_is_retryable(make_request: MakeRequest) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with OpenAICompatResponder(f"http://127.0.0.1:{port}/v1", KEY,
                                     retry_backoff_s=0.01) as bot:
        with pytest.raises(ProviderError) as caught:
            await bot.respond(make_request())
    assert caught.value.retryable and caught.value.status_code is None
    assert KEY not in str(caught.value)


@pytest.mark.parametrize(("configured", "sent"), [
    ("openai/gpt-4.1-nano", "gpt-4.1-nano"),
    ("ollama/qwen2.5:7b", "qwen2.5:7b"),
    ("vLLM/meta-llama/Llama-3.1-8B-Instruct", "meta-llama/Llama-3.1-8B-Instruct"),
    ("Qwen/Qwen2.5-7B-Instruct", "Qwen/Qwen2.5-7B-Instruct"),
    ("llama3.1", "llama3.1"),
])
async def test_model_prefix_handling(chat: Chat, make_request: MakeRequest, configured: str,
                                     sent: str) -> None:
    assert resolve_model(configured) == sent
    async with chat() as srv:
        async with responder(srv, model="local/default-model") as bot:
            await bot.respond(make_request(model=configured))
            await bot.respond(make_request())
        assert [r.json["model"] for r in srv.requests] == [sent, "default-model"]


async def test_history_becomes_chat_messages(chat: Chat, make_request: MakeRequest) -> None:
    history = [Turn("bot", "Hi, is this a good time?"), Turn("user", "Yes."),
               Turn("user", "Go ahead."), Turn("bot", "Great."), Turn("user", "Hours?")]
    async with chat() as srv:
        async with responder(srv) as bot:
            await bot.respond(make_request("Hours?", history=history))
        messages = srv.requests[0].json["messages"]
    assert [m["role"] for m in messages] == ["system", "assistant", "user", "assistant", "user"]
    assert messages[1]["content"] == '{"spoken": "Hi, is this a good time?"}'
    assert messages[2]["content"] == "Yes.\nGo ahead."
    assert messages[4]["content"] == "Hours?"  # not sent twice


async def test_contract_appended_to_system_prompt(chat: Chat, make_request: MakeRequest) -> None:
    async with chat() as srv:
        async with responder(srv, agent_name="Ava") as bot:
            await bot.respond(make_request(history=[Turn("user", "earlier")]))
            await bot.respond(make_request(system_prompt="You sell baseball cards."))
        first, second = (r.json["messages"][0] for r in srv.requests)
    assert first["role"] == "system"
    assert first["content"].startswith("You are Ava, a helpful voice assistant")
    assert first["content"].endswith("\n\n" + SPOKEN_OUTPUT_CONTRACT)
    assert "Conversation so far" not in first["content"]
    assert second["content"] == "You sell baseball cards.\n\n" + SPOKEN_OUTPUT_CONTRACT


async def test_extra_body_merged(chat: Chat, make_request: MakeRequest) -> None:
    async with chat() as srv:
        async with responder(srv, extra_body={"temperature": 0.2, "max_tokens": 80}) as bot:
            await bot.respond(make_request())
        body = srv.requests[0].json
    assert body["temperature"] == 0.2 and body["max_tokens"] == 80


async def test_server_that_ignores_stream_flag(chat: Chat, make_request: MakeRequest) -> None:
    async with chat([FakeReply('{"spoken":"All at once."}', reasoning="hmm")],
                              ignore_stream=True) as srv:
        async with responder(srv) as bot:
            result = await bot.respond(make_request())
    assert result.text == "All at once."
    assert result.payloads[0] == {"text": "hmm", "isReasoning": True}


async def test_reply_fn_sees_the_request(chat: Chat, make_request: MakeRequest) -> None:
    def echo(body: dict[str, object]) -> str:
        messages = body["messages"]
        assert isinstance(messages, list)
        return json.dumps({"spoken": f"You said {messages[-1]['content']}"})

    async with chat(reply_fn=echo) as srv:
        async with responder(srv) as bot:
            assert (await bot.respond(make_request("pizza"))).text == "You said pizza"


async def test_cancelling_a_turn_closes_the_stream(chat: Chat, make_request: MakeRequest) -> None:
    # Barge-in cancels the turn; the responder stays usable afterwards.
    async with chat(["slow " * 50, '{"spoken":"Next."}'], chunk_size=5,
                              chunk_delay=0.02) as srv:
        async with responder(srv) as bot:
            task = asyncio.create_task(bot.respond(make_request()))
            await asyncio.sleep(0.2)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            srv.chunk_delay = 0
            assert (await bot.respond(make_request())).text == "Next."
