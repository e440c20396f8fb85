"""Any OpenAI-compatible server (OpenAI, Ollama, vLLM, llama.cpp server, LM Studio) over HTTP.

One pooled ``aiohttp.ClientSession`` per process (aiohttp rather than httpx: a third of the CPU per
proxied request, which is most of the gateway's overhead); connect and read timeouts per model. Failures are
classified for the gateway (see ``trellis.gateway.errors``): timeouts, connection errors, 429 and
5xx are retryable; other 4xx are the caller's; a 200 with a body that is not the documented shape
is a bad response; a stream that ends without ``[DONE]`` is broken, never a silent success.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from typing import Any

import aiohttp

from trellis.gateway.errors import (
    ProviderBadResponse,
    ProviderError,
    ProviderRejected,
    ProviderStreamBroken,
    ProviderUnavailable,
)
from trellis.gateway.providers.base import ProviderContext
from trellis.gateway.types import (
    Completion,
    CompletionRequest,
    EmbeddingResult,
    FinishReason,
    Message,
    StreamChunk,
    ToolCall,
    ToolCallDelta,
    ToolSpec,
    Usage,
)
from trellis.settings.gateway import ModelConfig

NAME = "openai"
_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "content_filter": "stop",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
}


def _message_json(m: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.tool_calls:
        out["content"] = m.content or None
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in m.tool_calls
        ]
    if m.tool_call_id is not None:
        out["tool_call_id"] = m.tool_call_id
    return out


def _tool_calls(raw: Any) -> tuple[ToolCall, ...]:
    if raw is None:
        return ()
    try:
        return tuple(
            ToolCall(str(c["id"]), str(c["function"]["name"]), str(c["function"].get("arguments") or "")) for c in raw
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise ProviderBadResponse("upstream tool_calls are not OpenAI's shape", provider=NAME) from exc


def _call_deltas(raw: Any) -> tuple[ToolCallDelta, ...]:
    if not raw:
        return ()
    try:
        out = []
        for c in raw:
            function = c.get("function") or {}
            out.append(
                ToolCallDelta(
                    int(c.get("index", 0)), str(function.get("arguments") or ""), c.get("id"), function.get("name")
                )
            )
        return tuple(out)
    except (TypeError, ValueError, AttributeError) as exc:
        raise ProviderBadResponse("upstream tool_call deltas are not OpenAI's shape", provider=NAME) from exc


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _error_message(body: bytes, reason: str) -> str:
    text = body.decode("utf-8", "replace")
    try:
        data = json.loads(text)
    except ValueError:
        return text[:300] or reason
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
        if isinstance(error, str):
            return error
    return text[:300]


def _usage(raw: Any) -> Usage:
    if not isinstance(raw, dict):
        raise ProviderBadResponse("upstream response has no usage object", provider=NAME)
    prompt, completion = raw.get("prompt_tokens"), raw.get("completion_tokens", 0)
    if not isinstance(prompt, int) or not isinstance(completion, int):
        raise ProviderBadResponse("upstream usage is not a pair of integers", provider=NAME)
    return Usage(prompt, completion)


class OpenAICompatibleProvider:
    name = NAME

    def __init__(self, context: ProviderContext) -> None:
        # Created on first use: an aiohttp session belongs to the event loop it was made in.
        self._session: aiohttp.ClientSession | None = None

    # --- plumbing ---------------------------------------------------------------------------

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=256, limit_per_host=0, keepalive_timeout=30),
                json_serialize=json.dumps,
            )
        return self._session

    @staticmethod
    def _endpoint(model: ModelConfig, path: str) -> str:
        if not model.base_url:
            raise ProviderRejected(f"model {model.model_id!r} has no base_url configured", provider=NAME)
        return model.base_url.rstrip("/") + path

    @staticmethod
    def _headers(model: ModelConfig) -> dict[str, str]:
        key = model.api_key.get_secret_value() if model.api_key else None
        if key is None and model.api_key_env:
            key = os.environ.get(model.api_key_env)
        return {"Authorization": f"Bearer {key}"} if key else {}

    @staticmethod
    def _timeout(model: ModelConfig) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(
            total=None, connect=model.connect_timeout_seconds, sock_read=model.read_timeout_seconds
        )

    @staticmethod
    def _body(model: ModelConfig, request: CompletionRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": model.model_id,
            "messages": [_message_json(m) for m in request.messages],
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
        }
        if request.stop:
            body["stop"] = list(request.stop)
        if request.seed is not None:
            body["seed"] = request.seed
        if request.json_schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "result", "schema": request.json_schema, "strict": True},
            }
        elif request.json_object:
            body["response_format"] = {"type": "json_object"}
        if request.tools and "tools" not in request.passthrough:
            # Tools from a door that is not OpenAI's own (DSPy's engine, a workflow step): in
            # OpenAI's form, with the choice as the gateway holds it.
            body["tools"] = [
                {
                    "type": "function",
                    "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
                }
                for t in request.tools
            ]
            choice = request.tool_choice
            body["tool_choice"] = (
                choice if choice in ("auto", "required", "none") else {"type": "function", "function": {"name": choice}}
            )
        # The caller's own response_format, tools, tool_choice and parallel_tool_calls, unchanged.
        body.update(request.passthrough)
        return body

    @staticmethod
    async def _raise_for_status(response: aiohttp.ClientResponse) -> None:
        status = response.status
        if status < 400:
            return
        body = await response.read()
        message = f"upstream answered {status}: {_error_message(body, response.reason or '')}"
        if status == 429 or status >= 500:
            raise ProviderUnavailable(
                message, provider=NAME, status_code=status, retry_after=_retry_after(response.headers)
            )
        raise ProviderRejected(message, provider=NAME, status_code=status)

    async def _post(self, model: ModelConfig, path: str, body: dict[str, Any]) -> Any:
        try:
            async with self._client().post(
                self._endpoint(model, path),
                json=body,
                headers=self._headers(model),
                timeout=self._timeout(model),
                allow_redirects=False,
            ) as response:
                await self._raise_for_status(response)
                raw = await response.read()
        except TimeoutError as exc:
            raise ProviderUnavailable("upstream timed out", provider=NAME) from exc
        except aiohttp.ClientError as exc:
            raise ProviderUnavailable(f"cannot reach upstream: {type(exc).__name__}", provider=NAME) from exc
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise ProviderBadResponse("upstream answered with invalid JSON", provider=NAME) from exc

    # --- the contract ---------------------------------------------------------------------------

    async def complete(self, model: ModelConfig, request: CompletionRequest) -> Completion:
        data = await self._post(model, "/chat/completions", self._body(model, request))
        try:
            choice = data["choices"][0]
            text = choice["message"].get("content")
            calls = _tool_calls(choice["message"].get("tool_calls"))
            finish = choice.get("finish_reason") or "stop"
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise ProviderBadResponse("upstream response is not a chat completion", provider=NAME) from exc
        if text is None and calls:
            text = ""
        if not isinstance(text, str):
            raise ProviderBadResponse("upstream completion has no text content", provider=NAME)
        usage = _usage(data.get("usage") if isinstance(data, dict) else None)
        return Completion(text=text, finish_reason=_FINISH.get(str(finish), "stop"), usage=usage, tool_calls=calls)

    async def stream(self, model: ModelConfig, request: CompletionRequest) -> AsyncGenerator[StreamChunk, None]:
        body = self._body(model, request) | {"stream": True, "stream_options": {"include_usage": True}}
        started = False  # once the upstream has answered, a failure is a broken stream, not retryable
        try:
            async with self._client().post(
                self._endpoint(model, "/chat/completions"),
                json=body,
                headers=self._headers(model),
                timeout=self._timeout(model),
                allow_redirects=False,
            ) as response:
                await self._raise_for_status(response)
                started = True
                async for chunk in self._parse_events(response):
                    yield chunk
        except (TimeoutError, aiohttp.ClientError) as exc:
            if started:
                raise ProviderStreamBroken(f"upstream stream failed: {type(exc).__name__}", provider=NAME) from exc
            raise ProviderUnavailable(f"cannot reach upstream: {type(exc).__name__}", provider=NAME) from exc

    async def _parse_events(self, response: aiohttp.ClientResponse) -> AsyncIterator[StreamChunk]:
        finish: FinishReason | None = None
        usage: Usage | None = None
        completion_pieces = 0
        async for raw_line in response.content:
            line = raw_line.decode("utf-8", "replace").strip()
            if not line.startswith("data:"):
                continue
            payload = line[5:].strip()
            if payload == "[DONE]":
                yield StreamChunk("", finish or "stop", usage or Usage(0, completion_pieces))
                return
            try:
                event = json.loads(payload)
            except ValueError as exc:
                raise ProviderBadResponse("upstream stream sent invalid JSON", provider=NAME) from exc
            if not isinstance(event, dict):
                raise ProviderBadResponse("upstream stream event is not an object", provider=NAME)
            if event.get("usage"):
                usage = _usage(event["usage"])
            for choice in event.get("choices") or []:
                raw_delta = choice.get("delta") or {}
                delta = raw_delta.get("content") or ""
                calls = _call_deltas(raw_delta.get("tool_calls"))
                if choice.get("finish_reason"):
                    finish = _FINISH.get(str(choice["finish_reason"]), "stop")
                if delta or calls:
                    completion_pieces += 1
                    yield StreamChunk(delta, tool_calls=calls)
        raise ProviderStreamBroken("upstream stream ended before [DONE]", provider=NAME)

    async def embed(self, model: ModelConfig, texts: Sequence[str]) -> EmbeddingResult:
        if not texts:
            return EmbeddingResult([], 0, 0)
        data = await self._post(model, "/embeddings", {"model": model.model_id, "input": list(texts)})
        try:
            rows = sorted(data["data"], key=lambda row: row["index"])
            vectors = [[float(x) for x in row["embedding"]] for row in rows]
        except (KeyError, TypeError, ValueError) as exc:
            raise ProviderBadResponse("upstream response is not an embedding list", provider=NAME) from exc
        if len(vectors) != len(texts):
            raise ProviderBadResponse("upstream returned a different number of embeddings", provider=NAME)
        usage = data.get("usage") or {}
        prompt_tokens = usage.get("prompt_tokens", 0) if isinstance(usage, dict) else 0
        return EmbeddingResult(vectors, int(prompt_tokens), len(vectors[0]) if vectors else 0)

    async def count_tokens(
        self,
        model: ModelConfig,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolSpec] = (),
        tool_choice: str = "auto",
    ) -> int | None:
        return None

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def factory(context: ProviderContext) -> OpenAICompatibleProvider:
    return OpenAICompatibleProvider(context)


__all__ = ["OpenAICompatibleProvider", "ProviderError", "factory"]
