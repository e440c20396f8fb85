"""Trellis's n8n client against a real n8n, end to end (outside CI: it needs npm and ~2.3 GB).

    make test-n8n                       # or: .venv/bin/python scripts/n8n/e2e.py [--cache-dir DIR]

1. Installs n8n (the version pinned by ``scripts/n8n/package.json``) with ``npm install`` into a cache
   directory (``~/.cache/trellis-n8n``, or ``$TRELLIS_N8N_CACHE``), once: about 5 minutes and 2.3 GB
   the first time, reused afterwards.
2. Starts it on a free port of 127.0.0.1 with a temporary ``N8N_USER_FOLDER`` and telemetry off, and
   waits until it is ready (``/healthz``, ``/healthz/readiness``, then ``/rest/settings``: REST routes
   answer 404 for a moment after readiness).
3. Sets up the owner headlessly (``POST /rest/owner/setup`` gives the ``n8n-auth`` cookie) and makes an
   API key with every scope (``GET /rest/api-keys/scopes``, ``POST /rest/api-keys``).
4. Creates and activates, through the public API, a workflow
   Webhook (POST trellis-e2e) -> Respond to Webhook ({"executionId": "{{ $execution.id }}"}) -> Wait 2 s
   -> Edit Fields ({"greeting": "hello " + name}), and one that fails on purpose (Stop and Error).
5. Triggers both with ``trellis.workflows.n8n.N8nClient`` (through the SSRF guard, 127.0.0.1 allowlisted),
   follows the executions printing each status, checks the result, the failure's message, that a wrong
   API key is refused, and that n8n lists the execution that was followed.
6. Runs the greeting workflow as an ``n8n.trigger`` step of a Trellis workflow: an embedded Trellis in
   this process saves the connection and the workflow through its REST API, executes it with ``wait``,
   and checks the run's result is n8n's and its events show the execution followed.

Exits 0 when every check holds, 1 otherwise (n8n's log tail printed). n8n is stopped either way.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
# This checkout's code, whichever checkout the venv was installed from.
sys.path.insert(0, str(HERE.parents[1] / "src"))

from trellis.kit.outbound import OutboundClient, OutboundPolicy  # noqa: E402
from trellis.workflows.n8n import N8nClient, N8nError, N8nExecution  # noqa: E402

WEBHOOK_PATH = "trellis-e2e"
FAILING_PATH = "trellis-e2e-fails"
FAILURE_MESSAGE = "trellis e2e: failing on purpose"
OWNER = {
    "email": "owner@trellis.invalid",
    "firstName": "Trellis",
    "lastName": "E2E",
    "password": "Trellis-e2e-Passw0rd",  # 8-64 characters, a digit and an uppercase letter
}
READY_TIMEOUT_SECONDS = 240.0


class Failed(Exception):
    """A check that did not hold."""


def say(message: str) -> None:
    print(message, flush=True)


# --- 1. install -----------------------------------------------------------------------------------


def install(cache_dir: Path) -> Path:
    """n8n installed under ``cache_dir`` from this folder's package.json; the path of its binary."""
    manifest = (HERE / "package.json").read_bytes()
    stamp = cache_dir / f".installed-{hashlib.sha256(manifest).hexdigest()[:16]}"
    binary = cache_dir / "node_modules" / ".bin" / "n8n"
    if stamp.exists() and binary.exists():
        say(f"==> n8n already installed in {cache_dir}")
        return binary
    npm = shutil.which("npm")
    node = shutil.which("node")
    if npm is None or node is None:
        raise Failed("npm and node are needed (Node.js 20.19 or newer)")
    node_version_run = subprocess.run([node, "--version"], capture_output=True, text=True, check=True)  # noqa: S603
    node_version = node_version_run.stdout.strip()
    cache_dir.mkdir(parents=True, exist_ok=True)
    (cache_dir / "package.json").write_bytes(manifest)
    say(f"==> Installing n8n with npm (node {node_version}) into {cache_dir}")
    say("    The first install takes about 5 minutes and 2.3 GB (sqlite3 compiles); later runs reuse it.")
    log_path = cache_dir / "npm-install.log"
    started = time.monotonic()
    with log_path.open("wb") as log:
        process = subprocess.Popen(  # noqa: S603
            [npm, "install", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=cache_dir,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        while True:
            try:
                code = process.wait(timeout=30)
                break
            except subprocess.TimeoutExpired:
                elapsed = int(time.monotonic() - started)
                say(f"    ... still installing ({elapsed // 60} min {elapsed % 60:02d} s, {_size(cache_dir)} so far)")
    if code != 0:
        say(log_path.read_text(errors="replace")[-4000:])
        raise Failed(f"npm install failed (exit {code}); the log is {log_path}")
    if not binary.exists():
        raise Failed(f"npm install finished but {binary} is missing")
    for old in cache_dir.glob(".installed-*"):
        old.unlink()
    stamp.touch()
    say(f"==> n8n installed in {int(time.monotonic() - started)} s ({_size(cache_dir)})")
    return binary


def _size(path: Path) -> str:
    result = subprocess.run(["du", "-sh", str(path)], capture_output=True, text=True, check=False)  # noqa: S603, S607
    return result.stdout.split("\t", 1)[0] or "?"


# --- 2. run ---------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def running_n8n(binary: Path, keep: bool) -> Iterator[tuple[str, subprocess.Popen[bytes], Path]]:
    """n8n started in its own process group with a temporary user folder; stopped (SIGTERM, then
    SIGKILL) when the block ends."""
    port = free_port()
    folder = Path(tempfile.mkdtemp(prefix="trellis-n8n-"))
    base_url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "N8N_USER_FOLDER": str(folder),
        "N8N_PORT": str(port),
        "N8N_LISTEN_ADDRESS": "127.0.0.1",
        "N8N_HOST": "127.0.0.1",
        "N8N_PROTOCOL": "http",
        "WEBHOOK_URL": f"{base_url}/",
        "N8N_DIAGNOSTICS_ENABLED": "false",
        "N8N_VERSION_NOTIFICATIONS_ENABLED": "false",
        "N8N_TEMPLATES_ENABLED": "false",
        "N8N_PERSONALIZATION_ENABLED": "false",
        "N8N_SECURE_COOKIE": "false",
        "N8N_ENFORCE_SETTINGS_FILE_PERMISSIONS": "true",
        "N8N_LOG_OUTPUT": "console",
    }
    log_path = folder / "n8n.log"
    say(f"==> Starting n8n on {base_url} (user folder {folder})")
    with log_path.open("wb") as log:
        process = subprocess.Popen(  # noqa: S603
            [str(binary), "start"], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield base_url, process, log_path
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        say(f"==> n8n stopped (exit {process.returncode})")
        if keep:
            say(f"    kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


async def wait_ready(http: httpx.AsyncClient, process: subprocess.Popen[bytes]) -> None:
    started = time.monotonic()
    for path in ("/healthz", "/healthz/readiness", "/rest/settings"):
        while True:
            if process.poll() is not None:
                raise Failed(f"n8n exited (code {process.returncode}) before it was ready")
            if time.monotonic() - started > READY_TIMEOUT_SECONDS:
                raise Failed(f"n8n not ready after {READY_TIMEOUT_SECONDS:.0f} s (waiting for {path})")
            try:
                if (await http.get(path)).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.5)
        say(f"    {path} answers 200 after {time.monotonic() - started:.1f} s")


# --- 3. owner and API key -------------------------------------------------------------------------


def _data(response: httpx.Response, what: str) -> Any:
    if response.status_code >= 400:
        raise Failed(f"{what}: HTTP {response.status_code}: {response.text[:500]}")
    body = response.json()
    return body["data"] if isinstance(body, dict) and "data" in body else body


async def api_key(http: httpx.AsyncClient) -> str:
    response = await http.post("/rest/owner/setup", json=OWNER)
    _data(response, "POST /rest/owner/setup")
    cookie = response.cookies.get("n8n-auth")
    if not cookie:
        raise Failed(
            f"POST /rest/owner/setup set no n8n-auth cookie (Set-Cookie: {response.headers.get_list('set-cookie')})"
        )
    say("    owner set up; n8n-auth cookie received")
    auth = {"Cookie": f"n8n-auth={cookie}"}
    scopes = _data(await http.get("/rest/api-keys/scopes", headers=auth), "GET /rest/api-keys/scopes")
    if not isinstance(scopes, list) or not scopes:
        raise Failed(f"GET /rest/api-keys/scopes gave no scopes: {scopes!r}")
    created = _data(
        await http.post(
            "/rest/api-keys", headers=auth, json={"label": "trellis-e2e", "scopes": scopes, "expiresAt": None}
        ),
        "POST /rest/api-keys",
    )
    raw = created.get("rawApiKey") if isinstance(created, dict) else None
    if not isinstance(raw, str) or not raw:
        shape = sorted(created) if isinstance(created, dict) else created
        raise Failed(f"POST /rest/api-keys returned no rawApiKey (got {shape!r})")
    say(f"    API key created with {len(scopes)} scopes")
    return raw


# --- 4. workflows ---------------------------------------------------------------------------------


def _node(
    name: str, type_: str, version: float, position: int, parameters: dict[str, Any], **extra: Any
) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "name": name,
        "type": type_,
        "typeVersion": version,
        "position": [position * 220, 300],
        "parameters": parameters,
        **extra,
    }


def _chain(*names: str) -> dict[str, Any]:
    return {a: {"main": [[{"node": b, "type": "main", "index": 0}]]} for a, b in itertools.pairwise(names)}


def webhook_node(path: str) -> dict[str, Any]:
    return _node(
        "Webhook",
        "n8n-nodes-base.webhook",
        2.1,
        0,
        {"httpMethod": "POST", "path": path, "responseMode": "responseNode", "options": {}},
        webhookId=str(uuid.uuid4()),
    )


def respond_node() -> dict[str, Any]:
    return _node(
        "Respond with the execution id",
        "n8n-nodes-base.respondToWebhook",
        1.5,
        1,
        {"respondWith": "json", "responseBody": '={ "executionId": "{{ $execution.id }}" }', "options": {}},
    )


def greeting_workflow() -> dict[str, Any]:
    nodes = [
        webhook_node(WEBHOOK_PATH),
        respond_node(),
        _node("Wait", "n8n-nodes-base.wait", 1.1, 2, {"resume": "timeInterval", "amount": 2, "unit": "seconds"}),
        _node(
            "Greeting",
            "n8n-nodes-base.set",
            3.4,
            3,
            {
                "mode": "manual",
                "assignments": {
                    "assignments": [
                        {
                            "id": str(uuid.uuid4()),
                            "name": "greeting",
                            "value": "={{ 'hello ' + $('Webhook').first().json.body.name }}",
                            "type": "string",
                        }
                    ]
                },
                "includeOtherFields": False,
                "options": {},
            },
        ),
    ]
    return {
        "name": "Trellis e2e: greeting",
        "nodes": nodes,
        "connections": _chain("Webhook", "Respond with the execution id", "Wait", "Greeting"),
        "settings": {"executionOrder": "v1", "saveDataSuccessExecution": "all", "saveDataErrorExecution": "all"},
    }


def failing_workflow() -> dict[str, Any]:
    nodes = [
        webhook_node(FAILING_PATH),
        respond_node(),
        _node(
            "Fail", "n8n-nodes-base.stopAndError", 1, 2, {"errorType": "errorMessage", "errorMessage": FAILURE_MESSAGE}
        ),
    ]
    return {
        "name": "Trellis e2e: fails on purpose",
        "nodes": nodes,
        "connections": _chain("Webhook", "Respond with the execution id", "Fail"),
        "settings": {"executionOrder": "v1", "saveDataSuccessExecution": "all", "saveDataErrorExecution": "all"},
    }


async def create_active(http: httpx.AsyncClient, key: str, workflow: dict[str, Any]) -> str:
    headers = {"X-N8N-API-KEY": key}
    created = _data(await http.post("/api/v1/workflows", headers=headers, json=workflow), "POST /api/v1/workflows")
    workflow_id = str(created["id"])
    activated = _data(
        await http.post(f"/api/v1/workflows/{workflow_id}/activate", headers=headers),
        f"POST /api/v1/workflows/{workflow_id}/activate",
    )
    if not activated.get("active"):
        raise Failed(f"workflow {workflow_id} is not active after activation: {activated.get('active')!r}")
    say(f"    workflow {workflow['name']!r} created ({workflow_id}) and activated")
    return workflow_id


# --- 5. the client --------------------------------------------------------------------------------


async def trigger_when_registered(
    client: N8nClient, base_url: str, path: str, payload: Any, key: str
) -> tuple[str | None, Any]:
    """Trigger, retrying briefly while the webhook of a just-activated workflow is not registered yet."""
    for attempt in range(20):
        try:
            return await client.trigger(base_url, path, payload, idempotency_key=key)
        except N8nError as exc:
            if exc.http_status != 404 or attempt == 19:
                raise
            await asyncio.sleep(0.5)
    raise AssertionError("unreachable")


async def check_with_client(http: httpx.AsyncClient, base_url: str, key: str, workflow_id: str) -> None:
    outbound = OutboundClient(OutboundPolicy.from_strings(["127.0.0.1/32"]), timeout_seconds=30.0)
    client = N8nClient(outbound, poll_interval_seconds=0.25, max_poll_interval_seconds=1.0)
    started = time.monotonic()

    async def on_status(execution: N8nExecution) -> None:
        say(f"    [{time.monotonic() - started:5.2f} s] execution {execution.id}: {execution.status}")

    try:
        say(f"==> Triggering POST /webhook/{WEBHOOK_PATH} with N8nClient")
        execution_id, answer = await trigger_when_registered(
            client, base_url, WEBHOOK_PATH, {"name": "Trellis"}, f"e2e-{uuid.uuid4().hex[:8]}"
        )
        say(f"    webhook answered {json.dumps(answer)}")
        if execution_id is None:
            raise Failed(f"the webhook answered no execution id: {answer!r}")
        done = await client.follow(base_url, key, execution_id, on_status=on_status)
        say(f"    final: status={done.status} finished={done.finished} result={json.dumps(done.result)}")
        if done.result != {"greeting": "hello Trellis"}:
            raise Failed(f"unexpected result {done.result!r}")

        listed = _data(
            await http.get("/api/v1/executions", headers={"X-N8N-API-KEY": key}, params={"workflowId": workflow_id}),
            "GET /api/v1/executions",
        )
        found = [e for e in listed if str(e.get("id")) == execution_id]
        if not found:
            raise Failed(f"n8n does not list execution {execution_id} for workflow {workflow_id}: {listed!r}")
        say(f"    n8n lists execution {execution_id} of workflow {workflow_id}: status {found[0].get('status')}")

        say(f"==> Triggering POST /webhook/{FAILING_PATH} (fails on purpose)")
        failing_id, _ = await trigger_when_registered(client, base_url, FAILING_PATH, {}, f"e2e-{uuid.uuid4().hex[:8]}")
        if failing_id is None:
            raise Failed("the failing workflow's webhook answered no execution id")
        try:
            await client.follow(base_url, key, failing_id, on_status=on_status)
        except N8nError as exc:
            say(f"    N8nError: {exc.message!r} (n8n_status={exc.n8n_status}, retryable={exc.retryable})")
            if exc.n8n_status != "error" or exc.message != FAILURE_MESSAGE:
                raise Failed(f"unexpected failure {exc!r}") from None
        else:
            raise Failed("the failing workflow's execution did not fail")

        say("==> Following with a wrong API key")
        try:
            await client.follow(base_url, "not-the-key", execution_id)
        except N8nError as exc:
            say(f"    N8nError: {exc.message!r} (http_status={exc.http_status}, retryable={exc.retryable})")
            if exc.message != "n8n rejected the API key":
                raise Failed(f"unexpected failure {exc!r}") from None
        else:
            raise Failed("a wrong API key was accepted")

        say("==> Following an execution that does not exist")
        try:
            await client.follow(base_url, key, "987654321")
        except N8nError as exc:
            say(f"    N8nError: {exc.message!r} (http_status={exc.http_status})")
            if exc.http_status != 404:
                raise Failed(f"unexpected failure {exc!r}") from None
        else:
            raise Failed("a missing execution was found")
    finally:
        await outbound.aclose()


async def check_through_trellis(base_url: str, key: str) -> None:
    """The same n8n workflow as a step of a Trellis workflow: an embedded Trellis in this process (a
    temporary data directory), the connection saved through the REST API, `n8n.trigger` run with
    POST /api/v1/workflow/execute."""
    import tempfile

    from trellis.app import create_app
    from trellis.settings import Settings
    from trellis.storage import migrate

    admin_key = "trl_e2e-" + "k" * 40
    with tempfile.TemporaryDirectory(prefix="trellis-n8n-e2e-") as data_dir:
        settings = Settings(
            data_dir=Path(data_dir),
            bootstrap_admin_key=admin_key,
            log_level="WARNING",
            workflow={"outbound_allow": ["127.0.0.1/32"], "n8n_poll_seconds": 0.25, "n8n_max_poll_seconds": 1.0},
        )
        app = create_app(settings)
        runtime = app.state.runtime
        await migrate.upgrade(runtime.database)
        await runtime.auth.bootstrap_admin()
        headers = {"Authorization": f"Bearer {admin_key}"}
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://trellis", headers=headers) as api:
                say("==> Through Trellis: saving the n8n connection and a workflow with an n8n.trigger step")
                saved = await api.put("/api/v1/n8n/connections/local", json={"base_url": base_url, "api_key": key})
                if saved.status_code != 200:
                    raise Failed(f"saving the connection: {saved.status_code} {saved.text}")
                definition = {
                    "steps": [
                        {
                            "id": "greet",
                            "type": "n8n.trigger",
                            "with": {
                                "connection": "local",
                                "path": WEBHOOK_PATH,
                                "payload": {"name": "{{ input.name }}"},
                            },
                        },
                        {"id": "shape", "type": "transform", "with": {"value": "{{ steps.greet.output.result }}"}},
                    ]
                }
                await api.put("/api/v1/workflows/via-n8n", json={"definition": definition})
                started = time.monotonic()
                response = await api.post(
                    "/api/v1/workflow/execute", json={"workflow": "via-n8n", "input": {"name": "Trellis"}, "wait": 60}
                )
                run = response.json()["data"]
                say(
                    f"    run {run['id']}: {run['status']} in {time.monotonic() - started:.2f} s, "
                    f"result {json.dumps(run['result'])}"
                )
                events = (await api.get(f"/api/v1/workflow/{run['id']}/events")).json()["data"]["items"]
                for event in events:
                    if event["type"].startswith("n8n."):
                        say(f"    event {event['type']}: {json.dumps(event['data'])}")
                if run["status"] != "succeeded" or run["result"] != {"greeting": "hello Trellis"}:
                    raise Failed(f"the Trellis run did not give n8n's result: {run}")


async def scenario(base_url: str, process: subprocess.Popen[bytes]) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=30.0) as http:
        say("==> Waiting for n8n to be ready")
        await wait_ready(http, process)
        say("==> Setting up the owner and an API key")
        key = await api_key(http)
        say("==> Creating the workflows")
        workflow_id = await create_active(http, key, greeting_workflow())
        await create_active(http, key, failing_workflow())
        await check_with_client(http, base_url, key, workflow_id)
        await check_through_trellis(base_url, key)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(os.environ.get("TRELLIS_N8N_CACHE", Path.home() / ".cache" / "trellis-n8n")),
        help="where n8n is installed (default ~/.cache/trellis-n8n or $TRELLIS_N8N_CACHE)",
    )
    parser.add_argument("--keep", action="store_true", help="keep n8n's temporary user folder (its log, its database)")
    args = parser.parse_args()
    try:
        binary = install(args.cache_dir.expanduser())
        with running_n8n(binary, args.keep) as (base_url, process, log_path):
            try:
                asyncio.run(scenario(base_url, process))
            except (Failed, N8nError, httpx.HTTPError) as exc:
                say(f"FAILED: {exc!r}")
                say("---- n8n log (tail) ----")
                say(log_path.read_text(errors="replace")[-6000:])
                return 1
    except Failed as exc:
        say(f"FAILED: {exc}")
        return 1
    say("==> OK: n8n end to end passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
