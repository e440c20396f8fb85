"""One validated settings object for the whole service, one module per section.

``core`` holds ``Settings`` (sources: keyword arguments, ``TRELLIS_*`` variables, ``trellis.toml``)
and ``load_settings``; ``alerts``, ``auth``, ``context``, ``dashboard``, ``dspy``, ``events``, ``gateway``,
``graphql``, ``metrics``, ``workflow`` and ``ws`` hold the sections it is made of. This package imports no
domain: domains import it.
"""

from trellis.settings.alerts import AlertsSettings, BuiltinRule
from trellis.settings.auth import RateRule, Role, RouteClass
from trellis.settings.context import DEFAULT_CONTEXT_TYPES, ContextSettings
from trellis.settings.core import MIN_SECRET_BYTES, Settings, SettingsError, default_data_dir, load_settings
from trellis.settings.dashboard import DashboardSettings
from trellis.settings.dspy import DSPySettings
from trellis.settings.events import EventsSettings
from trellis.settings.gateway import GatewaySettings, ModelConfig
from trellis.settings.graphql import GraphQLSettings
from trellis.settings.metrics import MetricsSettings
from trellis.settings.workflow import WorkflowSettings
from trellis.settings.ws import WsSettings

__all__ = [
    "DEFAULT_CONTEXT_TYPES",
    "MIN_SECRET_BYTES",
    "AlertsSettings",
    "BuiltinRule",
    "ContextSettings",
    "DSPySettings",
    "DashboardSettings",
    "EventsSettings",
    "GatewaySettings",
    "GraphQLSettings",
    "MetricsSettings",
    "ModelConfig",
    "RateRule",
    "Role",
    "RouteClass",
    "Settings",
    "SettingsError",
    "WorkflowSettings",
    "WsSettings",
    "default_data_dir",
    "load_settings",
]
