"""REST door for alerts: ``/api/v1/alerts`` (the instances pending or firing now), ``/rules``, ``/events``
(the history of state changes, with each notification's outcome) and ``/silences``."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, status
from pydantic import BaseModel

from trellis.alerts.schemas import (
    MAX_PAGE,
    AlertEventPage,
    AlertOut,
    AlertRuleCreate,
    AlertRuleCreated,
    AlertRuleOut,
    AlertRuleUpdate,
    AlertState,
    EventFilters,
    SilenceCreate,
    SilenceOut,
)
from trellis.auth.deps import Reader, RuntimeDep, Writer
from trellis.kit.envelope import Envelope, ok

router = APIRouter(prefix="/api/v1/alerts", tags=["alerts"])
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No such rule, or another user's (not_found_error)"}}


class RuleDeleted(BaseModel):
    id: str
    deleted: bool = True


@router.get(
    "",
    summary="Alerts now: the label sets (instances) of your rules (admins: all, built-in included) that are "
    "pending or firing, each with its labels",
)
async def active_alerts(principal: Reader, runtime: RuntimeDep) -> Envelope[list[AlertOut]]:
    return ok(await runtime.alerts.alerts_now(principal))


@router.get("/rules", summary="Alert rules: yours (admins: all, built-in included), with their state")
async def list_rules(
    principal: Reader,
    runtime: RuntimeDep,
    state: Annotated[list[AlertState], Query(description="Only rules in these states.")] = [],  # noqa: B006
) -> Envelope[list[AlertRuleOut]]:
    return ok(await runtime.alerts.list_rules(principal, states=tuple(state)))


@router.post(
    "/rules",
    status_code=status.HTTP_201_CREATED,
    summary="Create an alert rule",
    description="A series and labels, a condition (threshold, rate, ratio or absence over a window), a `for` "
    "duration and a severity; optionally a webhook (its signing secret is shown once).",
)
async def create_rule(body: AlertRuleCreate, principal: Writer, runtime: RuntimeDep) -> Envelope[AlertRuleCreated]:
    return ok(await runtime.alerts.create_rule(principal, body))


@router.get("/rules/{rule_id}", summary="One alert rule and its state", responses=NOT_FOUND)
async def get_rule(rule_id: str, principal: Reader, runtime: RuntimeDep) -> Envelope[AlertRuleOut]:
    return ok(await runtime.alerts.get_rule(principal, rule_id))


@router.patch(
    "/rules/{rule_id}",
    summary="Change an alert rule (built-in ones: administrators; enabled: false switches one off)",
    responses=NOT_FOUND,
)
async def update_rule(
    rule_id: str, body: AlertRuleUpdate, principal: Writer, runtime: RuntimeDep
) -> Envelope[AlertRuleCreated]:
    return ok(await runtime.alerts.update_rule(principal, rule_id, body))


@router.delete("/rules/{rule_id}", summary="Delete an alert rule and its history", responses=NOT_FOUND)
async def delete_rule(rule_id: str, principal: Writer, runtime: RuntimeDep) -> Envelope[RuleDeleted]:
    await runtime.alerts.delete_rule(principal, rule_id)
    return ok(RuleDeleted(id=rule_id))


@router.get("/events", summary="State changes, newest first, with each notification's outcome", responses=NOT_FOUND)
async def list_events(
    principal: Reader,
    runtime: RuntimeDep,
    rule_id: Annotated[str | None, Query(max_length=40)] = None,
    to_state: Annotated[AlertState | None, Query(description="Only changes into this state.")] = None,
    since: Annotated[datetime | None, Query()] = None,
    until: Annotated[datetime | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> Envelope[AlertEventPage]:
    filters = EventFilters(rule_id=rule_id, to_state=to_state, since=since, until=until, limit=limit, cursor=cursor)
    items, next_cursor = await runtime.alerts.events(principal, filters)
    return ok(AlertEventPage(items=items, next_cursor=next_cursor))


@router.get("/silences", summary="Silences: active ones (all=true: recent ended ones too)")
async def list_silences(principal: Reader, runtime: RuntimeDep, all: bool = False) -> Envelope[list[SilenceOut]]:
    return ok(await runtime.alerts.silences(principal, active_only=not all))


@router.post(
    "/silences",
    status_code=status.HTTP_201_CREATED,
    summary="Silence a rule (or, with matchers, its instances whose labels match) until a time: states still "
    "change, notifications are held back",
    responses=NOT_FOUND,
)
async def create_silence(body: SilenceCreate, principal: Writer, runtime: RuntimeDep) -> Envelope[SilenceOut]:
    return ok(await runtime.alerts.silence(principal, body))


@router.delete("/silences/{silence_id}", summary="End a silence now", responses=NOT_FOUND)
async def end_silence(silence_id: str, principal: Writer, runtime: RuntimeDep) -> Envelope[SilenceOut]:
    return ok(await runtime.alerts.end_silence(principal, silence_id))
