"""Per-user usage, counted in process for the collector: calls, tokens and cost by model.

The gateway hands every call record to ``UsageMeter.record`` (a dict update, on the event loop's
thread). Prometheus's registry keeps no user label on purpose (unbounded); the history keeps usage as
series owned by their user instead, which only that user (and administrators) may read.
"""

from __future__ import annotations

from collections import defaultdict

from trellis.episodic.schemas import CallRecord

# (series name, owner id, canonical labels) -> cumulative value since this process started.
UsageKey = tuple[str, str, tuple[tuple[str, str], ...]]


class UsageMeter:
    def __init__(self) -> None:
        self.totals: defaultdict[UsageKey, float] = defaultdict(float)

    def record(self, call: CallRecord) -> None:
        model = call.served_model or call.requested_model
        owner = call.owner_id
        self.totals[("usage.calls", owner, (("model", model), ("status", call.status)))] += 1
        if call.cached:
            return  # a cached answer costs no tokens
        if call.prompt_tokens:
            self.totals[("usage.tokens", owner, (("kind", "prompt"), ("model", model)))] += call.prompt_tokens
        if call.completion_tokens:
            self.totals[("usage.tokens", owner, (("kind", "completion"), ("model", model)))] += call.completion_tokens
        if call.cost:
            self.totals[("usage.cost", owner, (("model", model),))] += call.cost
