"""A fake OpenAI-compatible upstream: a real HTTP server (uvicorn, own thread and event loop).

It serves ``POST /v1/chat/completions`` (JSON, or SSE ending in ``data: [DONE]`` when ``stream``;
a usage chunk when ``stream_options.include_usage``), ``POST /v1/embeddings`` and ``GET /v1/models``.
Tests script what each endpoint does next with a queue of behaviours; when a queue is empty the
endpoint answers normally (:class:`Ok`). Every request is recorded (path, JSON body, headers and
``time.monotonic()`` on arrival) so tests can count calls and check what was forwarded.

Nothing in the gateway is patched: it talks HTTP to this server through its real httpx client,
so timeouts, dropped connections and malformed bodies are the real thing.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

Endpoint = Literal["chat", "embeddings"]
PATHS = {"chat": "/v1/chat/completions", "embeddings": "/v1/embeddings", "models": "/v1/models"}


# --- behaviours -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ok:
    """A normal answer. Streams send ``text`` split into word pieces."""

    text: str = "Hello from the fake upstream."
    prompt_tokens: int = 11
    completion_tokens: int = 5
    finish_reason: str = "stop"
    # OpenAI-shaped tool calls ({"id", "type", "function": {"name", "arguments"}}); streamed as
    # OpenAI streams them (id and name first, then the arguments in two pieces).
    tool_calls: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class Status:
    """An HTTP error with an OpenAI-style error body (or ``body`` as given)."""

    code: int
    message: str = "upstream is not well"
    retry_after: str | None = None
    body: str | None = None


@dataclass(frozen=True)
class Garbage:
    """A 200 whose body is not JSON (for a stream: an event whose data is not JSON)."""

    body: str = "not json"


@dataclass(frozen=True)
class WrongShape:
    """A 200 with valid JSON that is not the documented shape."""

    payload: Any = field(default_factory=lambda: {"unexpected": True})


@dataclass(frozen=True)
class Slow:
    """Waits ``seconds`` before answering ``then`` (the client's read timeout should fire first)."""

    seconds: float = 2.0
    then: Ok = field(default_factory=Ok)


@dataclass(frozen=True)
class Cut:
    """Streams only: sends ``chunks`` content chunks, then drops the connection without ``[DONE]``
    (``abrupt=False``: ends the HTTP response properly, still without ``[DONE]``)."""

    chunks: int = 2
    abrupt: bool = True


@dataclass(frozen=True)
class Computed:
    """The answer computed from the request's JSON body (a model that answers what it is asked)."""

    answer: Callable[[dict[str, Any]], Ok | Status]


Behaviour = Ok | Status | Garbage | WrongShape | Slow | Cut | Computed


@dataclass(frozen=True)
class Received:
    path: str
    body: dict[str, Any]
    headers: dict[str, str]
    at: float


# --- the server ----------------------------------------------------------------------------------


def _pieces(text: str) -> list[str]:
    words = text.split(" ")
    return [w if i == len(words) - 1 else w + " " for i, w in enumerate(words)]


def _sse(payload: Any) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload)
    return f"data: {data}\n\n".encode()


class _DroppedStream:
    """Raw ASGI: start a chunked SSE response, send some chunks and return without finishing.

    Uvicorn then closes the connection mid-body, as a crashed or killed upstream would.
    """

    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = chunks

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        for chunk in self._chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})


class FakeUpstream:
    def __init__(self, model_ids: tuple[str, ...] = ("fake-model",)) -> None:
        self.model_ids = model_ids
        self.requests: list[Received] = []
        self._queues: dict[Endpoint, deque[Behaviour]] = {"chat": deque(), "embeddings": deque()}
        self._lock = threading.Lock()
        # What an endpoint does when its queue is empty (None: Ok()).
        self.default: dict[Endpoint, Behaviour] = {}
        # How embeddings are computed: (model id, text) -> vector. None: [len(text), index, 0.5].
        self.embedder: Callable[[str, str], list[float]] | None = None
        self._generation = 0  # bumped by reset/stop: releases handlers still waiting in Slow
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # --- scripting and inspection ------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def script(self, endpoint: Endpoint, *behaviours: Behaviour) -> None:
        """Queue what the next requests to ``endpoint`` get, in order."""
        with self._lock:
            self._queues[endpoint].extend(behaviours)

    def chat(self, *behaviours: Behaviour) -> None:
        self.script("chat", *behaviours)

    def calls(self, endpoint: Endpoint | Literal["models"] | None = None) -> list[Received]:
        """Requests received so far, in arrival order (all, or those to one endpoint)."""
        with self._lock:
            received = list(self.requests)
        if endpoint is None:
            return received
        return [r for r in received if r.path == PATHS[endpoint]]

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            for queue in self._queues.values():
                queue.clear()
            self._generation += 1

    def _next(self, endpoint: Endpoint) -> Behaviour:
        with self._lock:
            queue = self._queues[endpoint]
            return queue.popleft() if queue else self.default.get(endpoint, Ok())

    async def _record(self, request: Request) -> dict[str, Any]:
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = {"_raw": raw.decode(errors="replace")}
        with self._lock:
            self.requests.append(
                Received(request.url.path, body, {k.lower(): v for k, v in request.headers.items()}, time.monotonic())
            )
        return body if isinstance(body, dict) else {}

    async def _wait(self, seconds: float) -> None:
        generation = self._generation
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and generation == self._generation:
            await asyncio.sleep(0.01)

    # --- endpoints -----------------------------------------------------------------------------

    @staticmethod
    def _error(behaviour: Status | Garbage | WrongShape) -> Response:
        if isinstance(behaviour, Garbage):
            return Response(behaviour.body, status_code=200, media_type="application/json")
        if isinstance(behaviour, WrongShape):
            return JSONResponse(behaviour.payload)
        headers = {"Retry-After": behaviour.retry_after} if behaviour.retry_after is not None else None
        if behaviour.body is not None:
            return Response(behaviour.body, status_code=behaviour.code, headers=headers, media_type="text/plain")
        error = {"message": behaviour.message, "type": "fake_error", "param": None, "code": None}
        return JSONResponse({"error": error}, status_code=behaviour.code, headers=headers)

    async def _chat(self, request: Request) -> Response:
        body = await self._record(request)
        behaviour = self._next("chat")
        if isinstance(behaviour, Computed):
            behaviour = behaviour.answer(body)
        if isinstance(behaviour, Slow):
            await self._wait(behaviour.seconds)
            behaviour = behaviour.then
        model = str(body.get("model", ""))
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return self._chat_stream(behaviour, model, include_usage)
        if isinstance(behaviour, Cut):
            raise AssertionError("Cut is for streamed requests")
        if not isinstance(behaviour, Ok):
            return self._error(behaviour)
        return JSONResponse(
            {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": behaviour.text}
                        | ({"content": None, "tool_calls": list(behaviour.tool_calls)} if behaviour.tool_calls else {}),
                        "finish_reason": behaviour.finish_reason,
                    }
                ],
                "usage": {
                    "prompt_tokens": behaviour.prompt_tokens,
                    "completion_tokens": behaviour.completion_tokens,
                    "total_tokens": behaviour.prompt_tokens + behaviour.completion_tokens,
                },
            }
        )

    @staticmethod
    def _chunk(model: str, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    def _chat_stream(self, behaviour: Behaviour, model: str, include_usage: bool) -> Response:
        if isinstance(behaviour, Status | WrongShape):
            return self._error(behaviour)
        if isinstance(behaviour, Garbage):
            return Response(_sse(behaviour.body) + b"data: [DONE]\n\n", media_type="text/event-stream")
        if isinstance(behaviour, Cut):
            pieces = [_sse(self._chunk(model, {"role": "assistant", "content": ""}))]
            pieces += [_sse(self._chunk(model, {"content": f"part{i} "})) for i in range(behaviour.chunks)]
            if not behaviour.abrupt:
                return Response(b"".join(pieces), media_type="text/event-stream")
            return _DroppedStream(pieces)  # type: ignore[return-value]  # an ASGI app is all Starlette needs
        assert isinstance(behaviour, Ok)

        async def events() -> Any:
            yield _sse(self._chunk(model, {"role": "assistant", "content": ""}))
            for index, call in enumerate(behaviour.tool_calls):
                head = {
                    "index": index,
                    "id": call["id"],
                    "type": "function",
                    "function": {"name": call["function"]["name"]},
                }
                yield _sse(self._chunk(model, {"tool_calls": [head]}))
                arguments = call["function"]["arguments"]
                for piece in (arguments[: len(arguments) // 2], arguments[len(arguments) // 2 :]):
                    yield _sse(self._chunk(model, {"tool_calls": [{"index": index, "function": {"arguments": piece}}]}))
            for piece in _pieces(behaviour.text) if not behaviour.tool_calls else []:
                yield _sse(self._chunk(model, {"content": piece}))
            yield _sse(self._chunk(model, {}, behaviour.finish_reason))
            if include_usage:
                usage = {
                    "prompt_tokens": behaviour.prompt_tokens,
                    "completion_tokens": behaviour.completion_tokens,
                    "total_tokens": behaviour.prompt_tokens + behaviour.completion_tokens,
                }
                yield _sse({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "choices": [], "usage": usage})
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    async def _embeddings(self, request: Request) -> Response:
        body = await self._record(request)
        behaviour = self._next("embeddings")
        if isinstance(behaviour, Slow):
            await self._wait(behaviour.seconds)
            behaviour = behaviour.then
        if isinstance(behaviour, Cut):
            raise AssertionError("Cut is for streamed requests")
        if not isinstance(behaviour, Ok):
            return self._error(behaviour)
        texts = body.get("input")
        texts = [texts] if isinstance(texts, str) else list(texts or [])
        if self.embedder is not None:
            vectors = [self.embedder(str(body.get("model")), str(t)) for t in texts]
        else:
            # A vector anyone can predict: [length of the text, its index, 0.5].
            vectors = [[float(len(t)), float(i), 0.5] for i, t in enumerate(texts)]
        rows = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
        tokens = sum(len(str(t).split()) for t in texts)
        return JSONResponse(
            {
                "object": "list",
                "model": body.get("model"),
                "data": rows,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    async def _models(self, request: Request) -> Response:
        await self._record(request)
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in self.model_ids]
        return JSONResponse({"object": "list", "data": data})

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> FakeUpstream:
        app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/v1/embeddings", self._embeddings, methods=["POST"]),
                Route("/v1/models", self._models, methods=["GET"]),
            ]
        )
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            app, lifespan="off", log_level="critical", access_log=False, timeout_graceful_shutdown=1
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name=f"fake-upstream-{self.port}", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the fake upstream did not start")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        self._generation += 1
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5)
