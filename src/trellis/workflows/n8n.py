"""The n8n client behind the workflow step ``n8n.trigger``: start an n8n workflow, follow it to its end.

n8n has no public API that starts a workflow by id. A workflow is started by calling its Webhook
node, ``POST {base_url}/webhook/{path}`` (the production path, answered only while the workflow is
active; ``/webhook-test/{path}`` is the editor's listen-once test path, not used here), with the
step's JSON payload. The workflow is expected to answer with its own execution id, by convention
from a *Respond to Webhook* node whose body is ``{"executionId": "{{ $execution.id }}"}``
(``execution_id`` and ``id`` are read too). A webhook that answers without an id (``responseMode``
"onReceived" or "lastNode") gives nothing to follow: its JSON answer is the result.

With an id, the execution is polled through the public API::

    GET {base_url}/api/v1/executions/{id}?includeData=true     X-N8N-API-KEY: <key>

until its ``status`` ends. n8n's statuses and what they become here:

=========================================  ==============================================================
``success``                                succeeded; the result is the ``json`` of the first output's
                                           items of the last executed node (``data.resultData.runData
                                           [lastNodeExecuted][-1].data.main[0]``): one dict when there is
                                           one item, else a list of dicts
``error``, ``crashed``, ``canceled``       failed, with n8n's ``data.resultData.error.message``
``new``, ``running``, ``waiting``,         not ended yet: poll again, with capped exponential backoff
``unknown``
=========================================  ==============================================================

HTTP answers: 404 on the execution is "execution not found"; 401/403 is "n8n rejected the API key";
these and other 4xx are final. 5xx, 429, timeouts and connection errors are *retryable*
(``N8nError.retryable``). While following, ``follow`` itself rides out up to ``max_poll_failures``
retryable failures in a row before raising one: a step retried after a failed poll must resume
following the execution it has (persist the id ``trigger`` returned), not trigger the workflow again.

Every request goes through ``trellis.kit.outbound.OutboundClient`` (the SSRF guard: addresses
checked and pinned, redirects checked per hop, bodies capped); a refused base URL is its 400
``OutboundRefused`` naming ``base_url``. The webhook call carries the step's idempotency key
(``Idempotency-Key`` and ``X-Trellis-Idempotency-Key``); n8n does not deduplicate on it by itself,
a workflow that must not run twice can (``{{ $json.headers["idempotency-key"] }}``).

Nothing here enforces an overall deadline: the workflow engine does, by cancelling the coroutine,
and ``CancelledError`` is never caught.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

import httpx

from trellis.kit.errors import ValidationFailed
from trellis.kit.outbound import OutboundClient, ResponseTooLarge

Sleep = Callable[[float], Awaitable[None]]
StatusCallback = Callable[["N8nExecution"], Awaitable[None]]

SUCCEEDED: Final = frozenset({"success"})
FAILED: Final = frozenset({"error", "crashed", "canceled"})
ENDED: Final = SUCCEEDED | FAILED
PENDING: Final = frozenset({"new", "running", "waiting", "unknown"})
EXECUTION_ID_KEYS: Final = ("executionId", "execution_id", "id")
FIELD: Final = "base_url"


class N8nError(Exception):
    """n8n did not do what was asked: the webhook or the API refused, failed or was unreachable, or
    the execution ended in ``error``, ``crashed`` or ``canceled`` (``n8n_status``).

    ``retryable`` is true for what may pass by itself (5xx, 429, timeouts, connection errors);
    ``http_status`` is n8n's HTTP answer when there was one.
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool = False,
        n8n_status: str | None = None,
        http_status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.n8n_status = n8n_status
        self.http_status = http_status

    def __repr__(self) -> str:
        return (
            f"N8nError({self.message!r}, retryable={self.retryable}, n8n_status={self.n8n_status!r}, "
            f"http_status={self.http_status!r})"
        )


@dataclass(frozen=True)
class N8nExecution:
    """One look at an execution. ``finished`` means it has ended, however it ended (n8n's own
    ``finished`` flag is true only for a success). ``result`` is set for a success, ``error`` for a
    failure."""

    id: str
    status: str
    finished: bool
    result: Any
    error: str | None


class N8nClient:
    """Triggers n8n workflows through their webhooks and follows their executions."""

    def __init__(
        self,
        outbound: OutboundClient,
        *,
        poll_interval_seconds: float = 1.0,
        max_poll_interval_seconds: float = 10.0,
        max_poll_failures: int = 5,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if poll_interval_seconds <= 0 or max_poll_interval_seconds < poll_interval_seconds:
            raise ValueError("need 0 < poll_interval_seconds <= max_poll_interval_seconds")
        if max_poll_failures < 1:
            raise ValueError("max_poll_failures must be at least 1")
        self._outbound = outbound
        self.poll_interval_seconds = poll_interval_seconds
        self.max_poll_interval_seconds = max_poll_interval_seconds
        self.max_poll_failures = max_poll_failures
        self._sleep = sleep

    async def trigger(
        self,
        base_url: str,
        webhook_path: str,
        payload: Any,
        *,
        idempotency_key: str,
        headers: dict[str, str] | None = None,
    ) -> tuple[str | None, Any]:
        """POST ``payload`` (as JSON) to the workflow's production webhook. Returns the execution id
        the workflow answered (None when it gave none) and its answer, parsed (JSON, else text,
        None when empty)."""
        url = f"{_base(base_url)}/webhook/{_webhook_path(webhook_path)}"
        try:
            body = json.dumps(payload, allow_nan=False, ensure_ascii=False).encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise N8nError(f"the payload is not JSON: {exc}") from None
        request_headers = {
            **(headers or {}),
            "Content-Type": "application/json",
            "Accept": "application/json",
            "Idempotency-Key": idempotency_key,
            "X-Trellis-Idempotency-Key": idempotency_key,
        }
        response = await self._send("POST", url, request_headers, body, what="the webhook")
        if response.status_code in (401, 403):
            raise N8nError(
                f"n8n rejected the webhook request (HTTP {response.status_code}){_said(response)}",
                http_status=response.status_code,
            )
        if response.status_code == 404:
            raise N8nError(
                f"no active n8n webhook at POST /webhook/{_webhook_path(webhook_path)}{_said(response)}",
                http_status=404,
            )
        _raise_for_status(response, "the webhook")
        answer = _parse(response)
        return _execution_id(answer), answer

    async def execution(self, base_url: str, api_key: str, execution_id: str) -> N8nExecution:
        """One look at an execution, however it stands (a failed one is returned, not raised)."""
        url = f"{_base(base_url)}/api/v1/executions/{quote(execution_id, safe='')}?includeData=true"
        request_headers = {"X-N8N-API-KEY": api_key, "Accept": "application/json"}
        response = await self._send("GET", url, request_headers, None, what="the executions API")
        if response.status_code == 404:
            raise N8nError(f"execution not found: {execution_id}", http_status=404)
        if response.status_code in (401, 403):
            raise N8nError("n8n rejected the API key", http_status=response.status_code)
        _raise_for_status(response, "the executions API")
        body = _parse(response)
        if not isinstance(body, dict):
            raise N8nError(f"n8n answered the execution {execution_id} with something that is not a JSON object")
        return _execution(execution_id, body)

    async def follow(
        self,
        base_url: str,
        api_key: str,
        execution_id: str,
        *,
        on_status: StatusCallback | None = None,
    ) -> N8nExecution:
        """Poll the execution until it ends: its last look when it succeeded, else ``N8nError``
        (``n8n_status`` set for ``error``/``crashed``/``canceled``). ``on_status`` sees every change of
        status, the first look included. The interval starts at ``poll_interval_seconds``, doubles up
        to ``max_poll_interval_seconds``, and starts again when the status changes. Runs until it
        ends: cancel it to stop it."""
        delay = self.poll_interval_seconds
        last_status: str | None = None
        failures = 0
        while True:
            try:
                current = await self.execution(base_url, api_key, execution_id)
            except N8nError as exc:
                failures += 1
                if not exc.retryable or failures >= self.max_poll_failures:
                    raise
            else:
                failures = 0
                if current.status != last_status:
                    if last_status is not None:
                        delay = self.poll_interval_seconds
                    last_status = current.status
                    if on_status is not None:
                        await on_status(current)
                if current.finished:
                    if current.status in SUCCEEDED:
                        return current
                    raise N8nError(
                        current.error or f"the n8n execution ended with status {current.status}",
                        n8n_status=current.status,
                    )
            await self._sleep(delay)
            delay = min(delay * 2, self.max_poll_interval_seconds)

    async def _send(
        self, method: str, url: str, headers: dict[str, str], content: bytes | None, *, what: str
    ) -> httpx.Response:
        try:
            return await self._outbound.request(method, url, field=FIELD, headers=headers, content=content)
        except httpx.TimeoutException as exc:
            raise N8nError(f"n8n did not answer in time ({what}): {type(exc).__name__}", retryable=True) from None
        except httpx.TransportError as exc:
            raise N8nError(f"cannot reach n8n ({what}): {exc or type(exc).__name__}", retryable=True) from None
        except ResponseTooLarge as exc:
            raise N8nError(f"n8n's answer is too large ({what}): {exc.message}") from None
        except httpx.HTTPError as exc:
            raise N8nError(f"n8n's answer is unreadable ({what}): {exc or type(exc).__name__}") from None


def _base(base_url: str) -> str:
    return base_url.strip().rstrip("/")


def _webhook_path(path: str) -> str:
    """The webhook path, percent-encoded; ``.``/``..`` segments, queries and fragments refused, so a
    path cannot step out of ``/webhook/``."""
    cleaned = path.strip().strip("/")
    segments = cleaned.split("/")
    if not cleaned or any(s in ("", ".", "..") for s in segments) or "?" in cleaned or "#" in cleaned:
        raise ValidationFailed.of(
            "webhook_path",
            "an n8n webhook path is one or more non-empty segments, without '.', '..', '?' or '#'",
        )
    return "/".join(quote(s, safe="") for s in segments)


def _parse(response: httpx.Response) -> Any:
    """The body as JSON when it is JSON, else as text; None when empty."""
    if not response.content.strip():
        return None
    try:
        return json.loads(response.content)
    except ValueError:
        return response.text


def _execution_id(answer: Any) -> str | None:
    if not isinstance(answer, dict):
        return None
    for key in EXECUTION_ID_KEYS:
        value = answer.get(key)
        if isinstance(value, bool):
            continue
        if isinstance(value, int) or (isinstance(value, str) and value.strip()):
            return str(value).strip()
    return None


def _said(response: httpx.Response) -> str:
    """``: <n8n's message>`` when its answer carries one."""
    try:
        body = json.loads(response.content)
    except ValueError:
        return ""
    message = body.get("message") if isinstance(body, dict) else None
    return f": {message}" if isinstance(message, str) and message else ""


def _raise_for_status(response: httpx.Response, what: str) -> None:
    status = response.status_code
    if status < 400:
        return
    retryable = status >= 500 or status in (408, 429)
    raise N8nError(f"n8n answered HTTP {status} ({what}){_said(response)}", retryable=retryable, http_status=status)


def _execution(execution_id: str, body: Mapping[str, Any]) -> N8nExecution:
    status = body.get("status")
    if not isinstance(status, str) or not status:
        # Executions from before n8n had ``status`` carry only ``finished`` (true = succeeded) and
        # ``stoppedAt``.
        status = "success" if body.get("finished") is True else ("error" if body.get("stoppedAt") else "unknown")
    ended = status in ENDED
    result_data = _dig(body, "data", "resultData")
    result = _last_output(result_data) if status in SUCCEEDED else None
    error = None
    if status in FAILED:
        message = _dig(result_data, "error", "message")
        error = message if isinstance(message, str) and message else f"the n8n execution ended with status {status}"
    return N8nExecution(id=str(body.get("id", execution_id)), status=status, finished=ended, result=result, error=error)


def _dig(value: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def _last_output(result_data: Any) -> Any:
    """The ``json`` of the items on the first output of the last executed node's last run: one dict
    for one item, a list otherwise; None when the execution carries no data."""
    node = _dig(result_data, "lastNodeExecuted")
    runs = _dig(result_data, "runData", node) if isinstance(node, str) else None
    if not isinstance(runs, list) or not runs:
        return None
    outputs = _dig(runs[-1], "data", "main")
    items = outputs[0] if isinstance(outputs, list) and outputs else None
    if not isinstance(items, list):
        return []
    values = [item.get("json") for item in items if isinstance(item, Mapping)]
    return values[0] if len(values) == 1 else values
