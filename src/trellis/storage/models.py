"""Imports every table so ``Base.metadata`` is complete (for Alembic and test schemas)."""

from trellis.auth.models import ApiKey, User
from trellis.context.models import Context, ContextEmbedding, ContextRelationship, VectorCollection, VectorItem
from trellis.logs.models import EpisodicLog
from trellis.storage.base import Base

__all__ = [
    "ApiKey",
    "Base",
    "Context",
    "ContextEmbedding",
    "ContextRelationship",
    "EpisodicLog",
    "User",
    "VectorCollection",
    "VectorItem",
]
