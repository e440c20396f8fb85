"""A small stand-in for n8n, served over real HTTP on 127.0.0.1 (aiohttp), for tests of the n8n client and
of workflows with ``n8n.trigger`` steps.

It answers the two things Trellis calls, in n8n's own shapes:

* ``POST /webhook/{path}``: records the call, starts an execution and answers ``{"executionId": "<id>"}``
  (what a *Respond to Webhook* node sending ``{{ $execution.id }}`` answers), or the scripted answer.
  A path with no script is 404, as an unregistered n8n webhook is.
* ``GET /api/v1/executions/{id}``: requires ``X-N8N-API-KEY`` (401 otherwise) and replays the
  execution's scripted statuses, one per call, the last one repeated; an unknown id is 404.

::

    async with FakeN8n.running() as n8n:
        n8n.script("slow", statuses=["waiting", "waiting", "success"], result={"greeting": "hi"})
        n8n.script("broken", statuses=["running", "error"], error="Division by zero")
        n8n.script("plain", webhook_response={"ok": True})       # answers without an execution id
        n8n.script("flaky", webhook_http_status=503)             # the webhook fails
        n8n.script("blip", poll_http_statuses=[502], statuses=["success"])  # one poll fails first
        ... N8nClient(...).trigger(n8n.base_url, "slow", {...}, idempotency_key="k") ...
        n8n.calls                   # every request, in order
        n8n.webhook_calls("slow")   # the webhook calls of one path
        n8n.executions["1001"]      # what an execution was started with, how often it was polled
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

API_KEY = "n8n_api_fake-0123456789abcdef"
STARTED_AT = "2026-12-03T10:00:00.000Z"
STOPPED_AT = "2026-12-03T10:00:02.500Z"
ENDED = {"success", "error", "crashed", "canceled"}


@dataclass(frozen=True)
class Call:
    """One request the fake received."""

    method: str
    path: str  # decoded
    raw_path: str  # as sent (percent-encoding kept)
    query: dict[str, str]
    headers: dict[str, str]  # names lower-cased
    body: Any  # parsed JSON, else text, else None


@dataclass
class Script:
    """What a webhook path does when called."""

    statuses: list[str] = field(default_factory=lambda: ["success"])
    result: Any = None  # a dict (one item) or a list of dicts (items) for the last node's output
    error: str | None = None  # data.resultData.error.message of a failed execution
    webhook_response: Any = None  # answer this instead of {"executionId": ...}
    webhook_http_status: int = 200
    poll_http_statuses: list[int] = field(default_factory=list)  # answered before the statuses, one per poll
    workflow_id: str = "wf-fake-0001"


@dataclass
class Execution:
    """An execution the fake started."""

    id: str
    path: str
    script: Script
    payload: Any
    headers: dict[str, str]
    polls: int = 0


class FakeN8n:
    def __init__(self, api_key: str = API_KEY) -> None:
        self.api_key = api_key
        self.base_url = ""
        self.calls: list[Call] = []
        self.executions: dict[str, Execution] = {}
        self._scripts: dict[str, Script] = {}
        self._ids = itertools.count(1001)

    @classmethod
    @asynccontextmanager
    async def running(cls, api_key: str = API_KEY) -> AsyncIterator[FakeN8n]:
        """Serve a fresh fake on a free port of 127.0.0.1 until the block ends."""
        fake = cls(api_key)
        app = web.Application()
        app.router.add_route("*", "/webhook/{path:.+}", fake._webhook)
        app.router.add_get("/api/v1/executions/{id}", fake._execution)
        app.router.add_route("*", "/{tail:.*}", fake._elsewhere)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        fake.base_url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        try:
            yield fake
        finally:
            await runner.cleanup()

    def script(
        self,
        path: str,
        *,
        statuses: list[str] | None = None,
        result: Any = None,
        error: str | None = None,
        webhook_response: Any = None,
        webhook_http_status: int = 200,
        poll_http_statuses: list[int] | None = None,
    ) -> Script:
        """What ``POST /webhook/{path}`` does from now on (each call starts a new execution)."""
        if statuses is not None and not statuses:
            raise ValueError("statuses needs at least one status")
        script = Script(
            statuses=list(statuses or ["success"]),
            result=result,
            error=error,
            webhook_response=webhook_response,
            webhook_http_status=webhook_http_status,
            poll_http_statuses=list(poll_http_statuses or []),
        )
        self._scripts[path.strip("/")] = script
        return script

    def webhook_calls(self, path: str) -> list[Call]:
        return [c for c in self.calls if c.path == f"/webhook/{path.strip('/')}"]

    def execution_polls(self, execution_id: str) -> list[Call]:
        return [c for c in self.calls if c.path == f"/api/v1/executions/{execution_id}"]

    # --- the routes ---------------------------------------------------------------------------------

    async def _record(self, request: web.Request) -> Call:
        raw = await request.read()
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode("utf-8", "replace")
        call = Call(
            method=request.method,
            path=request.path,
            raw_path=request.raw_path.split("?", 1)[0],
            query=dict(request.query),
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
        )
        self.calls.append(call)
        return call

    async def _webhook(self, request: web.Request) -> web.Response:
        call = await self._record(request)
        path = request.match_info["path"].strip("/")
        script = self._scripts.get(path)
        if script is None or request.method != "POST":
            return web.json_response(
                {
                    "code": 404,
                    "message": f'The requested webhook "{request.method} {path}" is not registered.',
                    "hint": "The workflow must be active for a production URL to run successfully.",
                },
                status=404,
            )
        if script.webhook_http_status >= 400:
            return web.json_response({"message": "Error in workflow"}, status=script.webhook_http_status)
        execution = Execution(str(next(self._ids)), path, script, call.body, call.headers)
        self.executions[execution.id] = execution
        if script.webhook_response is not None:
            return web.json_response(script.webhook_response, status=script.webhook_http_status)
        return web.json_response({"executionId": execution.id}, status=script.webhook_http_status)

    async def _elsewhere(self, request: web.Request) -> web.Response:
        await self._record(request)
        return web.json_response({"message": "not found"}, status=404)

    async def _execution(self, request: web.Request) -> web.Response:
        await self._record(request)
        key = request.headers.get("X-N8N-API-KEY")
        if key is None:
            return web.json_response({"message": "'X-N8N-API-KEY' header required"}, status=401)
        if key != self.api_key:
            return web.json_response({"message": "unauthorized"}, status=401)
        execution = self.executions.get(request.match_info["id"])
        if execution is None:
            return web.json_response({"message": "Not Found"}, status=404)
        poll = execution.polls
        execution.polls += 1
        script = execution.script
        if poll < len(script.poll_http_statuses):
            status_code = script.poll_http_statuses[poll]
            return web.json_response({"message": f"fake failure {status_code}"}, status=status_code)
        statuses = script.statuses
        status = statuses[min(poll - len(script.poll_http_statuses), len(statuses) - 1)]
        include_data = request.query.get("includeData") == "true"
        return web.json_response(execution_body(execution, status, include_data=include_data))


def execution_body(execution: Execution, status: str, *, include_data: bool) -> dict[str, Any]:
    """An execution as n8n 2.8.4's public API returns it (``GET /api/v1/executions/{id}``), as a real one
    looked (checked December 2026)."""
    ended = status in ENDED
    body: dict[str, Any] = {
        "id": execution.id,
        "finished": status == "success",
        "mode": "webhook",
        "retryOf": None,
        "retrySuccessId": None,
        "status": status,
        "createdAt": STARTED_AT,
        "startedAt": STARTED_AT,
        "stoppedAt": STOPPED_AT if ended else None,
        "deletedAt": None,
        "workflowId": execution.script.workflow_id,
        "waitTill": "2026-12-03T10:00:02.000Z" if status == "waiting" else None,
        "storedAt": "db",
        "customData": {},
    }
    if include_data:  # n8n also sends the workflow itself as "workflowData": left out here
        body["data"] = {
            "version": 1,
            "startData": {},
            "resultData": _result_data(execution, status),
            "executionData": {"contextData": {}, "nodeExecutionStack": [], "metadata": {}},
        }
    return body


def _run(items: list[dict[str, Any]], source: str | None, status: str = "success") -> dict[str, Any]:
    return {
        "startTime": 1796292000000,
        "executionIndex": 0,
        "source": [{"previousNode": source}] if source else [],
        "hints": [],
        "executionTime": 3,
        "executionStatus": status,
        "data": {"main": [[{"json": item, "pairedItem": {"item": i}} for i, item in enumerate(items)]]},
    }


def _result_data(execution: Execution, status: str) -> dict[str, Any]:
    webhook_item = {"headers": execution.headers, "params": {}, "query": {}, "body": execution.payload}
    run_data: dict[str, Any] = {"Webhook": [_run([webhook_item], None)]}
    if status == "waiting":  # put to wait (a Wait node of 65 s or more): saved up to the Wait node
        run_data["Wait"] = [_run([webhook_item], "Webhook", "waiting")]
        return {"runData": run_data, "lastNodeExecuted": "Wait"}
    if status in ("new", "running", "unknown"):  # n8n saves no progress by default: nothing ran yet, as seen
        return {"runData": {}}
    if status == "success":
        result = execution.script.result
        items = result if isinstance(result, list) else [result if result is not None else {}]
        run_data["Result"] = [_run(items, "Webhook")]
        return {"runData": run_data, "lastNodeExecuted": "Result"}
    # error, crashed, canceled
    data: dict[str, Any] = {"runData": run_data, "lastNodeExecuted": "Result"}
    if execution.script.error is not None:
        data["error"] = {
            "message": execution.script.error,
            "name": "NodeOperationError",
            "node": {"name": "Result", "type": "n8n-nodes-base.code", "typeVersion": 2},
            "timestamp": 1796292002500,
        }
    return data
