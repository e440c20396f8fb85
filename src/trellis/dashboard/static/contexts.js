/* Contexts: search (GET /api/context/search, in the mode asked: keyword, semantic or hybrid), or
   without a query the newest (GET /api/context, paged by cursor). Each row opens the context. */
"use strict";

(() => {
  const { api, el, fmt, query, fillForm, pager, showError } = Trellis;
  const form = document.getElementById("context-search");
  const tbody = document.querySelector("#context-table tbody");
  const summary = document.getElementById("contexts-summary");
  fillForm(form);

  function row(context, last) {
    return el(
      "tr",
      { class: "context-row" },
      el("td", {}, el("a", { href: `/dashboard/contexts/${encodeURIComponent(context.id)}`, text: context.id })),
      el("td", { text: context.type }),
      el("td", { class: "text-cell", text: fmt.short(context.content, 120) }),
      el("td", { class: "small", text: last }),
    );
  }

  async function load() {
    const q = query();
    try {
      tbody.replaceChildren();
      if (q.query) {
        document.getElementById("score-head").textContent = "Score";
        const result = await api("/api/context/search", { params: { query: q.query, mode: q.mode || "hybrid", type: q.type, limit: 50 } });
        const degraded = result.degraded.length ? ` · degraded: ${result.degraded.join(", ")}` : "";
        summary.textContent = `${result.items.length} hits · ${result.mode}${result.model ? " · " + result.model : ""}${degraded}`;
        for (const hit of result.items) {
          const found = Object.entries(hit.retrievers).map(([name, r]) => `${name} #${r.rank}`).join(", ");
          tbody.append(row(hit.context, `${hit.score.toFixed(4)} (${found})`));
        }
        if (!result.items.length) tbody.append(el("tr", {}, el("td", { colspan: 4, class: "muted", text: "Nothing found." })));
        pager(document.getElementById("pager"), null);
      } else {
        const page = await api("/api/context", { params: { limit: 25, cursor: q.cursor, type: q.type } });
        summary.textContent = "Newest first";
        for (const context of page.items) tbody.append(row(context, fmt.time(context.updated_at)));
        if (!page.items.length) tbody.append(el("tr", {}, el("td", { colspan: 4, class: "muted", text: "No contexts yet." })));
        pager(document.getElementById("pager"), page.next_cursor);
      }
      showError("contexts-error", null);
    } catch (error) {
      showError("contexts-error", error);
    }
  }
  load();
})();
