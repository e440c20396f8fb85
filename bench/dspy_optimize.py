"""Does one optimization cycle improve something real on the local model?

The task comes from material every Python ships offline: ``http.HTTPStatus`` (code → reason
phrase, e.g. 404 → "Not Found"). ``--examples`` codes are taken in a seeded order and split by the
loop into train / dev / test; the metric is exact match of the phrase (case and spaces ignored).
One ``FourPartOptimizationLoop.run_cycle`` runs on the local model (SmolLM2-135M by default,
``--model`` for another configured one) with the caller's identity, every call through the
gateway: the module is scored on the held-out test split, compiled on train (BootstrapFewShot by
default; ``--optimizer miprov2_light`` or ``gepa``, whose instruction proposals and reflections go
through the gateway too), scored again on test, stored as version 1 and deployed only if better.
Prints the test scores before and after, the model calls and tokens the cycle spent (from the
episodic log) and the time.

SmolLM2-135M is weak: expect small or no gains and read the numbers as they are.
The machine may be shared with other work: times are indicative.

    .venv/bin/python bench/dspy_optimize.py                # 15 examples: a few minutes on 2 cores
    .venv/bin/python bench/dspy_optimize.py --examples 25
    .venv/bin/python bench/dspy_optimize.py --examples 5 --optimizer gepa --max-metric-calls 6
"""

from __future__ import annotations

import argparse
import asyncio
import random
import secrets
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path
from typing import Any, ClassVar

from sqlalchemy import func, select

from _common import new_admin_key, render_table, result_header, write_results
from trellis.auth.schemas import ApiKeyCreate, UserCreate
from trellis.episodic.models import EpisodicLog
from trellis.runtime import build_runtime
from trellis.settings import Settings
from trellis.storage import migrate

ADMIN_KEY = new_admin_key()


def build_module() -> Any:
    import dspy

    from trellis.dspy.modules.base import TrellisModule

    class StatusPhrase(dspy.Signature):  # type: ignore[misc]
        """Give the standard HTTP reason phrase of the status code."""

        code: str = dspy.InputField()
        phrase: str = dspy.OutputField(desc="the reason phrase, e.g. Not Found")

    class StatusModule(TrellisModule):
        signature: ClassVar[Any] = StatusPhrase
        description: ClassVar[str] = "HTTP status code to reason phrase"

        def __init__(self, deps: Any) -> None:
            super().__init__(deps)
            self.predict = dspy.Predict(StatusPhrase)

        async def aforward(self, code: str) -> Any:  # type: ignore[override]
            return await self.predict.acall(code=code)

    return StatusModule


async def measure(
    examples: int, model: str | None, seed: int, optimizer: str, optimizer_params: dict[str, Any]
) -> dict[str, Any]:
    from trellis.dspy.programs import FourPartOptimizationLoop

    codes = [s for s in HTTPStatus if 200 <= s.value < 600]
    random.Random(seed).shuffle(codes)
    data = [{"code": str(s.value), "phrase": s.phrase} for s in codes[:examples]]
    with tempfile.TemporaryDirectory() as tmp:
        dspy_settings: dict[str, Any] = {"max_tokens": 24, "temperature": 0.0}
        if model:
            dspy_settings["default_model"] = model
        settings = Settings(
            data_dir=Path(tmp),
            jwt_secret=secrets.token_urlsafe(48),
            log_json=True,
            bootstrap_admin_key=ADMIN_KEY,
            dspy=dspy_settings,
            rate_limit_enabled=False,
        )
        runtime = build_runtime(settings)
        await migrate.upgrade(runtime.database)
        runtime.start(index_sweep=False, workflow_worker=False)
        try:
            await runtime.auth.bootstrap_admin()
            admin = await runtime.auth.authenticate(ADMIN_KEY)
            user = await runtime.auth.create_user(admin, UserCreate(username="bench"))
            _, key = await runtime.auth.create_key(admin, ApiKeyCreate(name="bench", user_id=user.id))
            principal = await runtime.auth.authenticate(key)
            runtime.dspy.registry.register_module("http_status", build_module())
            loop = FourPartOptimizationLoop(runtime.dspy_programs)
            started = time.perf_counter()
            result = await loop.run_cycle(
                principal,
                {
                    "module_class": "http_status",
                    "program": "http_status",
                    "test_data": data,
                    "seed": seed,
                    "optimizer": optimizer,
                    "optimizer_params": optimizer_params,
                },
            )
            seconds = time.perf_counter() - started
            await runtime.logs.flush()
            async with runtime.database.session() as session:
                calls, prompt, completion = (
                    await session.execute(
                        select(
                            func.count(), func.sum(EpisodicLog.prompt_tokens), func.sum(EpisodicLog.completion_tokens)
                        ).where(EpisodicLog.door == "dspy", EpisodicLog.owner_id == user.id)
                    )
                ).one()
            served = runtime.dspy.lm_for(model).model
        finally:
            await runtime.close()
    return {
        "model": str(served).removeprefix("trellis/"),
        "optimizer": optimizer,
        "optimizer_params": optimizer_params,
        "examples": examples,
        "split": result.split,
        "baseline_test_score": result.baseline_test_score,
        "optimized_test_score": result.optimized_test_score,
        "version": result.version,
        "deployed": result.deployed,
        "demos": result.demos,
        "model_calls": calls,
        "prompt_tokens": int(prompt or 0),
        "completion_tokens": int(completion or 0),
        "seconds": seconds,
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=15)
    parser.add_argument("--model", default=None, help="a configured gateway model (default: the default chat model)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--optimizer", default="bootstrap_few_shot", choices=["bootstrap_few_shot", "miprov2_light", "gepa"]
    )
    parser.add_argument("--max-metric-calls", type=int, default=None, help="gepa: module runs its search may make")
    args = parser.parse_args(argv)
    started = datetime.now(UTC)
    extra = {"max_metric_calls": args.max_metric_calls} if args.max_metric_calls is not None else {}
    out = asyncio.run(measure(args.examples, args.model, args.seed, args.optimizer, extra))
    rows = [
        ["model", out["model"]],
        ["optimizer", out["optimizer"]],
        ["split train/dev/test", "/".join(str(out["split"][k]) for k in ("train", "dev", "test"))],
        ["test score before", f"{out['baseline_test_score']:.3f}"],
        ["test score after", f"{out['optimized_test_score']:.3f}"],
        ["demos in the compiled program", str(out["demos"])],
        ["deployed", str(out["deployed"])],
        ["model calls", str(out["model_calls"])],
        ["tokens (prompt + completion)", f"{out['prompt_tokens']} + {out['completion_tokens']}"],
        ["time", f"{out['seconds']:.1f} s"],
    ]
    print(render_table(["", "one cycle"], rows))
    write_results("dspy_optimize", started, {**result_header("dspy_optimize", started), **out})


if __name__ == "__main__":
    main()
