"""DSPy modules and programs on the gateway (docs/dspy.md is the user's guide).

Importing this package makes DSPy and LiteLLM offline: neither fetches model metadata at import
or call time. ``LITELLM_LOCAL_MODEL_COST_MAP=True`` makes LiteLLM (when anything imports it) and
DSPy's own model-metadata loader (``dspy.clients.model_metadata``, read for capabilities and
pricing of native routes) use the snapshot they ship instead of downloading
``model_prices_and_context_window.json`` from GitHub. DSPy sets ``litellm.telemetry = False``
itself. Trellis's LMs never use DSPy's response cache (``cache=False``: the gateway caches, per
user), so DSPy's disk cache (``~/.dspy_cache``, ``DSPY_CACHEDIR``) is never created by them.
A value the operator set is kept (``setdefault``).
"""

from __future__ import annotations

import os

OFFLINE_ENVIRONMENT = {"LITELLM_LOCAL_MODEL_COST_MAP": "True"}

for _name, _value in OFFLINE_ENVIRONMENT.items():
    os.environ.setdefault(_name, _value)
