"""Imports every table so ``Base.metadata`` is complete (for Alembic and test schemas)."""

from trellis.auth.models import ApiKey, User
from trellis.logs.models import EpisodicLog
from trellis.storage.base import Base

__all__ = ["ApiKey", "Base", "EpisodicLog", "User"]
