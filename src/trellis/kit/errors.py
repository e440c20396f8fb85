"""Domain errors. Services raise these; ``trellis.kit.handlers`` turns them into responses, once.

TrellisError
├── ValidationFailed        400 validation_error
├── AuthenticationFailed    401 authentication_error
├── PermissionDenied        403 authorization_error
├── NotFound                404 not_found_error
├── Conflict                409 conflict_error
├── PayloadTooLarge         413 payload_too_large_error
├── UnsupportedMediaType    415 unsupported_media_type_error
├── RateLimited             429 rate_limit_error
├── InternalError           500 internal_error
└── Unavailable             503 unavailable_error

Every 400 names what is wrong in ``details.fields``, a list of ``FieldError``: build it with
``ValidationFailed.of`` (one field) or ``ValidationFailed.of_fields`` (several), never by hand, so a
client gets the same shape whichever part of the product refused the request, FastAPI's own request
validation included.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal, NotRequired, TypedDict

# Where the field is: FastAPI's own names (multipart form fields are ``body``, as FastAPI has them).
Location = Literal["body", "query", "path", "header", "cookie"]


class FieldError(TypedDict):
    """One entry of a 400's ``details.fields``.

    ``field`` is the dotted path of the field (``items.1.vector``; empty for the request as a whole),
    ``type`` a machine-readable kind (FastAPI's: ``missing``, ``int_parsing``, ``json_invalid``, ...;
    the product's: ``value_error``, ``too_long``, ``unknown_model``, ...). ``position`` is the character
    offset of invalid JSON.
    """

    field: str
    message: str
    location: Location
    type: str
    position: NotRequired[int]


class TrellisError(Exception):
    code: ClassVar[str] = "internal_error"
    status_code: ClassVar[int] = 500
    default_message: ClassVar[str] = "Internal server error"

    def __init__(
        self,
        message: str | None = None,
        *,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.message = message or self.default_message
        self.details = details or {}
        self.headers = headers or {}
        super().__init__(self.message)


class ValidationFailed(TrellisError):
    code = "validation_error"
    status_code = 400
    default_message = "Invalid request parameters"

    @classmethod
    def of(
        cls,
        field: str,
        message: str,
        *,
        location: Location = "body",
        type: str = "value_error",
        summary: str | None = None,
        **details: Any,
    ) -> ValidationFailed:
        """A 400 naming one field. ``summary`` is the error's message (by default
        ``Invalid request parameters: <field>: <message>``); ``details`` are further top-level keys
        of ``details`` (``file``, ``capabilities``, ...), beside ``fields``."""
        entry = FieldError(field=field, message=message, location=location, type=type)
        return cls.of_fields([entry], summary=summary, **details)

    @classmethod
    def of_fields(cls, fields: Sequence[FieldError], *, summary: str | None = None, **details: Any) -> ValidationFailed:
        """A 400 naming several fields (at least one). The default message names them all."""
        if not fields:
            raise ValueError("a validation error names at least one field")
        if "fields" in details:
            raise TypeError("pass the fields as fields, not as a detail")
        if summary is None:
            if len(fields) == 1 and fields[0]["field"]:
                summary = f"Invalid request parameters: {fields[0]['field']}: {fields[0]['message']}"
            elif len(fields) == 1:
                summary = fields[0]["message"]
            else:
                named = ", ".join(sorted({f["field"] for f in fields if f["field"]}))
                summary = f"Invalid request parameters: {named}" if named else None
        return cls(summary, details={"fields": list(fields), **details})


class AuthenticationFailed(TrellisError):
    code = "authentication_error"
    status_code = 401
    default_message = "Authentication required"

    def __init__(self, message: str | None = None, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message, details=details, headers={"WWW-Authenticate": "Bearer"})


class PermissionDenied(TrellisError):
    code = "authorization_error"
    status_code = 403
    default_message = "Insufficient permissions"


class NotFound(TrellisError):
    code = "not_found_error"
    status_code = 404
    default_message = "Resource not found"


class Conflict(TrellisError):
    code = "conflict_error"
    status_code = 409
    default_message = "Conflict with the current state of the resource"


class PayloadTooLarge(TrellisError):
    code = "payload_too_large_error"
    status_code = 413
    default_message = "Request body too large"


class UnsupportedMediaType(TrellisError):
    code = "unsupported_media_type_error"
    status_code = 415
    default_message = "Unsupported media type"


class RateLimited(TrellisError):
    code = "rate_limit_error"
    status_code = 429
    default_message = "Rate limit exceeded"


class InternalError(TrellisError):
    pass


class Unavailable(TrellisError):
    code = "unavailable_error"
    status_code = 503
    default_message = "Service temporarily unavailable"
