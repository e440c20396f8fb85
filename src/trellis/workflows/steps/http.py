"""``http.request``: call a URL, through the SSRF guard (``trellis.kit.outbound``): the host must
resolve to public addresses on every redirect hop unless the operator allows it
(``[workflow] outbound_allow``); the response is capped in size and time.

    - id: fetch
      type: http.request
      with: {url: "https://api.example.com/items/{{ input.id }}", method: GET}

Output: ``{status, headers, body}`` (``body`` parsed as JSON when the response says JSON, else
text). A 5xx, 408 or 429 is a retryable failure; another status outside ``ok_status`` (default
200-399) fails without retry. Every request carries ``Idempotency-Key`` (run, step, attempt).
"""

from __future__ import annotations

import json
from typing import Annotated, Any, ClassVar, Literal

import httpx
from pydantic import Field

from trellis.kit.errors import TrellisError
from trellis.workflows.steps.base import StepConfig, StepContext, StepFailed, failed_from

KEPT_HEADERS = ("content-type", "content-length", "location", "etag", "last-modified", "retry-after")


class HttpConfig(StepConfig):
    url: Annotated[str, Field(min_length=1, max_length=8192)]
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"] = "GET"
    headers: dict[str, str] = Field(default_factory=dict)
    json_body: Any = Field(default=None, alias="json")
    body: str | None = None
    ok_status: list[Annotated[int, Field(ge=100, le=599)]] | None = None


class HttpRequestStep:
    name: ClassVar[str] = "http.request"
    Config: ClassVar[type[StepConfig]] = HttpConfig
    side_effects: ClassVar[bool] = True
    description: ClassVar[str] = "Call an HTTP(S) URL (public addresses only unless allowed)."

    async def run(self, ctx: StepContext, config: HttpConfig) -> Any:
        headers = {"Idempotency-Key": ctx.idempotency_key, **config.headers}
        content: bytes | None = None
        if config.json_body is not None:
            content = json.dumps(config.json_body).encode()
            headers.setdefault("Content-Type", "application/json")
        elif config.body is not None:
            content = config.body.encode()
        try:
            response = await ctx.services.outbound.request(config.method, config.url, headers=headers, content=content)
        except TrellisError as exc:
            raise failed_from(exc) from None
        except httpx.TimeoutException:
            raise StepFailed(f"{config.method} {config.url}: timed out", details={"code": "timeout"}) from None
        except httpx.HTTPError as exc:
            raise StepFailed(f"{config.method} {config.url}: {type(exc).__name__}: {exc}") from None
        status = response.status_code
        body: Any = response.text
        if "json" in response.headers.get("content-type", ""):
            try:
                body = response.json()
            except ValueError:
                body = response.text
        out = {
            "status": status,
            "headers": {k: v for k, v in response.headers.items() if k.lower() in KEPT_HEADERS},
            "body": body,
        }
        ok = status in config.ok_status if config.ok_status is not None else 200 <= status < 400
        if not ok:
            retryable = status >= 500 or status in (408, 429)
            raise StepFailed(
                f"{config.method} {config.url} answered {status}", retryable=retryable, details={"response": out}
            )
        return out
