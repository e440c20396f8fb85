"""Provider failures, classified by what the gateway should do about them.

ProviderError
├── ProviderUnavailable     retryable: timeout, connection error, 429, 5xx (may carry retry_after)
├── ProviderRejected        the provider refused the request (4xx): the client's fault, not retried
├── ProviderBadResponse     the provider answered garbage (invalid JSON, wrong shape): 502
└── ProviderStreamBroken    a stream was cut after it started: never retried
"""

from __future__ import annotations


class ProviderError(Exception):
    def __init__(self, message: str, *, provider: str = "", status_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.status_code = status_code


class ProviderUnavailable(ProviderError):
    def __init__(
        self, message: str, *, provider: str = "", status_code: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, provider=provider, status_code=status_code)
        self.retry_after = retry_after


class ProviderRejected(ProviderError):
    def __init__(
        self, message: str, *, provider: str = "", status_code: int | None = None, param: str | None = None
    ) -> None:
        super().__init__(message, provider=provider, status_code=status_code)
        # The request field at fault, when the provider can tell (a 400 names it).
        self.param = param


class ProviderBadResponse(ProviderError):
    pass


class ProviderStreamBroken(ProviderError):
    pass
