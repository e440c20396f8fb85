"""Migration 0015 (a vector per context and model; the embedding state) goes down and up on a store
with vectors: rows are kept, the active model is the one most vectors have, the vector-epoch
triggers of 0004 still fire on the rebuilt SQLite table, and deleting a context still cascades."""

from __future__ import annotations

from tests.auth.support import assert_ok
from tests.conftest import Harness
from tests.storage.migrations import execute, migrate_to, rows


async def test_down_and_up_keeps_the_vectors_and_pins_the_commonest_model(h: Harness, alice: dict[str, str]) -> None:
    ids = []
    for content in ("Ferries cross the bay", "Lighthouses guide ships", "Tides follow the moon"):
        ids.append(
            assert_ok(
                await h.client.post("/api/context", json={"type": "note", "content": content}, headers=alice), 201
            )["id"]
        )
    await migrate_to(h, "0014", down=True)
    await execute(h, "UPDATE context_embeddings SET model = 'other-model' WHERE context_id = :id", id=ids[0])

    await migrate_to(h, "head", down=False)
    assert sorted(await rows(h, "SELECT context_id, model FROM context_embeddings")) == sorted(
        [(ids[0], "other-model"), (ids[1], "minilm-l6"), (ids[2], "minilm-l6")]
    )
    assert await rows(h, "SELECT active_model, status FROM context_embedding_state") == [("minilm-l6", "idle")]
    # A second model's vector for the same context is a row of its own now; the epoch trigger fires.
    owner = (await rows(h, "SELECT owner_id FROM contexts WHERE id = :id", id=ids[1]))[0][0]
    [(epoch,)] = await rows(h, "SELECT epoch FROM context_vector_epochs WHERE owner_id = :o", o=owner)
    await execute(
        h,
        "INSERT INTO context_embeddings (context_id, owner_id, model, dimensions, vector, content_hash) "
        "SELECT context_id, owner_id, 'other-model', dimensions, vector, content_hash FROM context_embeddings "
        "WHERE context_id = :id",
        id=ids[1],
    )
    [(bumped,)] = await rows(h, "SELECT epoch FROM context_vector_epochs WHERE owner_id = :o", o=owner)
    assert bumped > epoch
    assert len(await rows(h, "SELECT 1 FROM context_embeddings WHERE context_id = :id", id=ids[1])) == 2

    await migrate_to(h, "0014", down=True)  # one vector per context again: the active model's where it has one
    assert sorted(await rows(h, "SELECT context_id, model FROM context_embeddings")) == sorted(
        [(ids[0], "other-model"), (ids[1], "minilm-l6"), (ids[2], "minilm-l6")]
    )
    await migrate_to(h, "head", down=False)
    assert_ok(await h.client.delete(f"/api/context/{ids[1]}", headers=alice))
    assert await rows(h, "SELECT 1 FROM context_embeddings WHERE context_id = :id", id=ids[1]) == []
