"""``[rate_limits]`` and the roles they are keyed by: who may do how much, per class of route."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, Field


class Role(StrEnum):
    ADMIN = "admin"
    DEVELOPER = "developer"
    VIEWER = "viewer"


class RouteClass(StrEnum):
    """Budgets are kept separately per class of route, so AI calls cannot starve the rest."""

    DEFAULT = "default"
    AI = "ai"


class RateRule(BaseModel):
    """A bucket of ``capacity`` requests that refills completely every ``period_seconds``."""

    capacity: Annotated[int, Field(gt=0, le=1_000_000)]
    period_seconds: Annotated[float, Field(gt=0, le=86_400 * 7)]


def default_rate_limits() -> dict[Role, dict[RouteClass, RateRule]]:
    return {
        Role.ADMIN: {
            RouteClass.DEFAULT: RateRule(capacity=1200, period_seconds=60),
            RouteClass.AI: RateRule(capacity=300, period_seconds=60),
        },
        Role.DEVELOPER: {
            RouteClass.DEFAULT: RateRule(capacity=600, period_seconds=60),
            RouteClass.AI: RateRule(capacity=120, period_seconds=60),
        },
        Role.VIEWER: {
            RouteClass.DEFAULT: RateRule(capacity=300, period_seconds=60),
            RouteClass.AI: RateRule(capacity=30, period_seconds=60),
        },
    }
