"""The n8n client (workflows/n8n.py) against a real HTTP server standing in for n8n (fake_n8n.py):
trigger through the webhook, follow the execution, map n8n's statuses and HTTP answers. No sleeping:
the client's sleep is injected and recorded."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.workflows.fake_n8n import FakeN8n
from trellis.kit.errors import ValidationFailed
from trellis.kit.outbound import OutboundClient, OutboundPolicy, OutboundRefused
from trellis.workflows.n8n import N8nClient, N8nError, N8nExecution

LOOPBACK_ALLOWED = OutboundPolicy.from_strings(["127.0.0.1/32"])


class Sleeps:
    """The injected sleep: records how long the client asked to wait, returns at once."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.fixture
async def n8n() -> AsyncIterator[FakeN8n]:
    async with FakeN8n.running() as fake:
        yield fake


@pytest.fixture
async def outbound() -> AsyncIterator[OutboundClient]:
    client = OutboundClient(LOOPBACK_ALLOWED, timeout_seconds=5.0)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def client(outbound: OutboundClient, sleeps: Sleeps) -> N8nClient:
    return N8nClient(outbound, poll_interval_seconds=1.0, max_poll_interval_seconds=10.0, sleep=sleeps)


async def test_success_after_waiting(n8n: FakeN8n, client: N8nClient, sleeps: Sleeps) -> None:
    n8n.script("slow", statuses=["waiting", "waiting", "running", "success"], result={"greeting": "hello Ada"})
    execution_id, answer = await client.trigger(n8n.base_url, "slow", {"name": "Ada"}, idempotency_key="run-1:step-1")
    assert execution_id is not None
    assert answer == {"executionId": execution_id}

    seen: list[N8nExecution] = []

    async def on_status(execution: N8nExecution) -> None:
        seen.append(execution)

    done = await client.follow(n8n.base_url, n8n.api_key, execution_id, on_status=on_status)
    assert done == N8nExecution(
        id=execution_id, status="success", finished=True, result={"greeting": "hello Ada"}, error=None
    )
    assert [e.status for e in seen] == ["waiting", "running", "success"]  # changes only
    assert [e.finished for e in seen] == [False, False, True]
    # 1, then doubled while nothing changes, back to the start when the status changes.
    assert sleeps.calls == [1.0, 2.0, 1.0]
    polls = n8n.execution_polls(execution_id)
    assert len(polls) == 4
    assert all(p.query == {"includeData": "true"} and p.headers["x-n8n-api-key"] == n8n.api_key for p in polls)


async def test_polling_backs_off_exponentially_up_to_the_cap(n8n: FakeN8n, outbound: OutboundClient) -> None:
    sleeps = Sleeps()
    client = N8nClient(outbound, poll_interval_seconds=0.5, max_poll_interval_seconds=3.0, sleep=sleeps)
    n8n.script("long", statuses=["running"] * 7 + ["success"], result={"done": True})
    execution_id, _ = await client.trigger(n8n.base_url, "long", {}, idempotency_key="k")
    assert execution_id is not None
    done = await client.follow(n8n.base_url, n8n.api_key, execution_id)
    assert done.result == {"done": True}
    assert sleeps.calls == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0, 3.0]


async def test_an_already_finished_execution_needs_no_sleep(n8n: FakeN8n, client: N8nClient, sleeps: Sleeps) -> None:
    n8n.script("fast", statuses=["success"], result=[{"n": 1}, {"n": 2}])
    execution_id, _ = await client.trigger(n8n.base_url, "fast", {}, idempotency_key="k")
    assert execution_id is not None
    done = await client.follow(n8n.base_url, n8n.api_key, execution_id)
    assert done.result == [{"n": 1}, {"n": 2}]  # several items: the list of their json
    assert sleeps.calls == []


async def test_an_error_carries_n8ns_message(n8n: FakeN8n, client: N8nClient) -> None:
    n8n.script("broken", statuses=["running", "error"], error="Cannot read properties of undefined (reading 'x')")
    execution_id, _ = await client.trigger(n8n.base_url, "broken", {}, idempotency_key="k")
    assert execution_id is not None

    seen: list[str] = []

    async def on_status(execution: N8nExecution) -> None:
        seen.append(execution.status)

    with pytest.raises(N8nError) as caught:
        await client.follow(n8n.base_url, n8n.api_key, execution_id, on_status=on_status)
    error = caught.value
    assert error.message == "Cannot read properties of undefined (reading 'x')"
    assert error.n8n_status == "error"
    assert error.retryable is False
    assert error.http_status is None
    assert seen == ["running", "error"]

    # execution() reports a failed execution without raising.
    look = await client.execution(n8n.base_url, n8n.api_key, execution_id)
    assert look.status == "error"
    assert look.finished is True
    assert look.result is None
    assert look.error == "Cannot read properties of undefined (reading 'x')"


@pytest.mark.parametrize("status", ["crashed", "canceled"])
async def test_crashed_and_canceled_fail_even_without_a_message(n8n: FakeN8n, client: N8nClient, status: str) -> None:
    n8n.script("ends", statuses=["running", status])
    execution_id, _ = await client.trigger(n8n.base_url, "ends", {}, idempotency_key="k")
    assert execution_id is not None
    with pytest.raises(N8nError) as caught:
        await client.follow(n8n.base_url, n8n.api_key, execution_id)
    assert caught.value.n8n_status == status
    assert status in caught.value.message
    assert caught.value.retryable is False


async def test_an_unknown_execution_is_not_found(n8n: FakeN8n, client: N8nClient) -> None:
    with pytest.raises(N8nError) as caught:
        await client.follow(n8n.base_url, n8n.api_key, "424242")
    assert caught.value.message == "execution not found: 424242"
    assert caught.value.http_status == 404
    assert caught.value.retryable is False
    assert len(n8n.execution_polls("424242")) == 1


@pytest.mark.parametrize("api_key", ["wrong-key", ""])
async def test_a_bad_api_key_is_final(n8n: FakeN8n, client: N8nClient, sleeps: Sleeps, api_key: str) -> None:
    n8n.script("p", statuses=["success"])
    execution_id, _ = await client.trigger(n8n.base_url, "p", {}, idempotency_key="k")
    assert execution_id is not None
    with pytest.raises(N8nError) as caught:
        await client.follow(n8n.base_url, api_key, execution_id)
    assert caught.value.message == "n8n rejected the API key"
    assert caught.value.http_status == 401
    assert caught.value.retryable is False
    assert sleeps.calls == []  # not retried


async def test_the_webhook_gets_the_payload_the_idempotency_key_and_extra_headers(
    n8n: FakeN8n, client: N8nClient
) -> None:
    n8n.script("hello", statuses=["success"])
    payload = {"name": "Ada", "tags": ["a", "b"], "nested": {"n": 1.5, "none": None}, "text": "ünïcode ✓"}
    await client.trigger(
        n8n.base_url + "/",
        "/hello",
        payload,
        idempotency_key="run-7:step-2",
        headers={"X-Hook-Secret": "s3cret", "Idempotency-Key": "overridden by the step's"},
    )
    [call] = n8n.webhook_calls("hello")
    assert call.method == "POST"
    assert call.body == payload
    assert call.headers["idempotency-key"] == "run-7:step-2"
    assert call.headers["x-trellis-idempotency-key"] == "run-7:step-2"
    assert call.headers["x-hook-secret"] == "s3cret"
    assert call.headers["content-type"] == "application/json"
    assert "x-n8n-api-key" not in call.headers  # the API key goes only to the API
    [execution] = n8n.executions.values()
    assert execution.payload == payload


@pytest.mark.parametrize(
    ("answer", "expected_id"),
    [
        ({"executionId": "77"}, "77"),
        ({"execution_id": "78"}, "78"),
        ({"id": 79}, "79"),
        ({"executionId": ""}, None),
        ({"executionId": True}, None),
        ({"message": "Workflow was started"}, None),  # n8n's answer when it responds on receipt
        ([{"greeting": "hi"}], None),
        ("plain text", None),
    ],
)
async def test_the_execution_id_from_the_webhooks_answer(
    n8n: FakeN8n, client: N8nClient, answer: Any, expected_id: str | None
) -> None:
    n8n.script("answers", webhook_response=answer)
    execution_id, body = await client.trigger(n8n.base_url, "answers", {"q": 1}, idempotency_key="k")
    assert execution_id == expected_id
    assert body == answer


async def test_a_webhook_answering_without_an_id_is_the_result(n8n: FakeN8n, client: N8nClient) -> None:
    n8n.script("sync", webhook_response={"greeting": "hello Ada", "count": 3})
    execution_id, body = await client.trigger(n8n.base_url, "sync", {"name": "Ada"}, idempotency_key="k")
    assert execution_id is None
    assert body == {"greeting": "hello Ada", "count": 3}


async def test_an_unregistered_webhook_is_final(n8n: FakeN8n, client: N8nClient) -> None:
    with pytest.raises(N8nError) as caught:
        await client.trigger(n8n.base_url, "nowhere", {}, idempotency_key="k")
    assert caught.value.http_status == 404
    assert caught.value.retryable is False
    assert "POST /webhook/nowhere" in caught.value.message
    assert "is not registered" in caught.value.message  # n8n's own message is passed on


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_a_5xx_from_the_webhook_is_retryable(n8n: FakeN8n, client: N8nClient, status: int) -> None:
    n8n.script("flaky", webhook_http_status=status)
    with pytest.raises(N8nError) as caught:
        await client.trigger(n8n.base_url, "flaky", {}, idempotency_key="k")
    assert caught.value.retryable is True
    assert caught.value.http_status == status
    assert n8n.executions == {}


async def test_a_4xx_from_the_webhook_is_final(n8n: FakeN8n, client: N8nClient) -> None:
    n8n.script("picky", webhook_http_status=422)
    with pytest.raises(N8nError) as caught:
        await client.trigger(n8n.base_url, "picky", {}, idempotency_key="k")
    assert caught.value.retryable is False
    assert caught.value.http_status == 422


async def test_a_5xx_while_polling_is_retryable(n8n: FakeN8n, client: N8nClient) -> None:
    n8n.script("blip", poll_http_statuses=[503], statuses=["success"])
    execution_id, _ = await client.trigger(n8n.base_url, "blip", {}, idempotency_key="k")
    assert execution_id is not None
    with pytest.raises(N8nError) as caught:
        await client.execution(n8n.base_url, n8n.api_key, execution_id)
    assert caught.value.retryable is True
    assert caught.value.http_status == 503
    assert (await client.execution(n8n.base_url, n8n.api_key, execution_id)).status == "success"


async def test_follow_rides_out_a_few_failed_polls(n8n: FakeN8n, client: N8nClient, sleeps: Sleeps) -> None:
    n8n.script("blips", poll_http_statuses=[502, 503], statuses=["running", "success"], result={"ok": 1})
    execution_id, _ = await client.trigger(n8n.base_url, "blips", {}, idempotency_key="k")
    assert execution_id is not None
    done = await client.follow(n8n.base_url, n8n.api_key, execution_id)
    assert done.result == {"ok": 1}
    assert sleeps.calls == [1.0, 2.0, 4.0]  # backing off through the failures (and the first status)


async def test_follow_gives_up_after_max_poll_failures(n8n: FakeN8n, outbound: OutboundClient) -> None:
    sleeps = Sleeps()
    client = N8nClient(outbound, max_poll_failures=3, sleep=sleeps)
    n8n.script("down", poll_http_statuses=[502] * 10, statuses=["success"])
    execution_id, _ = await client.trigger(n8n.base_url, "down", {}, idempotency_key="k")
    assert execution_id is not None
    with pytest.raises(N8nError) as caught:
        await client.follow(n8n.base_url, n8n.api_key, execution_id)
    assert caught.value.retryable is True
    assert caught.value.http_status == 502
    assert len(n8n.execution_polls(execution_id)) == 3
    assert sleeps.calls == [1.0, 2.0]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_a_connection_error_is_retryable(client: N8nClient) -> None:
    base_url = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    with pytest.raises(N8nError) as caught:
        await client.trigger(base_url, "hello", {}, idempotency_key="k")
    assert caught.value.retryable is True
    assert caught.value.http_status is None
    with pytest.raises(N8nError) as caught:
        await client.execution(base_url, "key", "1")
    assert caught.value.retryable is True


async def test_a_timeout_is_retryable() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)  # accepts, never answers
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    outbound = OutboundClient(LOOPBACK_ALLOWED, timeout_seconds=0.3)
    try:
        with pytest.raises(N8nError) as caught:
            await N8nClient(outbound).trigger(f"http://127.0.0.1:{port}", "hello", {}, idempotency_key="k")
        assert caught.value.retryable is True
        assert "in time" in caught.value.message
    finally:
        await outbound.aclose()
        server.close()


async def test_loopback_is_refused_without_the_allowlist(n8n: FakeN8n) -> None:
    outbound = OutboundClient()  # no allowlist: 127.0.0.1 is not a global address
    client = N8nClient(outbound, sleep=Sleeps())
    n8n.script("hello", statuses=["success"])
    try:
        with pytest.raises(OutboundRefused) as caught:
            await client.trigger(n8n.base_url, "hello", {}, idempotency_key="k")
        assert caught.value.status_code == 400
        [entry] = caught.value.details["fields"]
        assert entry["field"] == "base_url"
        assert entry["type"] == "url_forbidden"
        with pytest.raises(OutboundRefused):
            await client.follow(n8n.base_url, n8n.api_key, "1001")
        assert n8n.calls == []  # nothing reached the server
    finally:
        await outbound.aclose()


@pytest.mark.parametrize("path", ["", "/", "a/../../api/v1/workflows", "./x", "a//b", "x?y=1", "x#y"])
async def test_webhook_paths_cannot_leave_webhook(n8n: FakeN8n, client: N8nClient, path: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        await client.trigger(n8n.base_url, path, {}, idempotency_key="k")
    assert caught.value.details["fields"][0]["field"] == "webhook_path"
    assert n8n.calls == []


async def test_execution_ids_are_one_path_segment(n8n: FakeN8n, client: N8nClient) -> None:
    with pytest.raises(N8nError) as caught:
        await client.execution(n8n.base_url, n8n.api_key, "../workflows")
    assert caught.value.http_status == 404
    [call] = n8n.calls
    assert call.raw_path == "/api/v1/executions/..%2Fworkflows"  # one segment, not a way to /workflows


async def test_a_payload_that_is_not_json_is_refused(n8n: FakeN8n, client: N8nClient) -> None:
    n8n.script("hello")
    with pytest.raises(N8nError, match="not JSON"):
        await client.trigger(n8n.base_url, "hello", {"x": float("nan")}, idempotency_key="k")
    assert n8n.calls == []


async def test_follow_can_be_cancelled(n8n: FakeN8n, outbound: OutboundClient) -> None:
    """The engine enforces deadlines by cancelling: the cancellation goes through, nothing swallows it."""
    sleeping = asyncio.Event()

    async def forever(seconds: float) -> None:
        sleeping.set()
        await asyncio.Event().wait()

    client = N8nClient(outbound, sleep=forever)
    n8n.script("stuck", statuses=["waiting"])
    execution_id, _ = await client.trigger(n8n.base_url, "stuck", {}, idempotency_key="k")
    assert execution_id is not None
    seen: list[str] = []

    async def on_status(execution: N8nExecution) -> None:
        seen.append(execution.status)

    task = asyncio.create_task(client.follow(n8n.base_url, n8n.api_key, execution_id, on_status=on_status))
    await asyncio.wait_for(sleeping.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()
    assert seen == ["waiting"]

    # ... and a deadline through asyncio.timeout ends as a TimeoutError.
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await N8nClient(outbound).follow(n8n.base_url, n8n.api_key, execution_id)


def test_bad_poll_settings_are_refused(outbound: OutboundClient) -> None:
    with pytest.raises(ValueError, match="poll_interval"):
        N8nClient(outbound, poll_interval_seconds=0)
    with pytest.raises(ValueError, match="poll_interval"):
        N8nClient(outbound, poll_interval_seconds=5, max_poll_interval_seconds=1)
    with pytest.raises(ValueError, match="max_poll_failures"):
        N8nClient(outbound, max_poll_failures=0)
