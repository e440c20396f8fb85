"""REST door for the episodic log: ``/api/v1/db/logs``. Endpoints parse, call the service, shape."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from trellis.auth.deps import Reader, RuntimeDep
from trellis.episodic.schemas import CallStatus, Door, LogFilters, LogOut, LogPage
from trellis.episodic.service import MAX_PAGE
from trellis.kit.envelope import Envelope, ok

router = APIRouter(prefix="/api/v1/db/logs", tags=["logs"])


@router.get("", summary="List model calls, newest first: your own, or (admins) anyone's")
async def list_logs(
    principal: Reader,
    runtime: RuntimeDep,
    model: Annotated[str | None, Query(max_length=200, description="Requested or served model.")] = None,
    status: Annotated[CallStatus | None, Query()] = None,
    door: Annotated[Door | None, Query()] = None,
    since: Annotated[datetime | None, Query(description="Created at or after (ISO 8601; UTC if no offset).")] = None,
    until: Annotated[datetime | None, Query(description="Created before (ISO 8601; UTC if no offset).")] = None,
    q: Annotated[
        str | None, Query(min_length=1, max_length=500, description="Text in the prompt, messages or response.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    cursor: Annotated[str | None, Query(max_length=512, description="next_cursor from the previous page.")] = None,
    user_id: Annotated[str | None, Query(description="Admins only: this user's calls.")] = None,
) -> Envelope[LogPage]:
    filters = LogFilters(
        model=model,
        status=status,
        door=door,
        since=since,
        until=until,
        q=q,
        user_id=user_id,
        limit=limit,
        cursor=cursor,
    )
    rows, next_cursor = await runtime.episodic.list(principal, filters)
    return ok(LogPage.of(rows, next_cursor, LogOut.model_validate))


@router.get("/{log_id}", summary="One model call")
async def get_log(log_id: str, principal: Reader, runtime: RuntimeDep) -> Envelope[LogOut]:
    return ok(LogOut.model_validate(await runtime.episodic.get(principal, log_id)))
