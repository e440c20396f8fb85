"""Request and response shapes of the reindex (``POST/GET /api/context/reindex``, the CLI)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from trellis.context.index.models import EmbeddingState
from trellis.kit.clock import as_utc
from trellis.kit.requests import RequestModel

ReindexStatus = Literal["idle", "running", "done", "failed"]


class ReindexRequest(RequestModel):
    model: Annotated[
        str | None,
        Field(
            min_length=1,
            max_length=200,
            description="The embedding model to re-embed every context with (a name or alias the gateway "
            "knows, able to embed); the configured default embedding model when absent.",
        ),
    ] = None


class ReindexOut(BaseModel):
    """The embedding state: the model searches use, and the last (or running) reindex."""

    status: ReindexStatus = Field(description="idle (never reindexed), running, done or failed.")
    active_model: str | None = Field(description="The model whose vectors searches read now.")
    job_id: str | None
    target_model: str | None = Field(description="The model the reindex embeds with.")
    previous_model: str | None = Field(description="The active model when the reindex started.")
    total: int = Field(description="Contexts in the store.")
    done: int = Field(description="Contexts the reindex has passed (embedded, or found current).")
    progress: float = Field(description="done / total, 0..1 (1 when done).")
    error: str | None = Field(description="Why the reindex failed (status failed).")
    worker: str | None = Field(description="The process working the reindex while one holds it.")
    started_at: datetime | None
    updated_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(cls, row: EmbeddingState | None, *, active: str | None = None) -> ReindexOut:
        if row is None:
            return cls(
                status="idle",
                active_model=active,
                job_id=None,
                target_model=None,
                previous_model=None,
                total=0,
                done=0,
                progress=0.0,
                error=None,
                worker=None,
                started_at=None,
                updated_at=None,
                finished_at=None,
            )
        status: ReindexStatus = row.status if row.status in ("idle", "running", "done", "failed") else "idle"  # type: ignore[assignment]
        progress = 1.0 if status == "done" else (min(row.done / row.total, 1.0) if row.total else 0.0)
        return cls(
            status=status,
            active_model=row.active_model or active,
            job_id=row.job_id,
            target_model=row.target_model,
            previous_model=row.previous_model,
            total=row.total,
            done=row.done,
            progress=round(progress, 4),
            error=row.error,
            worker=row.lease_owner if status == "running" else None,
            started_at=as_utc(row.started_at) if row.started_at else None,
            updated_at=as_utc(row.updated_at) if row.updated_at else None,
            finished_at=as_utc(row.finished_at) if row.finished_at else None,
        )
