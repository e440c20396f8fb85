/* Models: each configured model's health and breaker (GET /api/v1/ai/models), with latency,
   errors and fallbacks over the newest calls in the episodic log (GET /api/v1/db/logs). */
"use strict";

(() => {
  const { api, el, fmt, quantile, badge, every, stamp, showError } = Trellis;
  const tbody = document.querySelector("#models-table tbody");

  async function refresh() {
    const [models, page] = await Promise.all([api("/api/v1/ai/models"), api("/api/v1/db/logs", { params: { limit: 200 } })]);
    const byModel = new Map();
    for (const call of page.items) {
      const name = call.served_model || call.requested_model;
      if (!byModel.has(name)) byModel.set(name, []);
      byModel.get(name).push(call);
    }
    tbody.replaceChildren();
    for (const model of models) {
      const calls = [model.name, ...model.aliases].flatMap((n) => byModel.get(n) || []);
      const ok = calls.filter((c) => c.status === "ok").map((c) => c.latency_ms);
      const errors = calls.filter((c) => c.status === "error").length;
      const fallbacksTaken = page.items.filter((c) => c.fallback_from === model.name).length;
      tbody.append(
        el(
          "tr",
          { "data-model": model.name },
          el("td", {}, el("strong", { text: model.name }), model.aliases.length ? el("div", { class: "small muted", text: "aliases: " + model.aliases.join(", ") }) : null),
          el("td", {}, model.provider, el("div", { class: "small muted", text: model.model_id })),
          el("td", {}, badge(model.healthy ? "healthy" : "unhealthy")),
          el("td", {}, badge(model.breaker)),
          el("td", { class: "num", text: fmt.int(calls.length) }),
          el("td", { class: "num", text: ok.length ? fmt.ms(quantile(ok, 0.5)) : "–" }),
          el("td", { class: "num", text: ok.length ? fmt.ms(quantile(ok, 0.95)) : "–" }),
          el("td", { class: "num", text: fmt.int(errors) }),
          el("td", {}, model.fallbacks.length ? "→ " + model.fallbacks.join(" → ") : el("span", { class: "muted", text: "none" }), fallbacksTaken ? el("div", { class: "small", text: `taken ${fallbacksTaken}×` }) : null),
          el("td", { class: "small", text: model.capabilities.join(", ") }),
          el("td", { class: "small num", text: `${fmt.n(model.price_per_1k_input)} · ${fmt.n(model.price_per_1k_output)}` }),
        ),
      );
    }
  }

  every(async () => {
    try {
      await refresh();
      showError("models-error", null);
      stamp();
    } catch (error) {
      showError("models-error", error);
    }
  }, Math.max(Trellis.refreshMs, 5000));
})();
