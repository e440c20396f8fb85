"""Every model call lands in the episodic log, whichever door it came through.

The gateway writes one row per call; what these tests guard is the doors around it: that each one
starts the log writer and drains it before it lets go (a CLI command is a process that exits a
moment after its call), and that each names itself. The models are the real local ones: MiniLM
for embeddings (every context-store door embeds), SmolLM2 for ``ask`` (tests/cli/test_gateway.py).
"""

from __future__ import annotations

from pathlib import Path

from httpx import AsyncClient

from tests.cli.test_commands import cli, ok_json
from tests.conftest import ADMIN_KEY, Harness
from tests.episodic.support import logged_calls

AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}


# --- the CLI, in process ----------------------------------------------------------------------------


def test_cli_semantic_search_is_logged_as_cli(cli_data_dir: Path) -> None:
    """The reported defect: ``trellis context search --mode semantic`` embedded its query and no row appeared."""
    assert logged_calls() == []
    hits = ok_json("context", "search", "where are the contexts stored", "--mode", "semantic")
    assert hits["model"] == "minilm-l6"
    [row] = logged_calls()
    assert (row.door, row.status, row.served_model) == ("cli", "ok", "minilm-l6")
    assert row.prompt_tokens > 0


def test_cli_writes_are_embedded_and_logged_as_indexer(cli_data_dir: Path, tmp_path: Path) -> None:
    created = ok_json("context", "add", "Trellis keeps its contexts in SQLite by default", "--type", "note")
    [row] = logged_calls()
    assert (row.door, row.status, row.owner_id) == ("indexer", "ok", created["owner_id"])

    notes = tmp_path / "notes.md"
    notes.write_text("# Storage\n\nSQLite by default.\n\n# Scale\n\nPostgreSQL and Redis.\n")
    result = cli("context", "ingest", str(notes), "--json")
    assert result.exit_code == 0, result.output
    rows = logged_calls()
    assert len(rows) >= 2
    assert {r.door for r in rows} == {"indexer"}
    assert all(r.status == "ok" for r in rows)


def test_a_cli_command_drains_the_log_before_it_exits(cli_data_dir: Path) -> None:
    """Several calls, one command each: every row is written by the time its command returns."""
    for query in ("first question", "second question", "third question"):
        ok_json("context", "search", query, "--mode", "semantic")
    assert sorted(r.door for r in logged_calls()) == ["cli", "cli", "cli"]


# --- REST and OpenAI-compatible, over HTTP ----------------------------------------------------------


async def rows_by_door(harness: Harness) -> list[str]:
    await harness.runtime.logs.flush()
    response = await harness.client.get("/api/v1/db/logs", params={"limit": 100}, headers=AUTH)
    assert response.status_code == 200, response.text
    return sorted(row["door"] for row in response.json()["data"]["items"])


async def test_rest_and_openai_doors_name_themselves(harness: Harness) -> None:
    client: AsyncClient = harness.client
    created = await client.post(
        "/api/context", json={"type": "note", "content": "Redis backs rate limits"}, headers=AUTH
    )
    assert created.status_code == 201, created.text
    assert await rows_by_door(harness) == ["indexer"]

    searched = await client.get(
        "/api/context/search", params={"query": "rate limits", "mode": "semantic"}, headers=AUTH
    )
    assert searched.status_code == 200, searched.text
    assert await rows_by_door(harness) == ["indexer", "rest"]

    collection = await client.post(
        "/api/v1/db/vectors/collections", json={"name": "notes", "dimensions": 384, "model": "minilm-l6"}, headers=AUTH
    )
    assert collection.status_code == 201, collection.text
    upserted = await client.put(
        "/api/v1/db/vectors/collections/notes/items", json={"items": [{"id": "a", "text": "hello"}]}, headers=AUTH
    )
    assert upserted.status_code == 200, upserted.text
    assert await rows_by_door(harness) == ["indexer", "rest", "rest"]

    embedded = await client.post("/v1/embeddings", json={"model": "minilm-l6", "input": "hello"}, headers=AUTH)
    assert embedded.status_code == 200, embedded.text
    assert await rows_by_door(harness) == ["indexer", "openai", "rest", "rest"]
