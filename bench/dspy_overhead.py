"""What does calling the gateway through DSPy add to a model call?

In one process, one event loop: the same question (one user message, the same answer) sent
``--calls`` times each way, interleaved in rounds so drift hits both alike:

* ``gateway``: ``Gateway.complete`` straight (what REST's handlers call);
* ``dspy``: ``dspy.Predict("question -> answer").acall(...)`` inside ``dspy.context`` with the
  in-process engine's LM (trellis.dspy.engine): DSPy's adapter formats the prompt, the engine
  builds the gateway request, spends the caller's ai budget (rate limits are on), calls
  ``Gateway.complete``, and the adapter parses the answer.

The model is a provider registered in process that answers at once with a fixed JSON answer,
so the provider costs the same (almost nothing) both ways and what is left is the path's own
cost; the gateway's response cache is off so every call reaches it. Prints p50 / p90 / p99 per
path and the p50 DSPy adds (target: at most 1 ms). The machine may be shared: run twice.

    .venv/bin/python bench/dspy_overhead.py                # 2000 calls each way, a few seconds
    .venv/bin/python bench/dspy_overhead.py --calls 500
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import tempfile
import time
from collections.abc import AsyncGenerator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _common import fmt, new_admin_key, percentile, render_table, result_header, write_results
from trellis.auth.schemas import ApiKeyCreate, UserCreate
from trellis.gateway.providers.base import ProviderContext
from trellis.gateway.service import CallContext
from trellis.gateway.types import (
    Completion,
    CompletionRequest,
    EmbeddingResult,
    Message,
    StreamChunk,
    ToolSpec,
    Usage,
)
from trellis.runtime import build_runtime
from trellis.settings import ModelConfig, Settings
from trellis.storage import migrate

ANSWER = json.dumps({"answer": "Paris"})
ADMIN_KEY = new_admin_key()


class InstantProvider:
    """Answers every completion at once with the same text (no I/O, no model)."""

    def __init__(self, context: ProviderContext) -> None:
        del context

    async def complete(self, model: ModelConfig, request: CompletionRequest) -> Completion:
        return Completion(ANSWER, "stop", Usage(20, 5))

    async def stream(self, model: ModelConfig, request: CompletionRequest) -> AsyncGenerator[StreamChunk, None]:
        yield StreamChunk(ANSWER, "stop", Usage(20, 5))

    async def embed(self, model: ModelConfig, texts: Sequence[str]) -> EmbeddingResult:
        raise NotImplementedError

    async def count_tokens(
        self,
        model: ModelConfig,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolSpec] = (),
        tool_choice: str = "auto",
    ) -> int | None:
        return sum(len(m.content) for m in messages) // 4

    async def aclose(self) -> None:
        pass


async def measure(calls: int) -> dict[str, Any]:
    import dspy

    from trellis.dspy.engine import CallIdentity
    from trellis.dspy.interface import call_scope

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            data_dir=Path(tmp),
            jwt_secret=secrets.token_urlsafe(48),
            log_json=True,
            bootstrap_admin_key=ADMIN_KEY,
            models={"instant": ModelConfig(provider="instant", model_id="instant", context_window=4096)},
            gateway={"cache_enabled": False},
            dspy={"default_model": "instant"},
            rate_limits={"developer": {"ai": {"capacity": 1_000_000, "period_seconds": 1}}},
        )
        runtime = build_runtime(settings)
        runtime.gateway.providers.register("instant", InstantProvider)
        await migrate.upgrade(runtime.database)
        runtime.start(index_sweep=False, workflow_worker=False)
        try:
            await runtime.auth.bootstrap_admin()
            admin = await runtime.auth.authenticate(ADMIN_KEY)
            user = await runtime.auth.create_user(admin, UserCreate(username="bench"))
            _, key = await runtime.auth.create_key(admin, ApiKeyCreate(name="bench", user_id=user.id))
            principal = await runtime.auth.authenticate(key)
            gateway = runtime.gateway
            name, model = gateway.resolve("instant")
            ctx = CallContext(principal=principal, door="rest")
            lm = runtime.dspy.lm_for("instant")
            identity = CallIdentity(principal, "bench")
            predict = dspy.Predict("question -> answer")
            adapter_messages = dspy.JSONAdapter().format(predict.signature, [], {"question": "Capital of France?"})
            messages = [Message(m["role"], m["content"]) for m in adapter_messages]

            async def direct() -> None:
                request = await gateway.build_request(model, messages, max_tokens=256, temperature=0.0)
                await gateway.complete(ctx, name, model, request)

            async def through_dspy() -> None:
                with call_scope(identity, lm):
                    prediction = await predict.acall(question="Capital of France?")
                assert prediction.answer == "Paris"

            for _ in range(50):  # warm both paths (imports, caches, JIT-free but first-call work)
                await direct()
                await through_dspy()
            times: dict[str, list[float]] = {"gateway": [], "dspy": []}
            for _ in range(calls):
                for label, call in (("gateway", direct), ("dspy", through_dspy)):
                    started = time.perf_counter()
                    await call()
                    times[label].append(time.perf_counter() - started)
            await runtime.logs.flush()
        finally:
            await runtime.close()
    return times


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args(argv)
    started = datetime.now(UTC)
    times = asyncio.run(measure(args.calls))
    rows = []
    summary: dict[str, Any] = {}
    for label, values in times.items():
        ms = [v * 1000 for v in values]
        summary[label] = {p: percentile(ms, q) for p, q in (("p50", 50), ("p90", 90), ("p99", 99))}
        rows.append([label, *(fmt(summary[label][p], ".3f") for p in ("p50", "p90", "p99"))])
    added = summary["dspy"]["p50"] - summary["gateway"]["p50"]
    print(render_table(["path", "p50 ms", "p90 ms", "p99 ms"], rows))
    print(f"\nDSPy adds {added:.3f} ms at p50 ({args.calls} calls each way; target at most 1 ms).")
    write_results(
        "dspy_overhead",
        started,
        {**result_header("dspy_overhead", started), "calls": args.calls, "ms": summary, "added_p50_ms": added},
    )


if __name__ == "__main__":
    main()
