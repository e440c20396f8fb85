/* The episodic log: filters in the page's URL (a GET form), passed to GET /api/v1/db/logs;
   pages by the API's keyset cursor; each row opens the call. */
"use strict";

(() => {
  const { api, el, fmt, badge, query, fillForm, pager, showError, me } = Trellis;
  const WINDOWS = { "15m": 15 * 60e3, "1h": 3600e3, "24h": 86400e3, "7d": 7 * 86400e3 };
  const form = document.getElementById("log-filters");
  const tbody = document.querySelector("#log-table tbody");
  fillForm(form);

  async function load() {
    const q = query();
    const params = { q: q.q, model: q.model, status: q.status, door: q.door, user_id: q.user_id, limit: q.limit || 50, cursor: q.cursor };
    if (WINDOWS[q.window]) params.since = new Date(Date.now() - WINDOWS[q.window]).toISOString();
    try {
      const page = await api("/api/v1/db/logs", { params });
      tbody.replaceChildren();
      if (!page.items.length) tbody.append(el("tr", {}, el("td", { colspan: 9, class: "muted", text: "No calls match." })));
      for (const call of page.items) {
        const text = call.prompt ?? (call.messages || []).map((m) => m.content).join(" ");
        tbody.append(
          el(
            "tr",
            { class: "log-row" },
            el("td", {}, el("a", { href: `/dashboard/logs/${encodeURIComponent(call.id)}`, text: fmt.time(call.created_at) })),
            el("td", { text: call.served_model || call.requested_model }),
            el("td", { text: call.door }),
            el("td", {}, badge(call.status)),
            el("td", { class: "num", text: fmt.int(call.prompt_tokens + call.completion_tokens) }),
            el("td", { class: "num", text: fmt.ms(call.latency_ms) }),
            el("td", { class: "num", text: fmt.money(call.cost) }),
            me.admin ? el("td", { class: "small", text: call.owner_id }) : null,
            el("td", { class: "text-cell", text: fmt.short(text, 90) }),
          ),
        );
      }
      pager(document.getElementById("pager"), page.next_cursor);
      showError("logs-error", null);
    } catch (error) {
      showError("logs-error", error);
    }
  }
  load();
})();
