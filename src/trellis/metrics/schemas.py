"""What ``SystemMetricsService.snapshot`` answers: the process's own counters, summed into a few
numbers a person (or a dashboard) reads at a glance. Every door shapes it the same way."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class HttpTotals(BaseModel):
    requests: int = Field(description="HTTP requests answered by this process (every route, GraphQL included).")
    client_errors: int = Field(description="Answers with a 4xx status.")
    server_errors: int = Field(description="Answers with a 5xx status.")
    rate_limited: int = Field(description="Answers with 429.")


class ModelTotals(BaseModel):
    calls: int = Field(description="Model calls the gateway answered or failed, every door included.")
    errors: int = Field(description="Model calls that ended in an error.")
    cancelled: int = Field(description="Model calls whose client went away.")
    prompt_tokens: int
    completion_tokens: int
    tokens: int = Field(description="prompt_tokens + completion_tokens.")
    cache_hits: int = Field(description="Completions and embeddings answered from the cache (L1 or L2).")
    cache_misses: int
    fallbacks: int = Field(description="Calls served by a fallback model.")
    retries: int = Field(description="Provider calls retried.")
    log_rows_dropped: int = Field(description="Episodic log rows that could not be written.")


class BreakerState(BaseModel):
    endpoint: str = Field(description="provider:base URL (or model id).")
    open: bool = Field(description="True while the breaker is open or half-open.")


class WorkflowTotals(BaseModel):
    active_runs: int = Field(description="Runs this process's worker executes now.")
    runs_ended: dict[str, int] = Field(description="Runs that ended (or parked) in this process, by status.")
    steps: int = Field(description="Step attempts that ended in this process.")
    runs_lost: int = Field(description="Runs let go of because a lease was lost.")


class SystemMetricsOut(BaseModel):
    timestamp: datetime
    version: str
    uptime_seconds: float
    http: HttpTotals
    models: ModelTotals
    breakers: list[BreakerState]
    workflows: WorkflowTotals
