"""A fake OpenAI Chat Completions server on a real loopback socket.

``POST /v1/chat/completions`` answers in the genuine wire format, streaming
(SSE ``chat.completion.chunk`` events ending in ``data: [DONE]``, with the
usage chunk when ``stream_options.include_usage`` asks for it) or not
(``chat.completion``). Tests script it instead of mocking the client:

    async with FakeChatServer(['{"spoken":"Hi."}'], chunk_size=4) as srv:
        responder = OpenAICompatResponder(srv.base_url, None)
        ...
        assert srv.requests[0].json["stream"] is True

Replies come from the queue (``replies`` / ``queue_reply``), then from
``reply_fn(request_json)``, then ``default_reply``. ``fail_next`` injects
OpenAI-shaped errors; ``api_key`` makes it demand ``Authorization: Bearer``.
Its 401 message echoes the presented key in full (OpenAI masks the middle),
so tests can prove a client never repeats a key it was sent back.

The server runs uvicorn in a daemon thread, so the same object works from
sync tests (``with`` / ``start()`` / ``stop()``) and async ones (``async with``).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

__all__ = ["FakeChatServer", "FakeReply", "RecordedRequest"]


@dataclass(frozen=True)
class FakeReply:
    """One scripted answer. ``reasoning`` is streamed before the content."""

    content: str
    reasoning: str | None = None
    finish_reason: str = "stop"


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    json: Any  # None when the body was not JSON


@dataclass
class _Failure:
    status: int
    message: str
    type: str
    code: str | None
    retry_after: float | None
    remaining: int


_DEFAULT_ERROR_TYPES = {400: "invalid_request_error", 401: "invalid_request_error",
                        404: "invalid_request_error", 429: "rate_limit_exceeded"}


def _error_body(message: str, type_: str, code: str | None = None,
                param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _split(text: str, size: int) -> list[str]:
    if not text:
        return []
    if size <= 0:
        return [text]
    return [text[i:i + size] for i in range(0, len(text), size)]


def _sse(payload: object) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


class FakeChatServer:
    def __init__(self, replies: Iterable[str | FakeReply] = (), *,
                 reply_fn: Callable[[dict[str, Any]], str | FakeReply] | None = None,
                 default_reply: str = '{"spoken":"OK."}',
                 chunk_size: int = 8,
                 first_token_delay: float = 0.0,
                 chunk_delay: float = 0.0,
                 reasoning: str | None = None,
                 reasoning_field: str = "reasoning_content",
                 api_key: str | None = None,
                 ignore_stream: bool = False) -> None:
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None
        self.app = Starlette(routes=[
            Route("/v1/chat/completions", self._completions, methods=["POST"]),
            Route("/v1/models", self._models, methods=["GET"]),
        ])
        self.reset(replies, reply_fn=reply_fn, default_reply=default_reply,
                   chunk_size=chunk_size, first_token_delay=first_token_delay,
                   chunk_delay=chunk_delay, reasoning=reasoning,
                   reasoning_field=reasoning_field, api_key=api_key,
                   ignore_stream=ignore_stream)

    def reset(self, replies: Iterable[str | FakeReply] = (), *,
              reply_fn: Callable[[dict[str, Any]], str | FakeReply] | None = None,
              default_reply: str = '{"spoken":"OK."}',
              chunk_size: int = 8,
              first_token_delay: float = 0.0,
              chunk_delay: float = 0.0,
              reasoning: str | None = None,
              reasoning_field: str = "reasoning_content",
              api_key: str | None = None,
              ignore_stream: bool = False) -> FakeChatServer:
        """Forget replies, failures and recorded requests; configure afresh.

        Lets a module share one running server (starting and stopping one
        costs about 0.2 s) while each test starts from a clean slate.
        """
        with self._lock:
            # Plain attributes: tests may also change them between requests.
            self.reply_fn = reply_fn
            self.default_reply = default_reply
            self.chunk_size = chunk_size
            self.first_token_delay = first_token_delay
            self.chunk_delay = chunk_delay
            self.reasoning = reasoning
            self.reasoning_field = reasoning_field
            self.api_key = api_key
            # Answer with one chat.completion even when asked to stream, as
            # some older local servers do.
            self.ignore_stream = ignore_stream
            self._replies: deque[str | FakeReply] = deque(replies)
            self._failures: deque[_Failure] = deque()
            self._requests: list[RecordedRequest] = []
        return self

    # -- scripting ---------------------------------------------------------

    def queue_reply(self, *replies: str | FakeReply) -> None:
        with self._lock:
            self._replies.extend(replies)

    def fail_next(self, status: int = 500,
                  message: str = "The server had an error while processing your request.",
                  *, count: int = 1, type: str | None = None, code: str | None = None,
                  retry_after: float | None = None) -> None:
        """Answer the next ``count`` requests with an OpenAI-shaped error."""
        kind = type or _DEFAULT_ERROR_TYPES.get(status, "server_error")
        with self._lock:
            self._failures.append(_Failure(status, message, kind, code, retry_after, count))

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def base_url(self) -> str:
        if self._port is None:
            raise RuntimeError("FakeChatServer is not running")
        return f"http://127.0.0.1:{self._port}/v1"

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self._port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="warning", access_log=False,
                                lifespan="off", timeout_graceful_shutdown=1)
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]},
                                  name="fake-chat-server", daemon=True)
        self._server, self._thread = server, thread
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("FakeChatServer failed to start")
            time.sleep(0.005)

    def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None or thread is None:
            return
        # force_exit: do not wait for slow streams a test abandoned on purpose.
        server.should_exit = True
        server.force_exit = True
        thread.join(timeout=10)

    def __enter__(self) -> FakeChatServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def __aenter__(self) -> FakeChatServer:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await asyncio.to_thread(self.stop)

    # -- HTTP --------------------------------------------------------------

    async def _models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [
            {"id": "fake-model", "object": "model", "created": 0, "owned_by": "voicecall"},
        ]})

    async def _completions(self, request: Request) -> Response:
        raw = await request.body()
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = None
        with self._lock:
            self._requests.append(RecordedRequest(
                request.method, request.url.path,
                {k.lower(): v for k, v in request.headers.items()}, body))
        denied = self._check_auth(request)
        if denied is not None:
            return denied
        failure = self._take_failure()
        if failure is not None:
            headers = {}
            if failure.retry_after is not None:
                headers["retry-after"] = f"{failure.retry_after:g}"
            return JSONResponse(_error_body(failure.message, failure.type, failure.code),
                                status_code=failure.status, headers=headers)
        invalid = _validate(body)
        if invalid is not None:
            return JSONResponse(_error_body(invalid, "invalid_request_error"), status_code=400)
        reply = self._next_reply(body)
        completion_id = f"chatcmpl-fake{next(self._ids)}"
        if body.get("stream") and not self.ignore_stream:
            return StreamingResponse(self._stream(body, reply, completion_id),
                                     media_type="text/event-stream",
                                     headers={"cache-control": "no-cache"})
        await asyncio.sleep(self.first_token_delay)
        return JSONResponse(self._completion(body, reply, completion_id))

    def _check_auth(self, request: Request) -> Response | None:
        if self.api_key is None:
            return None
        header = request.headers.get("authorization", "")
        if not header:
            message = ("You didn't provide an API key. You need to provide your API key in an "
                       "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).")
            return JSONResponse(_error_body(message, "invalid_request_error"), status_code=401)
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and token == self.api_key:
            return None
        return JSONResponse(
            _error_body(f"Incorrect API key provided: {token}.", "invalid_request_error",
                        "invalid_api_key"),
            status_code=401)

    def _take_failure(self) -> _Failure | None:
        with self._lock:
            if not self._failures:
                return None
            failure = self._failures[0]
            failure.remaining -= 1
            if failure.remaining <= 0:
                self._failures.popleft()
            return failure

    def _next_reply(self, body: dict[str, Any]) -> FakeReply:
        with self._lock:
            queued = self._replies.popleft() if self._replies else None
        reply = queued if queued is not None else (
            self.reply_fn(body) if self.reply_fn is not None else self.default_reply)
        if isinstance(reply, str):
            reply = FakeReply(reply, reasoning=self.reasoning)
        return reply

    def _usage(self, body: dict[str, Any], reply: FakeReply) -> dict[str, int]:
        prompt = sum(len(str(m.get("content", "")).split()) for m in body["messages"])
        completion = len(reply.content.split()) + len((reply.reasoning or "").split())
        return {"prompt_tokens": prompt, "completion_tokens": completion,
                "total_tokens": prompt + completion}

    async def _stream(self, body: dict[str, Any], reply: FakeReply,
                      completion_id: str) -> AsyncIterator[str]:
        options = body.get("stream_options")
        with_usage = isinstance(options, dict) and options.get("include_usage") is True
        base: dict[str, Any] = {"id": completion_id, "object": "chat.completion.chunk",
                                "created": int(time.time()), "model": body["model"],
                                "system_fingerprint": "fp_fake"}
        if with_usage:
            base["usage"] = None

        def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
            return _sse({**base, "choices": [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]})

        await asyncio.sleep(self.first_token_delay)
        yield chunk({"role": "assistant", "content": "", "refusal": None})
        pieces = [(self.reasoning_field, p) for p in _split(reply.reasoning or "", self.chunk_size)]
        pieces += [("content", p) for p in _split(reply.content, self.chunk_size)]
        for index, (field, piece) in enumerate(pieces):
            if index and self.chunk_delay:
                await asyncio.sleep(self.chunk_delay)
            yield chunk({field: piece})
        yield chunk({}, reply.finish_reason)
        if with_usage:
            yield _sse({**base, "choices": [], "usage": self._usage(body, reply)})
        yield "data: [DONE]\n\n"

    def _completion(self, body: dict[str, Any], reply: FakeReply,
                    completion_id: str) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": reply.content,
                                   "refusal": None}
        if reply.reasoning:
            message[self.reasoning_field] = reply.reasoning
        return {"id": completion_id, "object": "chat.completion", "created": int(time.time()),
                "model": body["model"], "system_fingerprint": "fp_fake",
                "choices": [{"index": 0, "message": message, "logprobs": None,
                             "finish_reason": reply.finish_reason}],
                "usage": self._usage(body, reply)}


def _validate(body: Any) -> str | None:
    """The 400 message OpenAI would give for a malformed request, or None."""
    if not isinstance(body, dict):
        return "We could not parse the JSON body of your request."
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "you must provide a model parameter"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "[] is too short - 'messages'"
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in (
            "system", "developer", "user", "assistant", "tool"
        ):
            return f"Invalid value for 'messages[{i}].role'."
    return None
