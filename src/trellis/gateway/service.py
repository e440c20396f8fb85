"""The gateway service: what every door (REST, OpenAI-compatible, CLI, workflows, DSPy) calls.

A call resolves the model (name or alias), validates limits, tries the cache, then walks the
model and its fallbacks: for each, the endpoint's circuit breaker must allow it, retryable
failures are retried with backoff, and the first success answers. Every call, whatever its end,
is written to the episodic log off the request path.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeVar

from trellis.auth.schemas import Principal
from trellis.episodic.schemas import CallRecord, CallStatus, Door
from trellis.episodic.writer import EpisodicLogWriter
from trellis.gateway import structured
from trellis.gateway.cache import CachedEmbedding, EmbeddingCache, ResponseCache, cache_key, embedding_key
from trellis.gateway.errors import (
    ProviderBadResponse,
    ProviderError,
    ProviderRejected,
    ProviderStreamBroken,
    ProviderUnavailable,
)
from trellis.gateway.metrics import GatewayMetrics
from trellis.gateway.providers.base import Provider
from trellis.gateway.providers.registry import ProviderRegistry, UnknownProvider
from trellis.gateway.resilience import (
    CircuitBreaker,
    CircuitOpen,
    RetryPolicy,
    call_with_breaker,
    call_with_retries,
)
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
    join_tool_calls,
)
from trellis.kit.clock import Clock
from trellis.kit.errors import NotFound, TrellisError, Unavailable, ValidationFailed
from trellis.kit.logging import get_logger
from trellis.settings import Settings
from trellis.settings.gateway import ModelConfig

log = get_logger(__name__)
T = TypeVar("T")
CacheMode = Literal["auto", "bypass", "force"]


class BadGateway(TrellisError):
    code = "upstream_error"
    status_code = 502
    default_message = "The model provider answered with something that is not a valid response"


class InvalidModelOutput(BadGateway):
    default_message = "The model's answer does not have the requested structure"

    @classmethod
    def of(cls, model: str, problems: list[str]) -> InvalidModelOutput:
        """The refusal of an answer (or of every retried answer): the last problem leads."""
        return cls(
            f"The model's answer broke the requested structure: {problems[-1]}",
            details={"model": model, "problems": problems, "attempts": len(problems)},
        )


class _InvalidAnswer(Exception):
    """An answer that failed structured validation (logged already); complete() may try again."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


@dataclass(frozen=True)
class CallContext:
    principal: Principal
    door: Door
    request_id: str | None = None
    cache: CacheMode = "auto"
    # The DSPy module making the call (door "dspy"), written to the episodic log.
    module: str | None = None


@dataclass(frozen=True)
class GatewayResult:
    completion: Completion
    requested_model: str
    served_model: str
    provider: str
    cached: bool
    latency_seconds: float
    attempts: int
    fallback_from: str | None = None


@dataclass
class StreamOutcome:
    """Filled in while a stream runs; final once the stream iterator is exhausted or closed."""

    served_model: str = ""
    provider: str = ""
    text_parts: list[str] = field(default_factory=list)
    usage: Usage | None = None
    finish_reason: str | None = None
    call_parts: list[ToolCallDelta] = field(default_factory=list)

    def tool_calls(self) -> tuple[ToolCall, ...]:
        """The streamed function calls, put together from their pieces."""
        return join_tool_calls(self.call_parts)


def _shares(total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` near-equal integers that add up to it."""
    if parts == 0:
        return []
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def breaker_key(model: ModelConfig) -> str:
    return f"{model.provider}:{model.base_url or model.model_id}"


class Gateway:
    def __init__(
        self,
        settings: Settings,
        providers: ProviderRegistry,
        breaker: CircuitBreaker,
        cache: ResponseCache,
        logs: EpisodicLogWriter,
        metrics: GatewayMetrics,
        clock: Clock,
        *,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        jitter: Callable[[], float] | None = None,
        embeddings: EmbeddingCache | None = None,
        on_call: Callable[[CallRecord], None] | None = None,
    ) -> None:
        """``on_call`` also gets every call record (the runtime gives the metric history's usage meter)."""
        self._settings = settings
        self._models = settings.all_models()
        self._aliases = {alias: name for name, m in self._models.items() for alias in m.aliases}
        self.providers = providers
        self._breaker = breaker
        self._cache = cache
        self._embeddings = embeddings or EmbeddingCache.from_settings(settings.gateway, clock)
        self._logs = logs
        self.metrics = metrics
        self._on_call = on_call
        self._clock = clock
        self._retry = RetryPolicy.from_settings(settings.gateway)
        self._sleep = sleep
        self._jitter = jitter or random.random

    # --- models -----------------------------------------------------------------------------

    @property
    def models(self) -> dict[str, ModelConfig]:
        return self._models

    def resolve(self, name: str | None, capability: str = "chat") -> tuple[str, ModelConfig]:
        gateway = self._settings.gateway
        wanted = name or (gateway.default_embed_model if capability == "embed" else gateway.default_chat_model)
        canonical = wanted if wanted in self._models else self._aliases.get(wanted)
        if canonical is None:
            raise NotFound(
                f"Unknown model {wanted!r}",
                details={"model": wanted, "available": sorted([*self._models, *self._aliases])},
            )
        model = self._models[canonical]
        if capability not in model.capabilities and not (capability == "code" and "chat" in model.capabilities):
            raise ValidationFailed.of(
                "model",
                f"lacks capability {capability!r}",
                type="model_capability",
                summary=f"Model {canonical!r} cannot do {capability}",
                capabilities=model.capabilities,
            )
        return canonical, model

    async def breaker_state(self, model: ModelConfig) -> str:
        return await self._breaker.state(breaker_key(model))

    def provider_for(self, model: ModelConfig) -> Provider:
        try:
            return self.providers.get(model.provider)
        except UnknownProvider as exc:
            raise Unavailable(str(exc), details={"provider": model.provider}) from None

    # --- validation -------------------------------------------------------------------------

    async def build_request(
        self,
        model: ModelConfig,
        messages: Sequence[Message],
        *,
        max_tokens: int | None,
        temperature: float | None,
        top_p: float = 1.0,
        stop: Sequence[str] = (),
        seed: int | None = None,
        json_schema: dict[str, object] | None = None,
        json_object: bool = False,
        tools: Sequence[ToolSpec] = (),
        tool_choice: str = "auto",
        passthrough: dict[str, Any] | None = None,
        prompt_field: str = "messages",
    ) -> CompletionRequest:
        tokens = max_tokens or model.default_max_tokens
        if tokens > model.max_output_tokens:
            raise ValidationFailed.of(
                "max_tokens",
                f"at most {model.max_output_tokens}",
                type="less_than_equal",
                summary=f"max_tokens {tokens} is above this model's limit of {model.max_output_tokens}",
            )
        if tool_choice not in ("auto", "required", "none") and tool_choice not in {t.name for t in tools}:
            raise ValidationFailed.of(
                "tool_choice", f"names {tool_choice!r}, which is not among the tools", type="unknown_function"
            )
        counted = await self.provider_for(model).count_tokens(model, messages, tools=tools, tool_choice=tool_choice)
        # When a provider cannot count, estimate conservatively (about 3 characters per token).
        prompt_tokens = counted if counted is not None else sum(len(m.content) for m in messages) // 3 + 4
        if prompt_tokens + tokens > model.context_window:
            raise ValidationFailed.of(
                prompt_field,
                "too long for the model's context window",
                type="context_window_exceeded",
                summary=f"The prompt ({prompt_tokens} tokens) plus max_tokens ({tokens}) exceeds the context window "
                f"of {model.context_window} tokens",
                prompt_tokens=prompt_tokens,
                context_window=model.context_window,
            )
        return CompletionRequest(
            messages=tuple(messages),
            max_tokens=tokens,
            temperature=model.default_temperature if temperature is None else temperature,
            top_p=top_p,
            stop=tuple(stop),
            seed=seed,
            json_schema=dict(json_schema) if json_schema is not None else None,
            json_object=json_object,
            tools=tuple(tools),
            tool_choice=tool_choice,
            passthrough=dict(passthrough or {}),
            counted_prompt_tokens=prompt_tokens,
        )

    # --- completion ---------------------------------------------------------------------------

    def _cacheable(self, ctx: CallContext, request: CompletionRequest) -> bool:
        if not self._settings.gateway.cache_enabled or ctx.cache == "bypass":
            return False
        return ctx.cache == "force" or request.temperature == 0

    def _cache_scope(self, ctx: CallContext) -> str:
        return "shared" if self._settings.gateway.cache_shared else ctx.principal.user_id

    def _candidates(self, name: str, model: ModelConfig) -> list[tuple[str, ModelConfig]]:
        chain = [(name, model)]
        for fallback in model.fallbacks:
            if fallback in self._models and fallback not in (n for n, _ in chain):
                chain.append((fallback, self._models[fallback]))
        return chain

    async def complete(
        self, ctx: CallContext, name: str, model: ModelConfig, request: CompletionRequest
    ) -> GatewayResult:
        """One completion. A structured request (JSON, function calls) is answered only with output
        that validates (``trellis.gateway.structured``): an invalid sampled answer is tried again
        with a new seed, up to ``structured_retries`` times; a deterministic one is not (it would
        come out the same); then the call fails with a 502 naming the problem."""
        retries = self._settings.gateway.structured_retries if request.structured and request.temperature > 0 else 0
        current = request
        problems: list[str] = []
        for attempt in range(retries + 1):
            try:
                return await self._complete_once(ctx, name, model, current)
            except _InvalidAnswer as exc:
                problems.append(exc.problem)
                base = request.seed if request.seed is not None else self._seed()
                current = replace(request, seed=base + attempt + 1)
        raise InvalidModelOutput.of(name, problems)

    @staticmethod
    def _seed() -> int:
        return random.getrandbits(31)

    async def _complete_once(
        self, ctx: CallContext, name: str, model: ModelConfig, request: CompletionRequest
    ) -> GatewayResult:
        started = time.perf_counter()
        key = None
        if self._cacheable(ctx, request):
            key = cache_key(name, request, self._cache_scope(ctx))
            hit = await self._cache.get(key)
            if hit is not None:
                completion, level = hit
                self.metrics.cache.labels(f"hit_{level}").inc()
                result = GatewayResult(completion, name, name, model.provider, True, time.perf_counter() - started, 0)
                self._record(ctx, request, result, status="ok")
                return result
            self.metrics.cache.labels("miss").inc()
        else:
            self.metrics.cache.labels("bypass").inc()

        failures: list[ProviderError] = []
        retry_after: float | None = None
        for served_name, served in self._candidates(name, model):
            endpoint = breaker_key(served)
            provider = self.provider_for(served)
            attempts = 0

            async def attempt(
                provider: Provider = provider, served: ModelConfig = served, endpoint: str = endpoint
            ) -> Completion:
                nonlocal attempts
                attempts += 1
                return await call_with_breaker(
                    self._breaker, endpoint, lambda: provider.complete(served, request), provider=served.provider
                )

            provider_started = time.perf_counter()
            try:
                completion = await call_with_retries(
                    attempt, self._retry, on_retry=self._on_retry(served.provider), **self._sleep_kw()
                )
            except ProviderRejected as exc:
                if exc.status_code in (401, 403):
                    failures.append(exc)  # our credentials for this endpoint are wrong: try a fallback
                    continue
                self._record_failure(ctx, request, name, served_name, served, started, attempts, exc)
                raise self._rejected(served, exc) from None
            except ProviderError as exc:
                if isinstance(exc, ProviderUnavailable) and exc.retry_after is not None:
                    retry_after = exc.retry_after if retry_after is None else min(retry_after, exc.retry_after)
                failures.append(exc)
                log.warning("model_call_failed", model=served_name, provider=served.provider, error=exc.message)
                await self._note_breaker(endpoint)
                continue
            self.metrics.breaker_state.labels(endpoint).set(0)
            provider_seconds = time.perf_counter() - provider_started
            result = GatewayResult(
                completion,
                name,
                served_name,
                served.provider,
                False,
                time.perf_counter() - started,
                attempts,
                fallback_from=name if served_name != name else None,
            )
            self.metrics.overhead.observe(max(0.0, result.latency_seconds - provider_seconds))
            if result.fallback_from:
                self.metrics.fallbacks.labels(name, served_name).inc()
            found = structured.problem(request, completion)
            if found is not None:
                self.metrics.structured_invalid.labels(served_name).inc()
                self._record(ctx, request, result, status="error", error=f"invalid structured output: {found}")
                raise _InvalidAnswer(found)
            if key is not None and completion.finish_reason != "error":
                await self._cache.put(key, completion)
            self._record(ctx, request, result, status="ok")
            return result

        error = self._exhausted(name, failures, retry_after)
        self._record_failure(ctx, request, name, name, model, started, 0, error)
        raise error

    async def _note_breaker(self, endpoint: str) -> None:
        """Publish the endpoint's breaker state after a failure (successes publish 0 directly)."""
        state = await self._breaker.state(endpoint)
        self.metrics.breaker_state.labels(endpoint).set(0 if state == "closed" else 1)

    @staticmethod
    def _rejected(model: ModelConfig, exc: ProviderRejected) -> TrellisError:
        message = f"The model provider refused the request: {exc.message}"
        # The provider names no field we could map: the request as a whole.
        return ValidationFailed.of(
            exc.param or "", message, type="provider_rejected", provider=model.provider, upstream_status=exc.status_code
        )

    def _exhausted(self, name: str, failures: list[ProviderError], retry_after: float | None) -> TrellisError:
        reasons = [f"{type(f).__name__}: {f.message}" for f in failures]
        if failures and all(isinstance(f, ProviderBadResponse) for f in failures):
            return BadGateway(details={"model": name, "reasons": reasons})
        seconds = max(1, round(retry_after)) if retry_after is not None else 1
        return Unavailable(
            f"No model could serve {name!r} right now",
            details={"model": name, "reasons": reasons},
            headers={"Retry-After": str(seconds)},
        )

    # --- streaming ------------------------------------------------------------------------------

    async def stream(
        self, ctx: CallContext, name: str, model: ModelConfig, request: CompletionRequest, outcome: StreamOutcome
    ) -> AsyncGenerator[StreamChunk, None]:
        """Stream a completion. Retries and fallbacks happen only before the first chunk is sent.

        Errors after that end the stream with an error (never a silent truncation). Closing the
        iterator (the client went away) closes the provider stream, which stops the generation.
        """
        started = time.perf_counter()
        first_token_at: float | None = None
        failures: list[ProviderError] = []
        retry_after: float | None = None
        status: CallStatus = "error"
        error_text: str | None = None
        attempts = 0
        try:
            for served_name, served in self._candidates(name, model):
                endpoint = breaker_key(served)
                provider = self.provider_for(served)
                outcome.served_model, outcome.provider = served_name, served.provider
                for attempt in range(1, self._retry.max_attempts + 1):
                    permit = await self._breaker.acquire(endpoint)
                    if not permit.allowed:
                        failures.append(CircuitOpen(permit, provider=served.provider))
                        retry_after = permit.retry_after
                        break
                    attempts += 1
                    verdict: Literal["success", "failure"] | None = None
                    chunks = provider.stream(served, request)
                    try:
                        async for chunk in chunks:
                            if chunk.delta:
                                if first_token_at is None:
                                    first_token_at = time.perf_counter()
                                    self.metrics.ttft.labels(served_name, served.provider).observe(
                                        first_token_at - started
                                    )
                                outcome.text_parts.append(chunk.delta)
                            outcome.call_parts.extend(chunk.tool_calls)
                            if chunk.finish_reason is not None:
                                outcome.finish_reason = chunk.finish_reason
                                outcome.usage = chunk.usage
                                self._check_streamed(request, outcome, served_name)
                            yield chunk
                        verdict, status = "success", "ok"
                        return
                    except ProviderRejected as exc:
                        verdict = "success"  # the endpoint answered; the request was at fault
                        if exc.status_code in (401, 403) and first_token_at is None:
                            failures.append(exc)  # our credentials for this endpoint are wrong: as complete()
                            break
                        raise self._rejected(served, exc) from None
                    except ProviderUnavailable as exc:
                        verdict = "failure"
                        if first_token_at is not None:
                            raise ProviderStreamBroken(exc.message, provider=exc.provider) from exc
                        failures.append(exc)
                        retry_after = exc.retry_after
                        if attempt == self._retry.max_attempts or not self._retry.honours(exc):
                            break
                        wait = self._retry.wait_after(attempt, exc, self._jitter())
                        self._on_retry(served.provider)(attempt, exc, wait)
                        await self._wait(wait)
                    except ProviderError as exc:
                        verdict = "failure"
                        if first_token_at is not None:
                            raise
                        failures.append(exc)
                        break
                    finally:
                        await chunks.aclose()
                        if verdict == "success":
                            await self._breaker.record_success(permit)
                        elif verdict == "failure":
                            await self._breaker.record_failure(permit)
                        else:
                            await self._breaker.release(permit)
            raise self._exhausted(name, failures, retry_after)
        except GeneratorExit:
            status, error_text = "cancelled", "client disconnected"
            raise
        except BaseException as exc:
            if isinstance(exc, TrellisError | ProviderError):
                error_text = str(exc)
            elif status != "ok":
                status, error_text = "cancelled", f"stream stopped: {type(exc).__name__}"
            raise
        finally:
            latency = time.perf_counter() - started
            usage = outcome.usage or Usage(request.counted_prompt_tokens or 0, len(outcome.text_parts))
            finish: FinishReason = "error"
            if status == "ok":
                finish = "tool_calls" if outcome.finish_reason == "tool_calls" else "stop"
                finish = "length" if outcome.finish_reason == "length" else finish
            completion = Completion("".join(outcome.text_parts), finish, usage, outcome.tool_calls())
            if status == "cancelled":
                completion = Completion(completion.text, "cancelled", usage)
            self._submit(
                ctx,
                request,
                CallRecordParts(
                    requested=name,
                    served=outcome.served_model or name,
                    provider=outcome.provider or model.provider,
                    completion=completion,
                    latency=latency,
                    ttft=None if first_token_at is None else first_token_at - started,
                    cached=False,
                    status=status,
                    error=error_text,
                    attempts=attempts,
                    fallback_from=name if outcome.served_model and outcome.served_model != name else None,
                    model=self._models.get(outcome.served_model or name, model),
                ),
            )

    def _check_streamed(self, request: CompletionRequest, outcome: StreamOutcome, served: str) -> None:
        """The end of a structured stream: its text and calls are checked before the final chunk
        goes out. What was streamed cannot be taken back, so an invalid answer ends the stream with
        an error instead of ``stop`` (no retry: the client has seen the tokens)."""
        if not request.structured or outcome.finish_reason is None:
            return
        reason: Any = outcome.finish_reason
        found = structured.problem(
            request, Completion("".join(outcome.text_parts), reason, Usage(0, 0), outcome.tool_calls())
        )
        if found is not None:
            self.metrics.structured_invalid.labels(served).inc()
            raise InvalidModelOutput.of(served, [found])

    async def _wait(self, seconds: float) -> None:
        await (self._sleep or asyncio.sleep)(seconds)

    def _sleep_kw(self) -> dict[str, Any]:
        kw: dict[str, Any] = {"jitter": self._jitter}
        if self._sleep is not None:
            kw["sleep"] = self._sleep
        return kw

    def _on_retry(self, provider: str) -> Callable[[int, BaseException, float], None]:
        def note(attempt: int, error: BaseException, wait: float) -> None:
            self.metrics.retries.labels(provider).inc()
            log.info(
                "model_call_retry", provider=provider, attempt=attempt, wait_seconds=round(wait, 3), error=str(error)
            )

        return note

    # --- embeddings -----------------------------------------------------------------------------

    async def embed(
        self, ctx: CallContext, name: str | None, texts: Sequence[str], *, query: bool = False
    ) -> tuple[str, EmbeddingResult]:
        """The texts' vectors from the model ``name`` (the default embedding model when None).

        ``query``: the texts are search queries, so the model's ``query_prefix`` (the instruction
        some retrieval models were trained with) goes before each; stored texts never get it.

        Each text's vector is cached like a deterministic completion (per user unless
        ``cache_shared``; ``cache_enabled`` and the call's cache mode apply), so a repeated text,
        such as a search query asked again, is not embedded again. A call is answered from the
        cache only when every one of its texts is there (logged with ``cached``, costing nothing);
        otherwise all its texts go to the model, so a call's usage is always what the model was
        asked for. Vectors are kept as float32, the precision embedding models compute in; the
        tokens of a text embedded in a batch are its even share of the batch's."""
        canonical, model = self.resolve(name, "embed")
        if query and model.query_prefix:
            texts = [model.query_prefix + text for text in texts]
        started = time.perf_counter()
        request = CompletionRequest(messages=(), max_tokens=1)
        keys: list[str] = []
        if texts and self._settings.gateway.cache_enabled and ctx.cache != "bypass":
            scope = self._cache_scope(ctx)
            keys = [embedding_key(canonical, text, scope) for text in texts]
            hits: list[CachedEmbedding] = []
            levels: set[str] = set()
            for key in keys:
                hit = await self._embeddings.get(key)
                if hit is None:
                    break
                hits.append(hit[0])
                levels.add(hit[1])
            # Counted per call, as completions are: hit_l2 when any text had to come from Redis.
            self.metrics.cache.labels("miss" if len(hits) < len(keys) else f"hit_{max(levels)}").inc()
            if len(hits) == len(texts):
                vectors = [entry.floats() for entry in hits]
                cached = EmbeddingResult(vectors, sum(entry.tokens for entry in hits), len(vectors[0]))
                self._submit_embedding(ctx, request, canonical, model, texts, cached, started, cached=True)
                return canonical, cached
        else:
            self.metrics.cache.labels("bypass").inc()

        result = await self._embed_uncached(ctx, canonical, model, texts, request, started)
        if keys and len(result.vectors) == len(keys):  # no keys: the cache is off for this call
            shares = _shares(result.prompt_tokens, len(keys))
            fresh = zip(keys, result.vectors, shares, strict=True)
            await self._embeddings.put_many([(key, CachedEmbedding.of(vector, n)) for key, vector, n in fresh])
        self._submit_embedding(ctx, request, canonical, model, texts, result, started, cached=False)
        return canonical, result

    async def _embed_uncached(
        self,
        ctx: CallContext,
        canonical: str,
        model: ModelConfig,
        texts: Sequence[str],
        request: CompletionRequest,
        started: float,
    ) -> EmbeddingResult:
        endpoint = breaker_key(model)
        provider = self.provider_for(model)
        try:
            return await call_with_retries(
                lambda: call_with_breaker(
                    self._breaker, endpoint, lambda: provider.embed(model, texts), provider=model.provider
                ),
                self._retry,
                on_retry=self._on_retry(model.provider),
                **self._sleep_kw(),
            )
        except ProviderRejected as exc:
            self._record_failure(ctx, request, canonical, canonical, model, started, 1, exc)
            raise self._rejected(model, exc) from None
        except ProviderError as exc:
            error = self._exhausted(canonical, [exc], getattr(exc, "retry_after", None))
            self._record_failure(ctx, request, canonical, canonical, model, started, 1, error)
            raise error from None

    def _submit_embedding(
        self,
        ctx: CallContext,
        request: CompletionRequest,
        canonical: str,
        model: ModelConfig,
        texts: Sequence[str],
        result: EmbeddingResult,
        started: float,
        *,
        cached: bool,
    ) -> None:
        self._submit(
            ctx,
            request,
            CallRecordParts(
                requested=canonical,
                served=canonical,
                provider=model.provider,
                completion=Completion(f"{len(result.vectors)} embeddings", "stop", Usage(result.prompt_tokens, 0)),
                latency=time.perf_counter() - started,
                ttft=None,
                cached=cached,
                status="ok",
                error=None,
                attempts=0 if cached else 1,
                fallback_from=None,
                model=model,
                prompt="\n".join(texts)[:10_000],
            ),
        )

    # --- the episodic log -------------------------------------------------------------------------

    def _record(
        self,
        ctx: CallContext,
        request: CompletionRequest,
        result: GatewayResult,
        *,
        status: CallStatus,
        error: str | None = None,
    ) -> None:
        self._submit(
            ctx,
            request,
            CallRecordParts(
                requested=result.requested_model,
                served=result.served_model,
                provider=result.provider,
                completion=result.completion,
                latency=result.latency_seconds,
                ttft=None,
                cached=result.cached,
                status=status,
                error=error,
                attempts=result.attempts,
                fallback_from=result.fallback_from,
                model=self._models[result.served_model],
            ),
        )

    def _record_failure(
        self,
        ctx: CallContext,
        request: CompletionRequest,
        requested: str,
        served: str,
        model: ModelConfig,
        started: float,
        attempts: int,
        error: Exception,
    ) -> None:
        self._submit(
            ctx,
            request,
            CallRecordParts(
                requested=requested,
                served=served,
                provider=model.provider,
                completion=Completion("", "error", Usage(0, 0)),
                latency=time.perf_counter() - started,
                ttft=None,
                cached=False,
                status="error",
                error=str(error),
                attempts=attempts,
                fallback_from=None,
                model=model,
            ),
        )

    def _submit(self, ctx: CallContext, request: CompletionRequest, parts: CallRecordParts) -> None:
        usage = parts.completion.usage
        cost = 0.0 if parts.cached else parts.model.cost(usage.prompt_tokens, usage.completion_tokens)
        self.metrics.requests.labels(parts.served, parts.provider, ctx.door, parts.status).inc()
        if not parts.cached:
            self.metrics.tokens.labels(parts.served, "prompt").inc(usage.prompt_tokens)
            self.metrics.tokens.labels(parts.served, "completion").inc(usage.completion_tokens)
            self.metrics.latency.labels(parts.served, parts.provider).observe(parts.latency)
        record = CallRecord(
            owner_id=ctx.principal.user_id,
            request_id=ctx.request_id,
            door=ctx.door,
            requested_model=parts.requested,
            served_model=parts.served,
            provider=parts.provider,
            prompt=parts.prompt,
            messages=[_logged_message(m) for m in request.messages],
            response=_logged_response(parts.completion),
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            latency_ms=parts.latency * 1000,
            ttft_ms=None if parts.ttft is None else parts.ttft * 1000,
            cost=cost,
            cached=parts.cached,
            status=parts.status,
            error=parts.error,
            finish_reason=parts.completion.finish_reason,
            attempts=parts.attempts,
            fallback_from=parts.fallback_from,
            module=ctx.module,
        )
        if self._on_call is not None:
            self._on_call(record)
        self._logs.submit(record)


def _calls_json(calls: Sequence[ToolCall]) -> list[dict[str, str]]:
    return [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in calls]


def _logged_message(m: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.tool_calls:
        out["tool_calls"] = _calls_json(m.tool_calls)
    if m.tool_call_id is not None:
        out["tool_call_id"] = m.tool_call_id
    return out


def _logged_response(completion: Completion) -> str:
    """The answer's text; function calls follow as a JSON list, so the log shows what was called."""
    if not completion.tool_calls:
        return completion.text
    calls = json.dumps({"tool_calls": _calls_json(completion.tool_calls)})
    return f"{completion.text}\n{calls}" if completion.text else calls


@dataclass(frozen=True)
class CallRecordParts:
    requested: str
    served: str
    provider: str
    completion: Completion
    latency: float
    ttft: float | None
    cached: bool
    status: CallStatus
    error: str | None
    attempts: int
    fallback_from: str | None
    model: ModelConfig
    prompt: str | None = None
