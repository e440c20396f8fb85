"""Migration 0015 (a vector per context and model; the embedding state) goes down and up on a store
with vectors: rows are kept, the active model is the one most vectors have, the vector-epoch
triggers of 0004 still fire on the rebuilt SQLite table, and deleting a context still cascades."""

from __future__ import annotations

from typing import Any

from alembic import command
from sqlalchemy import text
from sqlalchemy.engine import Connection

from tests.auth.support import assert_ok
from tests.conftest import Harness
from trellis.storage import migrate


async def _migrate(h: Harness, revision: str, *, down: bool) -> None:
    def run(sync_conn: Connection) -> None:
        config = migrate.alembic_config()
        config.attributes["connection"] = sync_conn
        (command.downgrade if down else command.upgrade)(config, revision)

    async with h.runtime.database.engine.begin() as conn:
        await conn.run_sync(run)


async def _rows(h: Harness, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    async with h.runtime.database.transaction() as session:
        return [tuple(row) for row in (await session.execute(text(sql), params)).all()]


async def _execute(h: Harness, sql: str, **params: Any) -> None:
    async with h.runtime.database.transaction() as session:
        await session.execute(text(sql), params)


async def test_down_and_up_keeps_the_vectors_and_pins_the_commonest_model(h: Harness, alice: dict[str, str]) -> None:
    ids = []
    for content in ("Ferries cross the bay", "Lighthouses guide ships", "Tides follow the moon"):
        ids.append(
            assert_ok(
                await h.client.post("/api/context", json={"type": "note", "content": content}, headers=alice), 201
            )["id"]
        )
    await _migrate(h, "0014", down=True)
    await _execute(h, "UPDATE context_embeddings SET model = 'other-model' WHERE context_id = :id", id=ids[0])

    await _migrate(h, "head", down=False)
    assert sorted(await _rows(h, "SELECT context_id, model FROM context_embeddings")) == sorted(
        [(ids[0], "other-model"), (ids[1], "minilm-l6"), (ids[2], "minilm-l6")]
    )
    assert await _rows(h, "SELECT active_model, status FROM context_embedding_state") == [("minilm-l6", "idle")]
    # A second model's vector for the same context is a row of its own now; the epoch trigger fires.
    owner = (await _rows(h, "SELECT owner_id FROM contexts WHERE id = :id", id=ids[1]))[0][0]
    [(epoch,)] = await _rows(h, "SELECT epoch FROM context_vector_epochs WHERE owner_id = :o", o=owner)
    await _execute(
        h,
        "INSERT INTO context_embeddings (context_id, owner_id, model, dimensions, vector, content_hash) "
        "SELECT context_id, owner_id, 'other-model', dimensions, vector, content_hash FROM context_embeddings "
        "WHERE context_id = :id",
        id=ids[1],
    )
    [(bumped,)] = await _rows(h, "SELECT epoch FROM context_vector_epochs WHERE owner_id = :o", o=owner)
    assert bumped > epoch
    assert len(await _rows(h, "SELECT 1 FROM context_embeddings WHERE context_id = :id", id=ids[1])) == 2

    await _migrate(h, "0014", down=True)  # one vector per context again: the active model's where it has one
    assert sorted(await _rows(h, "SELECT context_id, model FROM context_embeddings")) == sorted(
        [(ids[0], "other-model"), (ids[1], "minilm-l6"), (ids[2], "minilm-l6")]
    )
    await _migrate(h, "head", down=False)
    assert_ok(await h.client.delete(f"/api/context/{ids[1]}", headers=alice))
    assert await _rows(h, "SELECT 1 FROM context_embeddings WHERE context_id = :id", id=ids[1]) == []
