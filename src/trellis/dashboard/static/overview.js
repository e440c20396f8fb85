/* Overview: request rate, latency, errors, model calls, tokens and cost over a range, from the
   metric history every replica writes (GET /api/v1/db/metrics: counters summed across replicas,
   histograms merged before percentiles). Administrators see the system series and everyone's
   usage summed; everyone else their own usage (the service decides). Live: administrators follow
   the "dashboard" feed over /ws, where each collector sample is announced (metrics_sample) and
   alerts change state; the page refreshes on each. Without a socket it polls. */
"use strict";

(() => {
  const { api, el, fmt, lineChart, live, stamp, showError, me, refreshMs } = Trellis;
  const RANGES = { "15m": 900, "1h": 3600, "6h": 6 * 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400 };
  const rangeSelect = document.getElementById("range");
  const range = RANGES[new URLSearchParams(location.search).get("range")] ? new URLSearchParams(location.search).get("range") : "15m";
  rangeSelect.value = range;
  rangeSelect.addEventListener("change", () => rangeSelect.form.submit());
  const sampleMs = Math.max(1000, Number(document.body.dataset.sampleSeconds || 10) * 1000);
  const cards = document.getElementById("cards");
  const charts = document.getElementById("charts");
  const firing = document.getElementById("firing");

  function card(id, label) {
    const node = el("div", { class: "card stat", id }, el("span", { class: "label", text: label }), el("span", { class: "value", text: "–" }), el("span", { class: "sub small muted" }));
    cards.append(node);
    return node;
  }
  function set(node, value, sub) {
    node.querySelector(".value").textContent = value;
    node.querySelector(".sub").textContent = sub || "";
  }
  function chart(id, title) {
    const plot = el("div", { class: "plot" });
    charts.append(el("figure", { class: "card chart", id }, el("figcaption", { text: title }), plot));
    return plot;
  }

  const stat = {};
  if (me.admin) {
    stat.requests = card("stat-requests", "Requests");
    stat.errors = card("stat-errors", "Errors");
    stat.latency = card("stat-latency", "Latency p50 / p95");
  }
  stat.calls = card("stat-calls", "Model calls");
  stat.tokens = card("stat-tokens", "Tokens");
  stat.cost = card("stat-cost", "Cost");
  if (me.admin) {
    stat.cache = card("stat-cache", "Cache hit rate");
    stat.breakers = card("stat-breakers", "Breakers open");
    stat.runs = card("stat-runs", "Active runs");
  }
  const plots = {};
  if (me.admin) {
    plots.traffic = chart("chart-traffic", "Requests and errors per second");
    plots.latency = chart("chart-latency", "HTTP latency (ms)");
  }
  plots.tokens = chart("chart-tokens", "Tokens");
  plots.cost = chart("chart-cost", "Cost (USD)");
  plots.calls = chart("chart-calls", "Model calls");

  const seconds = RANGES[range];
  let failedCalls = 0; // usage.calls with status error, over the range (usage() sets it)
  let serverErrors = 0; // 5xx answers over the range (system() sets it)
  async function series(name, { fn, labels = [], groupBy } = {}) {
    const since = new Date(Date.now() - seconds * 1000).toISOString();
    return api("/api/v1/db/metrics", { params: { series: name, fn, label: labels, group_by: groupBy, since } });
  }
  const points = (result, scale = 1) => (result.lines[0] ? result.lines[0].points.filter((p) => p[1] !== null).map((p) => [p[0] * 1000, p[1] * scale]) : []);
  const summary = (result) => (result.lines[0] ? result.lines[0].summary : {});
  const total = (result, keep = () => true) => result.lines.filter(keep).reduce((sum, line) => sum + (line.summary.total || 0), 0);
  // The lines of a grouped answer added up point by point (one request instead of one per group).
  function summed(result, keep = () => true, scale = 1) {
    const byTime = new Map();
    for (const line of result.lines.filter(keep)) for (const [t, v] of line.points) if (v !== null) byTime.set(t * 1000, (byTime.get(t * 1000) || 0) + v * scale);
    return [...byTime.entries()].sort((a, b) => a[0] - b[0]);
  }

  async function usage() {
    const [calls, tokens, cost] = await Promise.all([
      series("usage.calls", { groupBy: "status" }),
      series("usage.tokens", { groupBy: "kind" }),
      series("usage.cost"),
    ]);
    const failedLine = (line) => line.labels.status === "error";
    failedCalls = total(calls, failedLine);
    set(stat.calls, fmt.int(total(calls)), `${fmt.int(failedCalls)} failed`);
    const kinds = Object.fromEntries(tokens.lines.map((line) => [line.labels.kind, line.summary.total || 0]));
    set(stat.tokens, fmt.int(total(tokens)), `${fmt.int(kinds.prompt || 0)} prompt · ${fmt.int(kinds.completion || 0)} completion`);
    set(stat.cost, fmt.money(summary(cost).total || 0), `over ${rangeSelect.selectedOptions[0].textContent}`);
    lineChart(plots.tokens, [{ name: `tokens per ${fmtStep(tokens.step)}`, cls: "s3", points: summed(tokens) }]);
    lineChart(plots.cost, [{ name: `USD per ${fmtStep(cost.step)}`, cls: "s4", points: points(cost) }]);
    lineChart(plots.calls, [
      { name: `calls per ${fmtStep(calls.step)}`, cls: "s1", points: summed(calls) },
      { name: "failed", cls: "s2", points: summed(calls, failedLine) },
    ]);
  }

  function fmtStep(step) {
    return step >= 3600 ? `${step / 3600} h` : step >= 60 ? `${step / 60} min` : `${step} s`;
  }

  async function system() {
    const [requests, p50, p95, snapshot] = await Promise.all([
      series("http.requests", { fn: "rate", groupBy: "status_class" }),
      series("http.latency", { fn: "p50" }),
      series("http.latency", { fn: "p95" }),
      api("/api/v1/metrics/system"),
    ]);
    const is5xx = (line) => line.labels.status_class === "5xx";
    const all = summed(requests);
    const current = all.length ? all[all.length - 1][1] : 0;
    set(stat.requests, `${fmt.n(current)}/s`, `${fmt.int(total(requests))} in range`);
    stat.requests.title = `${requests.instances} replica(s) wrote these samples`;
    serverErrors = total(requests, is5xx);
    const ms = (v) => (v === null || v === undefined ? null : v * 1000);
    const [a, b] = [ms(summary(p50).p50), ms(summary(p95).p95)];
    const both = a !== null && b !== null && a < 1000 && b < 1000 ? `${Math.round(a)} / ${Math.round(b)} ms` : `${fmt.ms(a)} / ${fmt.ms(b)}`;
    set(stat.latency, both, "HTTP, over the range");
    lineChart(plots.traffic, [
      { name: "requests/s", cls: "s1", points: all },
      { name: "5xx/s", cls: "s2", points: summed(requests, is5xx) },
    ]);
    lineChart(plots.latency, [
      { name: "p50", cls: "s4", points: points(p50, 1000) },
      { name: "p95", cls: "s3", points: points(p95, 1000) },
    ]);
    // This replica's own counters (the history has them too, per replica; these are instant).
    const lookups = snapshot.models.cache_hits + snapshot.models.cache_misses;
    set(stat.cache, lookups ? fmt.pct(snapshot.models.cache_hits / lookups) : "–", `${fmt.int(snapshot.models.cache_hits)} of ${fmt.int(lookups)} · this replica`);
    const open = snapshot.breakers.filter((b) => b.open);
    set(stat.breakers, String(open.length), open.map((b) => b.endpoint).join(", ") || `${snapshot.breakers.length} closed`);
    set(stat.runs, fmt.int(snapshot.workflows.active_runs), Object.entries(snapshot.workflows.runs_ended).map(([k, v]) => `${v} ${k}`).join(" · ") || "this replica");
  }

  async function alerts() {
    if (!firing) return;
    const active = await api("/api/v1/alerts");
    // One entry per label set (a rule may fire for several: a breaker per endpoint).
    const now = active.filter((alert) => alert.state === "firing");
    const named = (a) => a.rule_name + (Object.keys(a.labels).length ? ` {${Object.entries(a.labels).map(([k, v]) => `${k}=${v}`).join(", ")}}` : "");
    firing.hidden = now.length === 0;
    firing.textContent = now.length ? `${now.length} alert${now.length === 1 ? "" : "s"} firing: ${now.map(named).join(", ")}` : "";
  }

  let running = null;
  async function refresh() {
    if (running) return running;
    running = (async () => {
      try {
        await Promise.all([usage(), alerts(), me.admin ? system() : null]);
        if (me.admin) set(stat.errors, fmt.int(serverErrors + failedCalls), `${fmt.int(serverErrors)} 5xx · ${fmt.int(failedCalls)} model`);
        showError("overview-error", null);
        stamp();
      } catch (error) {
        showError("overview-error", error);
      } finally {
        running = null;
      }
    })();
    return running;
  }

  let socketLive = false;
  let lastRefresh = 0;
  function soon() {
    const wait = Math.max(0, lastRefresh + refreshMs - Date.now());
    setTimeout(() => {
      lastRefresh = Date.now();
      refresh();
    }, wait);
  }
  // Live: a collector sample (administrators) or an alert changing state means new numbers.
  const topics = me.admin ? ["dashboard"] : [`user:${me.id}`];
  live(
    topics,
    (message) => {
      if (message.event === "metrics_sample" || String(message.event).startsWith("alert_") || message.type === "gap") soon();
    },
    (state) => {
      socketLive = state === "live";
      document.getElementById("live-state").textContent = state;
    },
  );
  // Non-administrators get no sample announcements: poll at the collector's pace; everyone polls
  // (more slowly) while the socket is down.
  setInterval(() => {
    if (!me.admin || !socketLive) soon();
  }, Math.max(refreshMs, sampleMs));
  refresh();
})();
