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
"""

from __future__ import annotations

from typing import Any, ClassVar


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
