"""``metrics_history.py``'s traffic and sampling loop (also used by ``tests/metrics/test_month.py``).

What is simulated: the traffic. No HTTP request is made and no model is called; each 10-second
interval the numbers a request or a model call would leave behind are put straight into the
objects the real code updates: ``HttpMetrics.observe`` (what the app's middleware calls), the
gateway's Prometheus counters and latency histogram, ``UsageMeter.record`` (what the gateway calls
with each call record), the workflow and WebSocket metrics. What is real: everything from there on:
the collector reading the registry and the usage meter, its probes, deltas, roll-ups 10 s -> 1 min
-> 1 h, batched writes to the database, and retention, driven by ``MetricsCollector.run_once`` (the
body of the production loop) at the production cadence in simulated time (the clock moves 10 s
between samples; retention runs every ``maintenance_seconds`` of it).

``Traffic`` keeps a ledger of what it put in (requests and tokens per minute) so a test can check
that the stored rows add up to it.
"""

from __future__ import annotations

import math
import random
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from trellis.episodic.schemas import CallRecord
from trellis.kit.clock import ManualClock
from trellis.kit.http_metrics import HttpMetrics
from trellis.runtime import Runtime

ROUTES = (
    "/api/v1/ai/generate",
    "/v1/chat/completions",
    "/api/context/search",
    "/api/context",
    "/api/v1/workflow/execute",
    "/api/v1/db/logs",
    "/graphql",
    "/health",
)
STATUSES = ((200, 0.9), (404, 0.04), (400, 0.03), (429, 0.02), (500, 0.01))
MODELS = ("smollm2", "remote-gpt")
USERS = ("usr_alice", "usr_bob", "usr_carol")
# The varied month: a third model, more users (some appear only later in the month), a fallback.
VARIED_MODELS = ("smollm2", "remote-gpt", "remote-mini")
VARIED_USERS = tuple(f"usr_{i:02d}" for i in range(12))
DAY = 86_400


@dataclass
class Ledger:
    """What the traffic put in, by the minute it was put in (the minute its 10-s row covers)."""

    requests: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    tokens: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    # (minute, model) -> tokens: what the grouped usage query must answer.
    tokens_by_model: dict[tuple[int, str], int] = field(default_factory=lambda: defaultdict(int))


class Traffic:
    """One interval of traffic at a time, recorded where the real code records it.

    ``varied=False`` is the day ``metrics_history.py`` has always simulated (a daily sine of load,
    three users on two models). ``varied=True`` is for a real month: weekends at half load, load
    growing 1% a day, on about one day in three an incident hour (latency x5, 5xx at 10%, the
    remote model's breaker open, retries and fallbacks), twelve users of whom user N starts on day
    N, three models.
    """

    def __init__(
        self, runtime: Runtime, http: HttpMetrics, seed: int = 16, *, varied: bool = False, ledger: bool = False
    ) -> None:
        self.runtime = runtime
        self.http = http
        self.rng = random.Random(seed)
        self.varied = varied
        self.ledger = Ledger() if ledger else None
        self._incidents: dict[int, int | None] = {}

    def _incident_hour(self, day: int) -> int | None:
        if day not in self._incidents:
            rng = random.Random(day * 7919 + 16)
            self._incidents[day] = rng.randrange(24) if rng.random() < 0.35 else None
        return self._incidents[day]

    def interval(self, second_of_month: int, at: int) -> None:
        """The traffic of the interval that starts ``second_of_month`` into the run, at Unix ``at``."""
        rng = self.rng
        # Busier by day than by night.
        load = 0.5 + 0.5 * math.sin(2 * math.pi * (second_of_month % DAY) / DAY)
        incident = False
        day = second_of_month // DAY
        if self.varied:
            weekday = (at // DAY + 3) % 7  # 1970-01-01 was a Thursday: 5, 6 are Saturday, Sunday
            load *= (0.5 if weekday >= 5 else 1.0) * (1 + 0.01 * day)
            incident = self._incident_hour(day) == (second_of_month % DAY) // 3600
        minute = at // 60 * 60
        statuses = [s for s, _ in STATUSES]
        weights = [0.8, 0.04, 0.03, 0.03, 0.1] if incident else [w for _, w in STATUSES]
        latency_mu = -4.5 + (1.6 if incident else 0.0)
        requests = int(20 + 40 * load)
        for _ in range(requests):
            route = rng.choice(ROUTES)
            status = rng.choices(statuses, weights)[0]
            self.http.observe("POST", route, status, rng.lognormvariate(latency_mu, 1.0))
        gateway = self.runtime.gateway.metrics
        models, users = (VARIED_MODELS, VARIED_USERS[: min(3 + day, 12)]) if self.varied else (MODELS, USERS)
        calls = rng.randint(0, 3) if not self.varied else rng.randint(0, max(1, round(4 * load)))
        tokens = 0
        for _ in range(calls):
            model = rng.choice(models)
            user = rng.choice(users)
            prompt, completion = rng.randint(20, 400), rng.randint(5, 200)
            status = "error" if incident and model != "smollm2" and rng.random() < 0.2 else "ok"
            gateway.requests.labels(model, "openai", "rest", status).inc()
            gateway.tokens.labels(model, "prompt").inc(prompt)
            gateway.tokens.labels(model, "completion").inc(completion)
            gateway.latency.labels(model, "openai").observe(rng.lognormvariate(1.2 if incident else 0, 0.7))
            gateway.cache.labels(rng.choice(("miss", "miss", "hit_l1"))).inc()
            if self.varied and incident and model != "smollm2":
                gateway.retries.labels("openai").inc()
                if status == "error":
                    gateway.fallbacks.labels(model, "smollm2").inc()
            self.runtime.monitoring.usage.record(
                CallRecord(
                    owner_id=user,
                    door="rest",
                    requested_model=model,
                    served_model=model,
                    status=status,
                    prompt_tokens=prompt,
                    completion_tokens=completion,
                    cost=(prompt + 2 * completion) / 1e6,
                )
            )
            tokens += prompt + completion
            if self.ledger is not None:
                self.ledger.tokens_by_model[(minute, model)] += prompt + completion
        if self.ledger is not None:
            self.ledger.requests[minute] += requests
            self.ledger.tokens[minute] += tokens
        if rng.random() < 0.05:
            self.runtime.live_metrics.ws_connections.set(rng.randint(0, max(1, int(40 * load))))
        if self.varied:
            workflow = self.runtime.workflow_parts.metrics
            for _ in range(rng.randint(0, 2)):
                workflow.runs.labels(rng.choice(("succeeded", "succeeded", "succeeded", "failed"))).inc()
            if rng.random() < 0.1:
                workflow.active.set(rng.randint(0, 4))
            gateway.breaker_state.labels("openai:http://remote").set(1 if incident else 0)
        elif rng.random() < 0.001:
            gateway.breaker_state.labels("openai:http://remote").set(rng.choice((0, 1)))


@dataclass
class LoopCost:
    """CPU (process time: all threads, aiosqlite's included) and wall time of the sampling loop."""

    samples: int = 0
    wall_seconds: float = 0.0
    traffic_cpu: float = 0.0  # making the traffic: not the collector's
    loop_cpu: float = 0.0  # run_once: sampling and retention
    sample_cpu: float = 0.0  # of which sampling (the collector's own count)
    maintained_at: list[int] = field(default_factory=list)  # Unix seconds of each retention run


OnDay = Callable[[int, LoopCost], Awaitable[None]]


async def live_through(
    runtime: Runtime,
    clock: ManualClock,
    traffic: Traffic,
    samples: int,
    *,
    on_day: OnDay | None = None,
    cost: LoopCost | None = None,
) -> LoopCost:
    """``samples`` intervals: the traffic of each, the clock moved to its end, one turn of the
    collector's loop (sample; retention when its time has come). Raises if a sample or retention
    failed (``run_once`` logs and goes on, as in production; here it would falsify the numbers)."""
    collector = runtime.monitoring.collector
    interval = collector.interval
    cost = cost or LoopCost()
    per_day = DAY // interval
    start = int(clock.now().timestamp())
    errors = collector.stats.errors
    sampled_before = collector.stats.samples - cost.samples
    maintenance_runs = collector.stats.maintenance_runs
    began = time.perf_counter()
    for i in range(samples):
        cpu = time.process_time()
        traffic.interval(i * interval, start + i * interval)
        clock.advance(interval)
        between = time.process_time()
        sampled = collector.stats.cpu_seconds
        runs = collector.stats.maintenance_runs
        await collector.run_once()
        cost.loop_cpu += time.process_time() - between
        cost.traffic_cpu += between - cpu
        cost.sample_cpu += collector.stats.cpu_seconds - sampled
        cost.samples += 1
        if collector.stats.maintenance_runs != runs:
            cost.maintained_at.append(int(clock.now().timestamp()))
        if collector.stats.errors != errors or collector.stats.samples - sampled_before != cost.samples:
            raise RuntimeError(f"the collector failed a sample at simulated second {i * interval}")
        if on_day is not None and (i + 1) % per_day == 0:
            cost.wall_seconds = time.perf_counter() - began
            await on_day((i + 1) // per_day, cost)
    cost.wall_seconds = time.perf_counter() - began
    # Retention runs every maintenance_seconds of simulated time; one that failed is not counted.
    expected = samples * interval // collector.settings.maintenance_seconds
    if collector.stats.maintenance_runs - maintenance_runs < expected:
        raise RuntimeError(f"retention ran {collector.stats.maintenance_runs - maintenance_runs} times, not {expected}")
    return cost
