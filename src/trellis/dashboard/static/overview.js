/* Overview: request rate, errors, model calls, tokens, cost and latency, refreshed live.
   Administrators: the service's counters (GET /api/v1/metrics/system), as rates between samples.
   Everyone: their model calls of the last 15 minutes from the episodic log (GET /api/v1/db/logs,
   owner-scoped by the service: an administrator sees every user's). */
"use strict";

(() => {
  const { api, el, fmt, quantile, lineChart, every, stamp, showError, me } = Trellis;
  const WINDOW_MS = 15 * 60 * 1000;
  const KEEP = 180; // samples of the counters kept for the chart
  const samples = [];

  const cards = document.getElementById("cards");
  const charts = document.getElementById("charts");

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
  }
  stat.calls = card("stat-calls", "Model calls · 15 min");
  stat.tokens = card("stat-tokens", "Tokens · 15 min");
  stat.cost = card("stat-cost", "Cost · 15 min");
  stat.latency = card("stat-latency", "Latency p50 / p95 · 15 min");
  if (me.admin) {
    stat.cache = card("stat-cache", "Cache hit rate");
    stat.breakers = card("stat-breakers", "Breakers open");
    stat.runs = card("stat-runs", "Active runs");
  }
  const plots = {};
  if (me.admin) plots.traffic = chart("chart-traffic", "Requests and errors per second");
  plots.tokens = chart("chart-tokens", "Tokens per minute");
  plots.latency = chart("chart-latency", "Latency of each model call");

  function rate(a, b, pick) {
    const seconds = (b.at - a.at) / 1000;
    return seconds > 0 ? Math.max(0, (pick(b.data) - pick(a.data)) / seconds) : 0;
  }

  async function system() {
    const data = await api("/api/v1/metrics/system");
    samples.push({ at: Date.now(), data });
    if (samples.length > KEEP) samples.shift();
    const prev = samples.length > 1 ? samples[samples.length - 2] : null;
    const last = samples[samples.length - 1];
    const http = data.http;
    const reqRate = prev ? rate(prev, last, (d) => d.http.requests) : null;
    set(stat.requests, reqRate === null ? fmt.int(http.requests) : `${fmt.n(reqRate)}/s`, `${fmt.int(http.requests)} since start`);
    const errors = http.server_errors + data.models.errors;
    set(stat.errors, fmt.int(errors), `${fmt.int(http.server_errors)} 5xx · ${fmt.int(data.models.errors)} model · ${fmt.int(http.client_errors)} 4xx · ${fmt.int(http.rate_limited)} 429`);
    const lookups = data.models.cache_hits + data.models.cache_misses;
    set(stat.cache, lookups ? fmt.pct(data.models.cache_hits / lookups) : "–", `${fmt.int(data.models.cache_hits)} of ${fmt.int(lookups)}`);
    const open = data.breakers.filter((b) => b.open);
    set(stat.breakers, String(open.length), open.map((b) => b.endpoint).join(", ") || `${data.breakers.length} closed`);
    set(stat.runs, fmt.int(data.workflows.active_runs), Object.entries(data.workflows.runs_ended).map(([k, v]) => `${v} ${k}`).join(" · "));
    const traffic = [];
    const errs = [];
    for (let i = 1; i < samples.length; i++) {
      traffic.push([samples[i].at, rate(samples[i - 1], samples[i], (d) => d.http.requests)]);
      errs.push([samples[i].at, rate(samples[i - 1], samples[i], (d) => d.http.server_errors + d.http.client_errors + d.models.errors)]);
    }
    lineChart(plots.traffic, [
      { name: "requests/s", cls: "s1", points: traffic },
      { name: "errors/s (4xx, 5xx, model)", cls: "s2", points: errs },
    ]);
  }

  async function calls() {
    const since = new Date(Date.now() - WINDOW_MS).toISOString();
    const page = await api("/api/v1/db/logs", { params: { since, limit: 200 } });
    const items = page.items;
    const partial = page.next_cursor ? " (newest 200)" : "";
    const failed = items.filter((c) => c.status !== "ok").length;
    set(stat.calls, fmt.int(items.length), `${failed} failed${partial}`);
    const prompt = items.reduce((s, c) => s + c.prompt_tokens, 0);
    const completion = items.reduce((s, c) => s + c.completion_tokens, 0);
    set(stat.tokens, fmt.int(prompt + completion), `${fmt.int(prompt)} prompt · ${fmt.int(completion)} completion`);
    set(stat.cost, fmt.money(items.reduce((s, c) => s + c.cost, 0)), `${items.filter((c) => c.cached).length} from cache`);
    const latencies = items.filter((c) => c.status === "ok").map((c) => c.latency_ms);
    set(stat.latency, latencies.length ? `${fmt.ms(quantile(latencies, 0.5))} / ${fmt.ms(quantile(latencies, 0.95))}` : "–", `${latencies.length} answered calls`);
    const buckets = new Map();
    const now = Date.now();
    for (let t = Math.floor((now - WINDOW_MS) / 60000) * 60000; t <= now; t += 60000) buckets.set(t, 0);
    for (const c of items) {
      const minute = Math.floor(Date.parse(c.created_at) / 60000) * 60000;
      if (buckets.has(minute)) buckets.set(minute, buckets.get(minute) + c.prompt_tokens + c.completion_tokens);
    }
    lineChart(plots.tokens, [{ name: "tokens per minute", cls: "s3", points: [...buckets.entries()] }]);
    const points = items.map((c) => [Date.parse(c.created_at), c.latency_ms]).sort((a, b) => a[0] - b[0]);
    lineChart(plots.latency, [{ name: "latency (ms)", cls: "s4", points }], { unit: "" });
  }

  every(async () => {
    try {
      await Promise.all([me.admin ? system() : null, calls()]);
      showError("overview-error", null);
      stamp();
    } catch (error) {
      showError("overview-error", error);
    }
  });
})();
