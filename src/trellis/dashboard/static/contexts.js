/* Contexts: search (GET /api/context/search, in the mode asked: keyword, semantic or hybrid), or
   without a query the newest (GET /api/context, paged by cursor). Each row opens the context.
   Administrators browse every user's contexts (owner=all, or the user id in the Owner filter)
   with an owner column; search covers the caller's own contexts (each owner has their own index). */
"use strict";

(() => {
  const { api, el, fmt, query, fillForm, pager, showError, me } = Trellis;
  const columns = me.admin ? 5 : 4;
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
      me.admin ? el("td", { class: "small owner", text: context.owner_id === me.id ? `${context.owner_id} (you)` : context.owner_id }) : null,
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
        if (!result.items.length) tbody.append(el("tr", {}, el("td", { colspan: columns, class: "muted", text: "Nothing found." })));
        pager(document.getElementById("pager"), null);
      } else {
        const page = await api("/api/context", { params: { limit: 25, cursor: q.cursor, type: q.type, owner: me.admin ? q.owner || "all" : undefined } });
        summary.textContent = "Newest first";
        for (const context of page.items) tbody.append(row(context, fmt.time(context.updated_at)));
        if (!page.items.length) tbody.append(el("tr", {}, el("td", { colspan: columns, class: "muted", text: "No contexts yet." })));
        pager(document.getElementById("pager"), page.next_cursor);
      }
      showError("contexts-error", null);
    } catch (error) {
      showError("contexts-error", error);
    }
  }
  load();
})();
