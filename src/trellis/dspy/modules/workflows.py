"""The seed's module workflows: ``task_execution`` and ``documentation_retrieval``.

``documentation_retrieval`` runs as a chain (query processing → retrieval → synthesis, the
synthesis answering from exactly the contexts retrieval found); ``task_execution`` is the seed's
set of modules for model selection, task execution and role refinement, called one by one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from trellis.dspy.registry import Stage, WorkflowSpec


def _query(inputs: Mapping[str, Any], _: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    return {
        "query": inputs["query"],
        "context": inputs.get("context", "current development session"),
        "role": inputs.get("role", "developer"),
    }


def _retrieve(inputs: Mapping[str, Any], done: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    bound: dict[str, Any] = {"query": done["query_processing"]["processed_query"]}
    for name in ("types", "limit", "follow_relationships"):
        if name in inputs:
            bound[name] = inputs[name]
    return bound


def _synthesize(inputs: Mapping[str, Any], done: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    return {
        "question": inputs["query"],
        "context_ids": [doc["id"] for doc in done["retrieval"]["documents"]],
        "synthesis_goal": inputs.get("synthesis_goal", "provide actionable guidance"),
    }


DOCUMENTATION_RETRIEVAL = WorkflowSpec(
    "Answer a question from your contexts: query processing, hybrid retrieval, synthesis with citations.",
    (
        Stage("query_processing", "documentation_query", _query),
        Stage("retrieval", "documentation_retrieval", _retrieve),
        Stage("synthesis", "context_synthesis", _synthesize),
    ),
)

TASK_EXECUTION = WorkflowSpec(
    "The seed's task execution modules: model selection, task execution, role refinement.",
    (
        Stage("model_selection", "model_switcher"),
        Stage("task_execution", "model_switcher"),
        Stage("role_refinement", "role_refinement"),
    ),
)
