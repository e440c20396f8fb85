"""``[dashboard]``: the web dashboard at ``/dashboard``: whether it is served, and its sessions."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field


class DashboardSettings(BaseModel):
    """The dashboard (``[dashboard]`` in trellis.toml, ``TRELLIS_DASHBOARD__*``)."""

    model_config = ConfigDict(extra="forbid")

    # Serve /dashboard (pages, their static files, sign-in) and accept its session cookie on /api.
    enabled: bool = True
    # How long a sign-in lasts; a session also ends with its credential (key revoked or expired,
    # user disabled) and at sign-out.
    session_ttl_seconds: Annotated[int, Field(ge=60, le=30 * 86_400)] = 8 * 3600
    # The session cookie's Secure flag: "auto" sets it when the request came over https (behind a
    # proxy, trust it with trusted_proxies so X-Forwarded-Proto is believed); true or false force it.
    cookie_secure: Literal["auto", True, False] = "auto"
    # How often the overview page asks for fresh numbers (seconds).
    refresh_seconds: Annotated[float, Field(ge=0.5, le=300)] = 2.0
