"""The one table registry: imports every domain's tables so ``Base.metadata`` is complete.

Alembic's ``env.py`` and the test schemas read ``Base.metadata`` from here. This is the only module
under ``storage/`` allowed to import domains (the import-rule test names it); nothing else imports
it at run time, so a domain never learns about another through it. A new domain with tables adds
its ``models`` here.
"""

from trellis.alerts.models import AlertEvent, AlertInstance, AlertRule, AlertSilence
from trellis.auth.models import ApiKey, User, WsTicket
from trellis.context.index.models import ContextEmbedding, ContextVectorEpoch, EmbeddingState
from trellis.context.models import Context, ContextRelationship
from trellis.dashboard.models import DashboardSession
from trellis.dspy.models import DSPyDataset, DSPyProgram, DSPyProgramVersion
from trellis.episodic.models import EpisodicLog
from trellis.metrics.models import MetricHistogram, MetricSample, MetricSeries, MonitorLease
from trellis.storage.base import Base
from trellis.vectors.models import VectorCollection, VectorItem
from trellis.workflows.models import (
    N8nConnection,
    Workflow,
    WorkflowEvent,
    WorkflowHook,
    WorkflowHookDelivery,
    WorkflowRun,
    WorkflowStep,
    WorkflowVersion,
)

__all__ = [
    "AlertEvent",
    "AlertInstance",
    "AlertRule",
    "AlertSilence",
    "ApiKey",
    "Base",
    "Context",
    "ContextEmbedding",
    "ContextRelationship",
    "ContextVectorEpoch",
    "DSPyDataset",
    "DSPyProgram",
    "DSPyProgramVersion",
    "DashboardSession",
    "EmbeddingState",
    "EpisodicLog",
    "MetricHistogram",
    "MetricSample",
    "MetricSeries",
    "MonitorLease",
    "N8nConnection",
    "User",
    "VectorCollection",
    "VectorItem",
    "Workflow",
    "WorkflowEvent",
    "WorkflowHook",
    "WorkflowHookDelivery",
    "WorkflowRun",
    "WorkflowStep",
    "WorkflowVersion",
    "WsTicket",
]
