"""Ingestion: POST /api/context/ingest and `trellis context ingest`, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from typer.testing import CliRunner

from tests.auth.support import assert_error, assert_ok, field_names
from tests.conftest import ADMIN_KEY, Harness
from trellis.cli.main import app as cli_app
from trellis.context.ingest.schemas import IngestStatus
from trellis.context.ingest.service import IngestService, source_name
from trellis.context.models import Context, ContextRelationship
from trellis.kit.ids import new_id

ADMIN = Harness.auth(ADMIN_KEY)

INGEST = "/api/context/ingest"

GUIDE = b"""# Guide

Welcome.

## Install

pip install trellis

## Use

Use it.
"""

GUIDE_V2 = b"""# Guide

Welcome, again.

## Install

uv pip install trellis

## Configure

Set TRELLIS_DATA_DIR.

## Use

Use it.
"""

APP = b'''"""An app."""

import os


@decorator
def main() -> None:
    """Run."""
    print(os.getcwd())


class Server:
    def start(self) -> None:
        pass
'''


class RecordingIndexer:
    def __init__(self) -> None:
        self.scheduled: list[tuple[str, list[str]]] = []
        self.indexed: list[tuple[str, list[str]]] = []
        self.forgotten: list[tuple[str, list[str]]] = []

    async def index(self, owner_id: str, context_ids: Sequence[str]) -> None:
        self.indexed.append((owner_id, list(context_ids)))

    def schedule(self, owner_id: str, context_ids: Sequence[str]) -> None:
        self.scheduled.append((owner_id, list(context_ids)))

    async def forget(self, owner_id: str, context_ids: Sequence[str]) -> None:
        self.forgotten.append((owner_id, list(context_ids)))


@pytest.fixture
async def h(make_harness: Callable[..., Any], database_url: str) -> AsyncIterator[Harness]:
    async with make_harness(database_url=database_url) as harness:
        # Embedding (the local model, ~1 min per MB of text) is the search side's to test: here the
        # indexer records what ingestion hands it.
        harness.runtime.ingest.indexer = RecordingIndexer()
        yield harness


@pytest.fixture
async def alice(h: Harness) -> tuple[str, dict[str, str]]:
    user_id, key = await h.user_with_key("alice")
    return user_id, h.auth(key)


@pytest.fixture
def indexer(h: Harness) -> RecordingIndexer:
    recording = h.runtime.ingest.indexer
    assert isinstance(recording, RecordingIndexer)
    return recording


async def test_ingestion_uses_the_context_stores_indexer(make_harness: Callable[..., Any]) -> None:
    async with make_harness() as harness:
        assert harness.runtime.ingest.indexer is harness.runtime.context.indexer


def upload(*files: tuple[str, bytes]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (name, data, "application/octet-stream")) for name, data in files]


async def ingest_ok(h: Harness, who: dict[str, str], *files: tuple[str, bytes], **form: str) -> list[dict[str, Any]]:
    data = assert_ok(await h.client.post(INGEST, files=upload(*files), data=form or None, headers=who))
    results: list[dict[str, Any]] = data["files"]
    return results


async def stored(h: Harness, owner_id: str, source: str) -> tuple[Context, list[Context], list[ContextRelationship]]:
    """The document for this source, its chunks in order, and their part_of edges."""
    async with h.runtime.database.session() as session:
        contexts = list(
            await session.scalars(select(Context).where(Context.owner_id == owner_id, Context.source == source))
        )
        edges = list(
            await session.scalars(
                select(ContextRelationship).where(ContextRelationship.source_id.in_([c.id for c in contexts]))
            )
        )
    part_ids = {e.source_id for e in edges}
    documents = [c for c in contexts if c.id not in part_ids]
    assert len(documents) == 1, documents
    chunks = sorted((c for c in contexts if c.id in part_ids), key=lambda c: c.meta["index"])
    return documents[0], chunks, edges


async def count_contexts(h: Harness) -> int:
    async with h.runtime.database.session() as session:
        return (await session.execute(select(func.count()).select_from(Context))).scalar_one()


# --- creating --------------------------------------------------------------------------------


async def test_ingest_creates_documents_and_chunks_linked_part_of(
    h: Harness, alice: tuple[str, dict[str, str]], indexer: RecordingIndexer
) -> None:
    user_id, who = alice
    results = await ingest_ok(h, who, ("docs/guide.md", GUIDE), ("src/app.py", APP))
    assert [(r["source"], r["status"], r["chunks"]) for r in results] == [
        ("docs/guide.md", "created", 3),
        ("src/app.py", "created", 3),
    ]

    document, chunks, edges = await stored(h, user_id, "docs/guide.md")
    assert document.id == results[0]["document_id"]
    assert document.type == "document"
    assert document.content == GUIDE.decode()
    assert document.version == 1
    assert document.content_hash == hashlib.sha256(GUIDE).hexdigest()
    assert document.meta == {
        "filename": "guide.md",
        "kind": "markdown",
        "language": None,
        "size": len(GUIDE),
        "sha256": hashlib.sha256(GUIDE).hexdigest(),
        "chunks": 3,
        "chunk_max_chars": 2000,
    }
    assert [c.type for c in chunks] == ["chunk"] * 3
    assert "".join(c.content for c in chunks) == document.content
    assert [c.meta for c in chunks] == [
        {"index": 0, "start_line": 1, "end_line": 3, "heading_path": ["Guide"]},
        {"index": 1, "start_line": 5, "end_line": 7, "heading_path": ["Guide", "Install"]},
        {"index": 2, "start_line": 9, "end_line": 11, "heading_path": ["Guide", "Use"]},
    ]
    assert all(c.source == "docs/guide.md" for c in chunks)
    assert sorted((e.source_id, e.target_id, e.relationship_type, e.strength, e.owner_id) for e in edges) == sorted(
        (c.id, document.id, "part_of", 1.0, user_id) for c in chunks
    )

    code, code_chunks, _ = await stored(h, user_id, "src/app.py")
    assert code.meta["kind"] == "code"
    assert code.meta["language"] == "python"
    assert [c.meta.get("definition") for c in code_chunks] == [None, "main", "Server"]
    assert code_chunks[1].content.startswith("@decorator\ndef main()")

    # Embedding is scheduled after the commit, off the request path: new chunks, then the document.
    assert indexer.scheduled == [
        (user_id, [*(c.id for c in chunks), document.id]),
        (user_id, [*(c.id for c in code_chunks), code.id]),
    ]
    assert indexer.indexed == []
    assert indexer.forgotten == []

    # The core API sees them like any other context.
    got = assert_ok(await h.client.get(f"/api/context/{document.id}", headers=who))
    assert got["content"] == GUIDE.decode()
    assert got["source"] == "docs/guide.md"


async def test_type_override_applies_to_document_and_chunks(h: Harness, alice: tuple[str, dict[str, str]]) -> None:
    user_id, who = alice
    [result] = await ingest_ok(h, who, ("spec.md", GUIDE), type="spec")
    document, chunks, _ = await stored(h, user_id, "spec.md")
    assert document.type == "spec"
    assert {c.type for c in chunks} == {"spec"}
    # The same bytes under another type are a change.
    [again] = await ingest_ok(h, who, ("spec.md", GUIDE))
    assert again["status"] == "replaced"
    assert again["document_id"] == result["document_id"]
    document, chunks, _ = await stored(h, user_id, "spec.md")
    assert document.type == "document"
    assert {c.type for c in chunks} == {"chunk"}


# --- idempotency and replacement -------------------------------------------------------------


async def test_reingesting_the_same_file_changes_nothing(
    h: Harness, alice: tuple[str, dict[str, str]], indexer: RecordingIndexer
) -> None:
    user_id, who = alice
    [first] = await ingest_ok(h, who, ("guide.md", GUIDE))
    before = await stored(h, user_id, "guide.md")
    h.clock.advance(60)
    [second] = await ingest_ok(h, who, ("guide.md", GUIDE))
    assert second == {**first, "status": "unchanged"}
    after = await stored(h, user_id, "guide.md")
    assert [c.id for c in after[1]] == [c.id for c in before[1]]
    assert after[0].version == 1
    assert after[0].updated_at == before[0].updated_at
    assert await count_contexts(h) == 4
    assert len(indexer.scheduled) == 1  # nothing new to embed


async def test_a_changed_file_replaces_its_document_and_all_its_chunks(
    h: Harness, alice: tuple[str, dict[str, str]], indexer: RecordingIndexer
) -> None:
    user_id, who = alice
    [first] = await ingest_ok(h, who, ("guide.md", GUIDE))
    old_document, old_chunks, old_edges = await stored(h, user_id, "guide.md")
    h.clock.advance(60)
    [second] = await ingest_ok(h, who, ("guide.md", GUIDE_V2))
    assert second == {"source": "guide.md", "document_id": first["document_id"], "chunks": 4, "status": "replaced"}

    document, chunks, edges = await stored(h, user_id, "guide.md")
    assert document.id == old_document.id
    assert document.content == GUIDE_V2.decode()
    assert document.version == 2
    assert document.meta["sha256"] == hashlib.sha256(GUIDE_V2).hexdigest()
    assert document.updated_at > old_document.updated_at
    assert document.created_at == old_document.created_at
    assert [c.meta["heading_path"] for c in chunks] == [
        ["Guide"],
        ["Guide", "Install"],
        ["Guide", "Configure"],
        ["Guide", "Use"],
    ]
    assert not {c.id for c in chunks} & {c.id for c in old_chunks}  # every old chunk went
    assert not {e.id for e in edges} & {e.id for e in old_edges}
    assert await count_contexts(h) == 5
    async with h.runtime.database.session() as session:
        gone = await session.scalars(select(Context.id).where(Context.id.in_([c.id for c in old_chunks])))
        assert list(gone) == []
    assert indexer.forgotten == [(user_id, sorted(c.id for c in old_chunks))]
    assert indexer.scheduled[-1] == (user_id, [*(c.id for c in chunks), document.id])


async def test_a_failure_halfway_leaves_the_old_state_intact(h: Harness, alice: tuple[str, dict[str, str]]) -> None:
    """A real failure: the last insert of the request collides with an existing primary key."""
    user_id, who = alice
    await ingest_ok(h, who, ("guide.md", GUIDE))
    await ingest_ok(h, who, ("other.md", b"# Other\n\nbody\n"))
    _, _, other_edges = await stored(h, user_id, "other.md")
    before = await stored(h, user_id, "guide.md")
    total = await count_contexts(h)

    rel_calls = 0

    def colliding_ids(prefix: str) -> str:
        # new.md makes 1 edge; guide.md's edges come next: the second of them reuses an existing id.
        nonlocal rel_calls
        if prefix == "rel":
            rel_calls += 1
            if rel_calls == 3:
                return other_edges[0].id
        return new_id(prefix)

    runtime = h.runtime
    service = IngestService(runtime.database, runtime.clock, RecordingIndexer(), new_id=colliding_ids)
    actor = await runtime.auth.authenticate_api_key(who["Authorization"].removeprefix("Bearer "))
    with pytest.raises(IntegrityError):
        await service.ingest(actor, [("new.md", b"# New\n\ntext\n"), ("guide.md", GUIDE_V2)])
    # 1 edge for new.md, 4 for guide.md: the failing statement was the request's last insert, after
    # new.md's rows, guide.md's update, the deletion of its old chunks and the insertion of the new.
    assert rel_calls == 5

    after = await stored(h, user_id, "guide.md")
    assert after[0].content == GUIDE.decode()
    assert after[0].version == 1
    assert after[0].meta == before[0].meta
    assert [(c.id, c.content) for c in after[1]] == [(c.id, c.content) for c in before[1]]
    assert sorted(e.id for e in after[2]) == sorted(e.id for e in before[2])
    assert await count_contexts(h) == total  # and new.md was not written either

    # The same request without the fault goes through.
    ok_service = IngestService(runtime.database, runtime.clock, RecordingIndexer())
    results = await ok_service.ingest(actor, [("new.md", b"# New\n\ntext\n"), ("guide.md", GUIDE_V2)])
    assert [r.status for r in results] == [IngestStatus.CREATED, IngestStatus.REPLACED]


async def test_concurrent_ingests_of_one_file_make_one_document(h: Harness, alice: tuple[str, dict[str, str]]) -> None:
    user_id, who = alice
    responses = await asyncio.gather(
        *(h.client.post(INGEST, files=upload(("guide.md", GUIDE)), headers=who) for _ in range(6))
    )
    results = [assert_ok(r)["files"][0] for r in responses]
    assert sorted(r["status"] for r in results) == ["created"] + ["unchanged"] * 5
    assert len({r["document_id"] for r in results}) == 1
    _, chunks, _ = await stored(h, user_id, "guide.md")  # exactly one document
    assert len(chunks) == 3


# --- validation ------------------------------------------------------------------------------


async def test_unsupported_type_is_415_naming_the_file(h: Harness, alice: tuple[str, dict[str, str]]) -> None:
    _, who = alice
    response = await h.client.post(INGEST, files=upload(("ok.md", GUIDE), ("photo.png", b"\x89PNG")), headers=who)
    error = assert_error(response, 415, "unsupported_media_type_error")
    assert "photo.png" in error["message"]
    assert error["details"]["file"] == "photo.png"
    assert ".md" in error["details"]["supported"]
    assert await count_contexts(h) == 0  # validated before anything was written


@pytest.mark.parametrize(
    ("name", "data", "problem"),
    [
        ("latin1.txt", "café\n".encode("latin-1"), "not valid UTF-8"),
        ("binary.txt", b"abc\x00def\n", "NUL"),
        ("blank.md", b"  \n\n", "empty"),
    ],
)
async def test_bad_text_is_400_naming_the_file(
    h: Harness, alice: tuple[str, dict[str, str]], name: str, data: bytes, problem: str
) -> None:
    _, who = alice
    response = await h.client.post(INGEST, files=upload(("ok.md", GUIDE), (name, data)), headers=who)
    error = assert_error(response, 400, "validation_error")
    assert name in error["message"]
    assert problem in error["message"]
    assert error["details"]["file"] == name
    [entry] = error["details"]["fields"]
    assert entry == {"field": "files", "message": error["message"], "location": "body", "type": "value_error"}
    assert await count_contexts(h) == 0


async def test_a_file_over_the_limit_is_413_naming_it(h: Harness, alice: tuple[str, dict[str, str]]) -> None:
    _, who = alice
    big = b"word " * 220_000  # 1.1 MB: over the 1 MiB per-file default
    response = await h.client.post(INGEST, files=upload(("ok.md", GUIDE), ("big.txt", big)), headers=who)
    error = assert_error(response, 413, "payload_too_large_error")
    assert "big.txt" in error["message"]
    assert error["details"] == {"file": "big.txt", "size_bytes": len(big), "max_bytes": 1_048_576}
    assert await count_contexts(h) == 0


async def test_the_upload_route_has_its_own_body_limit(h: Harness, alice: tuple[str, dict[str, str]]) -> None:
    _, who = alice
    # Two files of 0.8 MB: 1.6 MB, over the global 1 MiB body limit, under the ingest route's.
    part = (b"line of text\n" * 62_000)[:800_000]
    results = await ingest_ok(h, who, ("a.txt", part), ("b.txt", part))
    assert [r["status"] for r in results] == ["created", "created"]
    # Every other route keeps the global limit.
    response = await h.client.post("/api/context", json={"type": "note", "content": "x" * 1_100_000}, headers=who)
    assert_error(response, 413, "payload_too_large_error")


async def test_a_request_over_the_ingest_limit_is_413(make_harness: Callable[..., Any]) -> None:
    async with make_harness(context={"ingest_max_request_bytes": 10_000}) as h:
        _, key = await h.user_with_key("alice")
        response = await h.client.post(INGEST, files=upload(("a.txt", b"x" * 20_000)), headers=h.auth(key))
        error = assert_error(response, 413, "payload_too_large_error")
        assert "10000" in error["message"]


async def test_malformed_requests(h: Harness, alice: tuple[str, dict[str, str]]) -> None:
    _, who = alice
    response = await h.client.post(INGEST, json={"files": ["guide.md"]}, headers=who)
    assert_error(response, 415, "unsupported_media_type_error")

    response = await h.client.post(INGEST, data={"type": "note"}, files={"other": ("x.md", b"# x\n")}, headers=who)
    assert field_names(assert_error(response, 400, "validation_error")) == {"other"}

    response = await h.client.post(INGEST, files={"type": ("x.md", b"# x\n")}, headers=who)
    assert field_names(assert_error(response, 400, "validation_error")) == {"type"}

    response = await h.client.post(INGEST, files=upload(("a.md", GUIDE)), data={"type": "bad type!"}, headers=who)
    assert field_names(assert_error(response, 400, "validation_error")) == {"type"}

    response = await h.client.post(INGEST, files=upload(("a.md", GUIDE), ("a.md", GUIDE)), headers=who)
    error = assert_error(response, 400, "validation_error")
    assert "a.md" in error["message"]
    assert error["details"]["file"] == "a.md"
    assert [(f["field"], f["type"]) for f in error["details"]["fields"]] == [("files", "duplicate")]

    response = await h.client.post(INGEST, files=upload(("", GUIDE)), headers=who)  # no file name
    assert field_names(assert_error(response, 400, "validation_error")) == {"files"}

    # A multipart body with no file at all.
    response = await h.client.post(
        INGEST,
        content=b"--b--\r\n",
        headers={**who, "content-type": "multipart/form-data; boundary=b"},
    )
    assert field_names(assert_error(response, 400, "validation_error")) == {"files"}
    assert await count_contexts(h) == 0


async def test_ingest_needs_a_writer(h: Harness) -> None:
    response = await h.client.post(INGEST, files=upload(("a.md", GUIDE)))
    assert_error(response, 401, "authentication_error")
    user_id = await h.create_user("reader")
    _, key = await h.create_key(user_id, scopes=["read"])
    response = await h.client.post(INGEST, files=upload(("a.md", GUIDE)), headers=h.auth(key))
    assert_error(response, 403, "authorization_error")


# --- users -----------------------------------------------------------------------------------


async def test_the_same_source_for_two_users_names_two_documents(h: Harness, alice: tuple[str, dict[str, str]]) -> None:
    alice_id, alice_headers = alice
    bob_id, bob_key = await h.user_with_key("bob")
    bob_headers = h.auth(bob_key)

    [for_alice] = await ingest_ok(h, alice_headers, ("guide.md", GUIDE))
    [for_bob] = await ingest_ok(h, bob_headers, ("guide.md", GUIDE))
    assert for_bob["status"] == "created"
    assert for_bob["document_id"] != for_alice["document_id"]

    [bob_again] = await ingest_ok(h, bob_headers, ("guide.md", GUIDE_V2))
    assert bob_again["status"] == "replaced"
    [alice_again] = await ingest_ok(h, alice_headers, ("guide.md", GUIDE))
    assert alice_again == {**for_alice, "status": "unchanged"}

    alice_doc, alice_chunks, _ = await stored(h, alice_id, "guide.md")
    bob_doc, bob_chunks, _ = await stored(h, bob_id, "guide.md")
    assert alice_doc.content == GUIDE.decode()
    assert bob_doc.content == GUIDE_V2.decode()
    assert {c.owner_id for c in alice_chunks} == {alice_id}
    assert {c.owner_id for c in bob_chunks} == {bob_id}
    # And neither sees the other's.
    response = await h.client.get(f"/api/context/{alice_doc.id}", headers=bob_headers)
    assert_error(response, 404, "not_found_error")


# --- the command line (embedded database) ----------------------------------------------------


def _cli(*args: str) -> Any:
    return CliRunner().invoke(cli_app, ["context", "ingest", *args], catch_exceptions=False)


def test_cli_ingests_a_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data_dir = tmp_path / "data"
    monkeypatch.setenv("TRELLIS_DATA_DIR", str(data_dir))
    project = tmp_path / "project"
    (project / "docs").mkdir(parents=True)
    (project / "src" / "pkg").mkdir(parents=True)
    (project / ".hidden").mkdir()
    (project / "node_modules" / "dep").mkdir(parents=True)
    (project / ".venv").mkdir()
    (project / "docs" / "guide.md").write_bytes(GUIDE)
    (project / "src" / "pkg" / "app.py").write_bytes(APP)
    (project / "src" / "pkg" / "__init__.py").write_bytes(b"")
    (project / "notes.txt").write_text("Just a note.\n")
    (project / "logo.png").write_bytes(b"\x89PNG")
    (project / ".env").write_text("SECRET=1\n")
    (project / ".hidden" / "secret.md").write_text("# secret\n")
    (project / "node_modules" / "dep" / "index.js").write_text("function x() {}\n")
    (project / ".venv" / "lib.py").write_text("def f():\n    pass\n")
    monkeypatch.chdir(tmp_path)

    result = _cli("project", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert [(f["source"], f["status"]) for f in out["files"]] == [
        ("project/notes.txt", "created"),
        ("project/docs/guide.md", "created"),
        ("project/src/pkg/app.py", "created"),
    ]
    assert [f["chunks"] for f in out["files"]] == [1, 3, 3]
    assert sorted((Path(s["path"]).name, s["reason"]) for s in out["skipped"]) == [
        ("__init__.py", "empty"),
        ("logo.png", "unsupported file type"),
    ]
    assert out["failed"] == []
    assert out["summary"] == {"created": 3, "unchanged": 0, "replaced": 0, "skipped": 2, "failed": 0}

    # Again: nothing changes. Then one file changes, and an unreadable one fails without stopping the rest.
    result = _cli("project", "--json")
    assert json.loads(result.stdout)["summary"]["unchanged"] == 3
    (project / "docs" / "guide.md").write_bytes(GUIDE_V2)
    (project / "latin1.txt").write_bytes("café\n".encode("latin-1"))
    result = _cli("project", "--json")
    assert result.exit_code == 1
    out = json.loads(result.stdout)
    assert out["summary"] == {"created": 0, "unchanged": 2, "replaced": 1, "skipped": 2, "failed": 1}
    assert [f["source"] for f in out["files"] if f["status"] == "replaced"] == ["project/docs/guide.md"]
    assert out["failed"] == [{"path": "project/latin1.txt", "reason": "not valid UTF-8 (at byte 3)"}]

    # The readable form: notes, then the summary table.
    (project / "latin1.txt").unlink()
    result = _cli("project/docs", "project/notes.txt", "--type", "manual")
    assert result.exit_code == 0, result.output
    assert "created" in result.stdout
    assert "Ingested" in result.stdout
    assert " 2 " in result.stdout  # two documents re-typed: replaced

    # What was written is there, as the saved admin key's owner.
    from trellis.runtime import build_runtime
    from trellis.settings import load_settings

    async def check() -> list[tuple[str | None, str]]:
        runtime = build_runtime(load_settings())
        try:
            async with runtime.database.session() as session:
                rows = await session.scalars(select(Context))
                return sorted((c.source, c.type) for c in rows if "sha256" in c.meta)
        finally:
            await runtime.close()

    assert asyncio.run(check()) == [
        ("project/docs/guide.md", "manual"),
        ("project/notes.txt", "manual"),
        ("project/src/pkg/app.py", "document"),
    ]


def test_cli_reports_a_missing_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRELLIS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.md").write_text("# A\n")
    result = _cli("missing-dir", "a.md", "--json")
    assert result.exit_code == 1, result.output
    out = json.loads(result.stdout)
    assert out["failed"] == [{"path": "missing-dir", "reason": "not found"}]
    assert [(f["source"], f["status"]) for f in out["files"]] == [("a.md", "created")]


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("../../etc/passwd.txt", "etc/passwd.txt"),
        ("C:\\x\\..\\a.md", "a.md"),
        ("/abs/notes.md", "abs/notes.md"),
        ("docs/./guide/../intro.md", "docs/intro.md"),
        ("a\\b\\c.md", "a/b/c.md"),
        ("plain.md", "plain.md"),
    ],
)
def test_one_rule_for_source_names(given: str, stored: str) -> None:
    assert source_name(given) == stored


async def test_the_rule_applies_on_the_rest_door(harness: Harness) -> None:
    files = [("files", ("../../etc/passwd.txt", b"root:x:0:0\n", "text/plain"))]
    response = await harness.client.post("/api/context/ingest", files=files, headers=ADMIN)
    [result] = assert_ok(response)["files"]
    assert result["source"] == "etc/passwd.txt"
    # Two names for one file are one file.
    twice = [
        ("files", ("notes/../a.md", b"# A\n", "text/markdown")),
        ("files", ("a.md", b"# A\n", "text/markdown")),
    ]
    error = assert_error(
        await harness.client.post("/api/context/ingest", files=twice, headers=ADMIN), 400, "validation_error"
    )
    assert "more than once" in error["message"]


def test_cli_stops_on_a_bad_type_instead_of_failing_each_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A 400 about the request (--type) stops the run; a 400 about one file (details.file) only fails that file.
    monkeypatch.setenv("TRELLIS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.md").write_text("# A\n")
    (tmp_path / "b.md").write_text("# B\n")
    result = _cli("a.md", "b.md", "--type", "bad type!", "--json")
    assert result.exit_code == 1, result.output
    assert result.stdout == ""  # no report: nothing was attempted file by file
    assert "Invalid request parameters: type" in result.stderr
