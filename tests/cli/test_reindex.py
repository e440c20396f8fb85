"""``trellis context reindex``: in-process against an embedded data directory, and a real
``trellis`` process killed with SIGKILL in the middle of a reindex, which another process resumes.

The two embedding models are served by the fake upstream of the reindex API tests (real HTTP).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from tests.cli.test_commands import cli, flat, ok_json
from tests.conftest import bootstrap
from tests.context.index.test_reindex import embedded_texts, vector
from tests.gateway.upstream import FakeUpstream
from tests.processes import start
from trellis.cli.common import acting
from trellis.context.index.models import EmbeddingState
from trellis.context.index.reindex import Reindexer
from trellis.context.schemas import ContextCreate
from trellis.context.search.schemas import SearchQuery
from trellis.kit.clock import ManualClock
from trellis.runtime import build_runtime
from trellis.settings import load_settings
from trellis.storage.database import Database

TEXTS = [f"Note {i}: {word}" for i, word in enumerate(["oak", "elm", "ash", "yew", "fir", "box", "bay", "fig"])]


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    server = FakeUpstream(("old-embed", "new-embed")).start()
    yield server
    server.stop()


def _config(path: Path, upstream: FakeUpstream, **context: Any) -> Path:
    lines = ['[gateway]\ndefault_embed_model = "old"\n', "[context]"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in context.items()]
    for name, model_id in (("old", "old-embed"), ("new", "new-embed")):
        lines += [
            f"\n[models.{name}]",
            'provider = "openai"',
            f'base_url = "{upstream.base_url}"',
            f'model_id = "{model_id}"',
            'api_key = "sk-test"',
            'capabilities = ["embed"]',
            "max_output_tokens = 1",
            "default_max_tokens = 1",
        ]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, upstream: FakeUpstream) -> Path:
    upstream.reset()
    upstream.embedder = vector
    path = tmp_path / "data"
    monkeypatch.setenv("TRELLIS_DATA_DIR", str(path))
    monkeypatch.setenv("TRELLIS_CONFIG", str(_config(tmp_path / "trellis.toml", upstream, reindex_batch_size=2)))
    bootstrap()
    return path


def seed() -> None:
    """The contexts, written in one process (a CLI call per context would build a runtime each)."""

    async def run() -> None:
        runtime = build_runtime(load_settings())
        try:
            actor = await acting(runtime, None)
            for text in TEXTS:
                await runtime.context.create(actor, ContextCreate(type="note", content=text))
        finally:
            await runtime.close()

    asyncio.run(run())


def test_reindex_waits_with_progress_and_switches(data_dir: Path, upstream: FakeUpstream) -> None:
    seed()
    idle = ok_json("context", "reindex", "--status")
    assert (idle["status"], idle["active_model"]) == ("idle", "old")

    done = ok_json("context", "reindex", "--model", "new", "--wait")
    assert (done["status"], done["active_model"], done["previous_model"]) == ("done", "new", "old")
    assert (done["done"], done["total"], done["progress"]) == (len(TEXTS), len(TEXTS), 1.0)
    assert sorted(embedded_texts(upstream, "new-embed")) == sorted(TEXTS)
    found = ok_json("context", "search", "oak", "--mode", "semantic")
    assert found["model"] == "new"

    readable = cli("context", "reindex", "--status")
    assert readable.exit_code == 0, readable.output
    assert "done" in readable.stdout
    assert "new" in readable.stdout
    refused = cli("context", "reindex", "--model", "smollm2-135m")
    assert refused.exit_code == 1, refused.output
    assert "Model 'smollm2-135m' cannot do embed" in flat(refused.stderr), refused.stderr


def test_a_reindex_killed_with_sigkill_resumes_in_another_process(
    data_dir: Path, tmp_path: Path, upstream: FakeUpstream
) -> None:
    """A real ``trellis context reindex --wait`` is killed (SIGKILL: no shutdown code runs) once two
    batches are stored. Searches still rank the old model's vectors; another process claims the job
    once the dead one's lease has run out, resumes from the stored cursor, and switches."""
    for text in TEXTS:
        ok_json("context", "add", text)

    def slow_new_model(model_id: str, text: str) -> list[float]:
        if model_id == "new-embed":
            time.sleep(0.3)  # time for the test to see progress and kill mid-job
        return vector(model_id, text)

    upstream.embedder = slow_new_model
    settings = load_settings()
    env = {
        "TRELLIS_DATA_DIR": str(data_dir),
        "TRELLIS_CONFIG": str(tmp_path / "trellis.toml"),
    }
    worker = start("reindex", ["context", "reindex", "--model", "new", "--wait", "--json"], env, tmp_path)
    try:
        state = asyncio.run(_wait_for_progress(settings.resolved_database_url, 4, worker.process.poll))
    finally:
        worker.kill()
    assert state.status == "running", worker.output()
    assert state.lease_owner is not None
    assert state.done >= 4
    upstream.embedder = vector

    async def resume() -> list[Any]:
        later = ManualClock(datetime.now(UTC) + timedelta(seconds=settings.context.reindex_lease_seconds + 30))
        runtime = build_runtime(settings, clock=later)
        try:
            actor = await acting(runtime, None)
            query = SearchQuery.parse("oak", mode="semantic")
            seen: list[Any] = [(await runtime.search.search(actor, query)).model]
            now = Reindexer(runtime.database, runtime.gateway, runtime.indexer, ManualClock(), batch_size=2)
            seen.append(await now.work())  # the dead process's lease still runs at the real now
            other = Reindexer(runtime.database, runtime.gateway, runtime.indexer, runtime.clock, batch_size=2)
            seen.append(await other.work())
            seen.append((await other.current()).active_model)
            seen.append((await runtime.search.search(actor, query)).model)
            return seen
        finally:
            await runtime.close()

    # Before the resume searches rank the old model; a live lease cannot be taken; an expired one is.
    assert asyncio.run(resume()) == ["old", False, True, "new", "new"]
    # Stored batches were not embedded again: at most the batch in flight when the process died.
    sent = Counter(embedded_texts(upstream, "new-embed"))
    assert set(sent) == set(TEXTS)
    assert sum(sent.values()) - len(TEXTS) <= 2, sent


async def _wait_for_progress(url: str, done: int, exited: Any) -> EmbeddingState:
    database = Database(url)
    try:
        deadline = time.monotonic() + 60
        while True:
            async with database.session() as session:
                state = (await session.execute(select(EmbeddingState))).scalar_one_or_none()
            if state is not None and state.status != "idle" and (state.done >= done or state.status != "running"):
                return state
            assert exited() is None, "the reindex process ended before it was killed"
            assert time.monotonic() < deadline, "no progress within 60 s"
            await asyncio.sleep(0.05)
    finally:
        await database.dispose()
