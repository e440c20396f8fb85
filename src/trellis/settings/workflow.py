"""``[workflow]``: durable workflow runs: workers, leases, limits, queues and the outbound guard."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class WorkflowSettings(BaseModel):
    """Durable workflows (``[workflow]`` in trellis.toml, ``TRELLIS_WORKFLOW__*``)."""

    model_config = ConfigDict(extra="forbid")

    # Where runs are nudged to workers. None: the in-process pool of `trellis serve` runs them.
    # redis://…, nats://… or amqp://…: `trellis worker` processes take them from that broker (the
    # API processes then run no workflow steps themselves unless embedded_workers is true).
    queue_url: str | None = None
    queue_name: str = "trellis-workflows"
    # Run workflow steps inside `trellis serve`. Default: only when queue_url is unset.
    embedded_workers: bool | None = None
    # Runs one worker process (or the embedded pool) executes at once.
    worker_concurrency: Annotated[int, Field(ge=1, le=1024)] = 64
    # Runs executing at once, across every worker: per user, and in all.
    max_running_per_user: Annotated[int, Field(ge=1)] = 64
    max_running_total: Annotated[int, Field(ge=1)] = 1024
    # A worker holds a run for this long and renews it every lease/3; a run whose worker stopped
    # renewing is given to another worker once it expires.
    lease_seconds: Annotated[float, Field(gt=0, le=600)] = 15.0
    # PostgreSQL: each worker holds a session lock for as long as it lives, so the others see it die
    # and take its runs within two polls instead of when its leases expire (see
    # trellis.workflows.liveness). Behind PgBouncer in transaction mode, turn it off.
    liveness: bool = True
    # How often each worker looks for due work in the database (woken waits, expired leases, nudges
    # a broker lost); nudges make new runs start at once without waiting for it.
    poll_seconds: Annotated[float, Field(gt=0, le=60)] = 1.0
    # With a queue: a new run is left to its nudge this long before a poll takes it (the nudge is
    # faster; a poll racing it costs a failed claim). A run whose nudge the broker lost starts late
    # by about this much.
    nudge_grace_seconds: Annotated[float, Field(ge=0, le=60)] = 2.0
    # How often a worker checks whether a run it executes was cancelled (distributed mode; the
    # embedded pool is told at once).
    cancel_check_seconds: Annotated[float, Field(gt=0, le=10)] = 0.25
    # On shutdown, runs still executing after this long are handed back to the database.
    shutdown_grace_seconds: Annotated[float, Field(ge=0, le=600)] = 10.0
    # Attempts lost with their worker are retried without spending the step's retry policy, at
    # most this many times (a step that kills every worker it runs on must end, failed).
    max_lost_attempts: Annotated[int, Field(ge=1, le=100)] = 10
    default_step_timeout_seconds: Annotated[float, Field(gt=0)] = 300.0
    max_step_timeout_seconds: Annotated[float, Field(gt=0)] = 86_400.0
    max_wait_seconds: Annotated[float, Field(gt=0)] = 30 * 86_400.0
    # Largest run input (413 over it), definition and step output.
    max_input_bytes: Annotated[int, Field(gt=0)] = 262_144
    max_definition_bytes: Annotated[int, Field(gt=0)] = 262_144
    max_output_bytes: Annotated[int, Field(gt=0)] = 1_048_576
    # POST /api/v1/workflow/execute waits at most this long for a result.
    max_execute_wait_seconds: Annotated[float, Field(gt=0, le=300)] = 60.0
    # Outbound calls (http.request, n8n): networks or host names allowed beyond public addresses,
    # e.g. ["10.0.0.0/8", "n8n.internal"]; the response cap and timeout of one request.
    outbound_allow: list[str] = Field(default_factory=list)
    outbound_max_response_bytes: Annotated[int, Field(gt=0)] = 1_048_576
    outbound_timeout_seconds: Annotated[float, Field(gt=0, le=3600)] = 30.0
    # n8n.trigger follows an execution by polling n8n's API: first after this long, then doubling up
    # to the maximum (back to the first interval when the status changes).
    n8n_poll_seconds: Annotated[float, Field(gt=0, le=60)] = 1.0
    n8n_max_poll_seconds: Annotated[float, Field(gt=0, le=600)] = 10.0
    # Inbound hooks: how old a signed timestamp may be.
    hook_tolerance_seconds: Annotated[int, Field(ge=1, le=3600)] = 300
    # Encrypts n8n API keys and hook secrets at rest (Fernet keys, newest first, comma-separated in
    # TRELLIS_WORKFLOW__SECRET_KEYS). Unset: a key file in the data directory (embedded only).
    secret_keys: list[SecretStr] = Field(default_factory=list)
    # Events, step records and runs older than this (ended runs only) are deleted.
    retention_days: Annotated[int, Field(ge=1)] = 30
