"""What a dashboard session is to the code that serves a page or checks a request."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from trellis.auth.schemas import Principal


@dataclass(frozen=True, slots=True)
class BrowserSession:
    """A signed-in browser: who it stands for (as that credential stands now), the CSRF token its
    pages send back with every change, and when it ends."""

    principal: Principal
    csrf_token: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class SignedIn:
    """A new session: ``token`` goes into the cookie (and nowhere else)."""

    token: str
    session: BrowserSession
