"""execute remembers what a workflow name resolved to, and checks it in the transaction that writes
the run: a new version, a delete or a new input schema made by another process (here: written
straight to the database, as another replica's PUT or DELETE would) is seen by the next run."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event as sa_event
from sqlalchemy import update

from tests.conftest import Harness
from tests.workflows.support import ADMIN, execute, save
from trellis.workflows import repository as repo
from trellis.workflows.models import Workflow, WorkflowVersion


def _says(word: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    definition: dict[str, Any] = {"steps": [{"id": "say", "type": "transform", "with": {"value": word}}]}
    if schema is not None:
        definition["input_schema"] = schema
    return definition


async def _new_version_elsewhere(h: Harness, workflow_id: str, definition: dict[str, Any]) -> None:
    """What another process's PUT writes: the next version and the bumped latest version."""
    now = h.clock.now()
    async with h.runtime.database.transaction() as session:
        latest = (await repo.live_latest_versions(session, [workflow_id]))[workflow_id]
        assert await repo.bump_version(session, workflow_id, latest, now)
        session.add(WorkflowVersion(workflow_id=workflow_id, version=latest + 1, definition=definition, created_at=now))


async def _workflow_id(h: Harness, name: str) -> str:
    async with h.runtime.database.reader() as session:
        row = await repo.live_workflow(session, h.admin.user_id, name)
    assert row is not None
    return row.id


def _workflow_reads(h: Harness) -> list[str]:
    """The statements that look a workflow's version up by name (what execute used to run each time)."""
    seen: list[str] = []

    @sa_event.listens_for(h.runtime.database.engine.sync_engine, "before_cursor_execute")
    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if "JOIN workflow_versions" in statement:
            seen.append(statement)

    return seen


async def test_a_name_is_looked_up_once_then_checked_with_the_write(h: Harness) -> None:
    saved = await save(h, "remembered", _says("one"))
    reads = _workflow_reads(h)
    assert (await execute(h, "remembered"))["result"] == "one"
    assert (await execute(h, "remembered"))["result"] == "one"
    assert len(reads) == 1
    # A save in this process forgets the name at once.
    await save(h, "remembered", _says("two"))
    run = await execute(h, "remembered")
    assert (run["result"], run["version"]) == ("two", saved["version"] + 1)


async def test_a_version_saved_by_another_process_is_used_by_the_next_run(h: Harness) -> None:
    await save(h, "elsewhere", _says("v1"))
    first = await execute(h, "elsewhere")
    assert (first["result"], first["version"]) == ("v1", 1)
    await _new_version_elsewhere(h, await _workflow_id(h, "elsewhere"), _says("v2"))
    second = await execute(h, "elsewhere")
    assert (second["status"], second["result"], second["version"]) == ("succeeded", "v2", 2)
    # An explicit older version still runs, from memory or not.
    assert (await execute(h, "elsewhere", version=1))["result"] == "v1"


async def test_a_workflow_deleted_by_another_process_is_not_found(h: Harness) -> None:
    await save(h, "gone", _says("here"))
    await execute(h, "gone")
    workflow_id = await _workflow_id(h, "gone")
    async with h.runtime.database.transaction() as session:
        await session.execute(update(Workflow).where(Workflow.id == workflow_id).values(deleted_at=h.clock.now()))
    for version in (None, 1):
        body = {"workflow": "gone", "input": {}, "wait": 5, **({"version": version} if version else {})}
        response = await h.client.post("/api/v1/workflow/execute", json=body, headers=ADMIN)
        assert response.status_code == 404, response.text
        assert response.json()["error"]["details"] == {"workflow": "gone"}


async def test_an_input_schema_changed_by_another_process_decides(h: Harness) -> None:
    await save(h, "typed", _says("int", {"type": "object", "properties": {"n": {"type": "integer"}}}))
    assert (await execute(h, "typed", {"n": 1}))["result"] == "int"
    await _new_version_elsewhere(
        h, await _workflow_id(h, "typed"), _says("str", {"type": "object", "properties": {"n": {"type": "string"}}})
    )
    # The remembered version would refuse this input; the latest accepts it.
    assert (await execute(h, "typed", {"n": "x"}))["result"] == "str"
    refused = await h.client.post(
        "/api/v1/workflow/execute", json={"workflow": "typed", "input": {"n": 2}, "wait": 5}, headers=ADMIN
    )
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["details"]["fields"][0]["field"] == "input.n"
