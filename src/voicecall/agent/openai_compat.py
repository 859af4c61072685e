"""An agent back end speaking OpenAI-compatible Chat Completions.

One client for OpenAI, Ollama (``/v1``), vLLM and the llama.cpp server: they
share the wire format, differ only in auth (local servers usually need none,
so no ``Authorization`` header is sent without a key) and in where reasoning
text goes (``delta.reasoning_content``, ``delta.reasoning`` or ``<think>``
tags in the content). Replies are always streamed so the first-token latency
is known and ``stream_text`` can feed speech sentence by sentence.

Failure policy, in order of precedence:
- the whole turn, retry included, must finish within ``timeout_ms``;
  running out is a retryable ``ProviderError``;
- HTTP 429, 5xx and network errors are retryable, other statuses are not;
- one retry, after a short backoff, and only before anything was yielded:
  words already handed to speech cannot be taken back;
- error messages carry the server's explanation but never the API key.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from voicecall.agent.base import (
    ResponseRequest,
    ResponseResult,
    TextSink,
    Turn,
    build_system_prompt,
)
from voicecall.agent.spoken import extract_spoken
from voicecall.agent.sse import SSEDecoder
from voicecall.errors import ProviderError

__all__ = ["KNOWN_PROVIDER_PREFIXES", "OpenAICompatResponder", "resolve_model"]

# ``responseModel`` is written "provider/model" in the seed's config. Only
# these prefixes are stripped: vLLM serves Hugging Face ids such as
# "Qwen/Qwen2.5-7B-Instruct", whose first segment is part of the name.
KNOWN_PROVIDER_PREFIXES = frozenset({"openai", "ollama", "vllm", "llamacpp", "local"})

_MAX_RETRY_WAIT_S = 2.0
_MAX_ERROR_TEXT = 300
# Reasoning models served raw (DeepSeek-R1, Qwen3 on Ollama or llama.cpp) put
# their thoughts in the content. The opening tag is optional because some chat
# templates pre-fill it and only the closing tag reaches us.
_THINK = re.compile(r"\s*(?:<think>)?([\s\S]*?)</think>", re.IGNORECASE)


def resolve_model(value: str) -> str:
    """The model name to send: ``"ollama/llama3.1"`` -> ``"llama3.1"``.

    A prefix outside ``KNOWN_PROVIDER_PREFIXES`` is kept, so
    ``"Qwen/Qwen2.5-7B-Instruct"`` is sent as it is.
    """
    provider, sep, rest = value.partition("/")
    if sep and rest and provider.strip().lower() in KNOWN_PROVIDER_PREFIXES:
        return rest
    return value


@dataclass(frozen=True)
class _Delta:
    kind: Literal["content", "reasoning"]
    text: str


class _StatusError(ProviderError):
    """An HTTP error status, with the server's ``Retry-After`` when it sent one."""

    def __init__(self, message: str, status_code: int, retry_after: float | None) -> None:
        super().__init__(message, retryable=status_code == 429 or status_code >= 500,
                         status_code=status_code)
        self.retry_after = retry_after


class OpenAICompatResponder:
    """``Responder`` over ``POST {base_url}/chat/completions`` with ``stream: true``."""

    name = "openai-compat"

    def __init__(self, base_url: str, api_key: str | None, model: str = "gpt-4o-mini", *,
                 transport: httpx.AsyncBaseTransport | None = None,
                 extra_headers: Mapping[str, str] | None = None,
                 extra_body: Mapping[str, object] | None = None,
                 agent_name: str = "OpenClaw",
                 retry_backoff_s: float = 0.25,
                 max_retries: int = 1) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self._url = f"{self.base_url}/chat/completions"
        self._api_key = api_key or None
        self._extra_body = dict(extra_body or {})
        self._agent_name = agent_name
        self._backoff = retry_backoff_s
        self._max_retries = max_retries
        headers = {"Accept": "text/event-stream"}
        headers.update(extra_headers or {})
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        # No httpx timeouts: one deadline per turn (timeout_ms) governs every await.
        self._client = httpx.AsyncClient(transport=transport, headers=headers, timeout=None)

    def __repr__(self) -> str:
        return f"OpenAICompatResponder(base_url={self.base_url!r}, model={self.model!r})"

    async def __aenter__(self) -> OpenAICompatResponder:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    # -- request -----------------------------------------------------------

    def build_messages(self, req: ResponseRequest) -> list[dict[str, str]]:
        """System prompt, then the history as chat turns, then the caller's words.

        The history goes in as messages, so the system prompt leaves it out.
        Our past turns are written back in the contract's JSON shape: a model
        shown its own earlier answers as plain text drifts away from the
        contract. Consecutive turns of one role are merged because several
        chat templates (Mistral, some Llama builds) reject non-alternating
        roles.
        """
        history = list(req.history)
        # The runtime may already have appended the current utterance.
        if history and history[-1].role == "user" and (
            history[-1].text.strip() == req.user_text.strip()
        ):
            history.pop()
        merged: list[tuple[str, str]] = []
        for turn in [*history, Turn("user", req.user_text)]:
            role = "assistant" if turn.role == "bot" else "user"
            if merged and merged[-1][0] == role:
                merged[-1] = (role, f"{merged[-1][1]}\n{turn.text}")
            else:
                merged.append((role, turn.text))
        system = build_system_prompt(req, self._agent_name, include_history=False)
        messages = [{"role": "system", "content": system}]
        for role, text in merged:
            if role == "assistant":
                text = json.dumps({"spoken": text}, ensure_ascii=False)
            messages.append({"role": role, "content": text})
        return messages

    def build_body(self, req: ResponseRequest) -> dict[str, object]:
        body: dict[str, object] = {
            "model": resolve_model(req.model or self.model),
            "messages": self.build_messages(req),
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        body.update(self._extra_body)
        return body

    # -- public API --------------------------------------------------------

    async def stream_text(self, req: ResponseRequest) -> AsyncGenerator[str, None]:
        """The reply's content deltas as they arrive, reasoning left out.

        Raw text: no contract extraction, ``<think>`` tags included. Close the
        iterator (``contextlib.aclosing``) when stopping early, e.g. on
        barge-in, so the HTTP stream and the generation behind it stop too.
        """
        async with aclosing(self._events(req)) as events:
            async for delta in events:
                if delta.kind == "content":
                    yield delta.text

    async def respond(self, req: ResponseRequest,
                      on_text: TextSink | None = None) -> ResponseResult:
        started = time.perf_counter()
        first_token_ms: float | None = None
        content: list[str] = []
        reasoning: list[str] = []
        async with aclosing(self._events(req)) as events:
            async for delta in events:
                if delta.kind == "reasoning":
                    reasoning.append(delta.text)
                    continue
                if first_token_ms is None:
                    first_token_ms = (time.perf_counter() - started) * 1000
                content.append(delta.text)
                if on_text is not None:
                    await on_text(delta.text)
        payloads = _payloads("".join(reasoning), "".join(content))
        return ResponseResult(
            text=extract_spoken(payloads),
            payloads=payloads,
            first_token_ms=first_token_ms,
            total_ms=(time.perf_counter() - started) * 1000,
        )

    # -- transport ---------------------------------------------------------

    async def _events(self, req: ResponseRequest) -> AsyncGenerator[_Delta, None]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + req.timeout_ms / 1000
        body = self.build_body(req)
        attempt = 0
        while True:
            yielded = False
            try:
                async with aclosing(self._attempt(body, deadline, req.timeout_ms)) as deltas:
                    async for delta in deltas:
                        yielded = True
                        yield delta
                return
            except ProviderError as exc:
                remaining = deadline - loop.time()
                if yielded or not exc.retryable or attempt >= self._max_retries or remaining <= 0:
                    raise
                attempt += 1
                wait = self._backoff
                if isinstance(exc, _StatusError) and exc.retry_after is not None:
                    wait = max(wait, min(exc.retry_after, _MAX_RETRY_WAIT_S))
                await asyncio.sleep(min(wait, remaining))

    async def _attempt(self, body: dict[str, object], deadline: float,
                       timeout_ms: int) -> AsyncGenerator[_Delta, None]:
        request = self._client.build_request("POST", self._url, json=body)
        try:
            async with asyncio.timeout_at(deadline):
                response = await self._client.send(request, stream=True)
        except TimeoutError:
            raise _timeout(timeout_ms) from None
        except httpx.HTTPError as exc:
            raise self._network_error(exc) from None
        try:
            if response.status_code >= 400:
                async with asyncio.timeout_at(deadline):
                    await response.aread()
                raise self._status_error(response)
            content_type = response.headers.get("content-type", "")
            if content_type.startswith("application/json"):
                # A server that ignored stream=true answers in one piece.
                async with asyncio.timeout_at(deadline):
                    raw = await response.aread()
                for delta in _parse_completion(raw):
                    yield delta
                return
            decoder = SSEDecoder()
            lines = response.aiter_lines()
            while True:
                try:
                    # Scoped to the read only: a timeout must never fire while
                    # the consumer holds control between yields.
                    async with asyncio.timeout_at(deadline):
                        line = await anext(lines)
                except StopAsyncIteration:
                    break
                for data in decoder.feed_line(line):
                    if data.strip() == "[DONE]":
                        return
                    for delta in self._parse_chunk(data):
                        yield delta
            for data in decoder.flush():
                if data.strip() != "[DONE]":
                    for delta in self._parse_chunk(data):
                        yield delta
        except TimeoutError:
            raise _timeout(timeout_ms) from None
        except httpx.HTTPError as exc:
            raise self._network_error(exc) from None
        finally:
            await response.aclose()

    def _parse_chunk(self, data: str) -> list[_Delta]:
        try:
            chunk = json.loads(data)
        except ValueError:
            raise ProviderError("chat completions stream sent a malformed chunk") from None
        if not isinstance(chunk, dict):
            raise ProviderError("chat completions stream sent a malformed chunk")
        if chunk.get("error") is not None:
            # vLLM and OpenAI report failures after the 200 inside the stream.
            message, status = _error_details(chunk)
            retryable = status is not None and (status == 429 or status >= 500)
            raise ProviderError(self._redact(f"chat completions failed mid-stream: {message}"),
                                retryable=retryable, status_code=status)
        return _deltas(_first_choice(chunk).get("delta"))

    # -- errors ------------------------------------------------------------

    def _redact(self, text: str) -> str:
        if self._api_key:
            text = text.replace(self._api_key, "***")
        return text

    def _status_error(self, response: httpx.Response) -> _StatusError:
        try:
            message, _ = _error_details(response.json())
        except ValueError:
            message = response.text.strip()[:_MAX_ERROR_TEXT] or response.reason_phrase
        retry_after: float | None
        try:
            retry_after = float(response.headers.get("retry-after", ""))
        except ValueError:
            retry_after = None
        text = f"chat completions HTTP {response.status_code}: {message}"
        return _StatusError(self._redact(text), response.status_code, retry_after)

    def _network_error(self, exc: httpx.HTTPError) -> ProviderError:
        detail = str(exc) or type(exc).__name__
        return ProviderError(self._redact(f"chat completions request failed: {detail}"),
                             retryable=True)


def _timeout(timeout_ms: int) -> ProviderError:
    return ProviderError(f"chat completions gave no complete reply within {timeout_ms} ms",
                         retryable=True)


def _error_details(body: Any) -> tuple[str, int | None]:
    """Message and numeric code from ``{"error": {...}}`` or ``{"error": "..."}``."""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, str):
        return error[:_MAX_ERROR_TEXT], None
    if not isinstance(error, dict):
        return json.dumps(body)[:_MAX_ERROR_TEXT], None
    message = str(error.get("message") or "unknown error")[:_MAX_ERROR_TEXT]
    code = error.get("code")
    kind = error.get("type")
    label = code if isinstance(code, str) else kind if isinstance(kind, str) else None
    if label:
        message = f"{message} ({label})"
    return message, code if isinstance(code, int) and not isinstance(code, bool) else None


def _first_choice(body: Mapping[str, Any]) -> Mapping[str, Any]:
    choices = body.get("choices")
    # Usage-only chunks carry an empty list.
    if not isinstance(choices, list):
        return {}
    for choice in choices:
        if isinstance(choice, dict) and choice.get("index", 0) == 0:
            return choice
    return {}


def _deltas(part: object) -> list[_Delta]:
    """Reasoning and content from a ``delta`` or ``message`` object."""
    if not isinstance(part, dict):
        return []
    out: list[_Delta] = []
    for key in ("reasoning_content", "reasoning"):
        value = part.get(key)
        if isinstance(value, str) and value:
            out.append(_Delta("reasoning", value))
            break
    content = part.get("content")
    if isinstance(content, str) and content:
        out.append(_Delta("content", content))
    return out


def _parse_completion(raw: bytes) -> list[_Delta]:
    try:
        body = json.loads(raw)
    except ValueError:
        raise ProviderError("chat completions sent a malformed JSON body") from None
    if not isinstance(body, dict):
        raise ProviderError("chat completions sent a malformed JSON body")
    return _deltas(_first_choice(body).get("message"))


def _payloads(reasoning: str, content: str) -> list[dict[str, object]]:
    payloads: list[dict[str, object]] = []
    if reasoning.strip():
        payloads.append({"text": reasoning, "isReasoning": True})
    if "</think>" in content.lower() or content.lstrip().lower().startswith("<think>"):
        match = _THINK.match(content)
        if match:
            if match.group(1).strip():
                payloads.append({"text": match.group(1), "isReasoning": True})
            content = content[match.end():]
        else:  # an unclosed <think>: the reply was cut off while still thinking
            payloads.append({"text": content, "isReasoning": True})
            content = ""
    if content.strip():
        payloads.append({"text": content})
    return payloads
