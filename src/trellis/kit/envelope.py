"""The seed's response envelope: ``{success, data, error, timestamp, request_id}``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, Field

from trellis.kit.clock import utc_timestamp
from trellis.kit.request_id import current_request_id

DataT = TypeVar("DataT")


class ErrorBody(BaseModel):
    code: str = Field(examples=["validation_error"])
    message: str
    details: dict[str, Any] = Field(default_factory=dict)


class Envelope(BaseModel, Generic[DataT]):
    success: bool
    data: DataT | None = None
    error: ErrorBody | None = None
    timestamp: str
    request_id: str | None


def _now() -> str:
    return utc_timestamp(datetime.now(UTC))


def ok(data: DataT) -> Envelope[DataT]:
    return Envelope[DataT](success=True, data=data, timestamp=_now(), request_id=current_request_id())


def failure(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    """An error envelope as a plain dict, ready for a JSONResponse."""
    return {
        "success": False,
        "data": None,
        "error": {"code": code, "message": message, "details": details or {}},
        "timestamp": _now(),
        "request_id": current_request_id(),
    }
