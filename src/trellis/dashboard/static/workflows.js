/* Workflows: your runs (GET /api/v1/workflow/history, filters in the URL, paged by cursor), kept
   live by your event feed over /ws (user:<id>; administrators also follow "dashboard", every
   user's runs starting and ending); cancel and retry (POST .../cancel, .../retry). Administrators
   see every user's runs (owner=all, or the user id typed in the Owner filter) with an owner
   column; cancel and retry are offered on their own runs only (the API refuses the others). */
"use strict";

(() => {
  const { api, el, fmt, badge, query, fillForm, pager, live, showError, me } = Trellis;
  const ACTIVE = new Set(["queued", "running", "waiting"]);
  const form = document.getElementById("run-filters");
  const tbody = document.querySelector("#run-table tbody");
  fillForm(form);

  async function act(run, action) {
    try {
      await api(`/api/v1/workflow/${encodeURIComponent(run.id)}/${action}`, { method: "POST" });
      showError("workflows-error", null);
      await load();
    } catch (error) {
      showError("workflows-error", error);
    }
  }

  function actions(run) {
    const cell = el("td", { class: "actions" });
    if (run.owner_id !== me.id) return cell; // seeing is not acting: only the owner cancels or retries
    if (ACTIVE.has(run.status) && !run.cancel_requested) cell.append(el("button", { type: "button", class: "small-button cancel", onclick: () => act(run, "cancel"), text: "Cancel" }));
    if (run.status === "failed" || run.status === "cancelled") cell.append(el("button", { type: "button", class: "small-button retry", onclick: () => act(run, "retry"), text: "Retry" }));
    return cell;
  }

  function progress(run) {
    const bar = el("div", { class: "progress" }, el("div", { class: "bar", style: null }));
    bar.firstChild.style.width = `${Math.round(run.progress * 100)}%`;
    return el("td", {}, bar, el("span", { class: "small muted", text: ` ${Math.round(run.progress * 100)}%` }));
  }

  async function load() {
    const q = query();
    try {
      const page = await api("/api/v1/workflow/history", { params: { workflow: q.workflow, status: q.status, cursor: q.cursor, limit: 25, owner: me.admin ? q.owner || "all" : undefined } });
      tbody.replaceChildren();
      if (!page.items.length) tbody.append(el("tr", {}, el("td", { colspan: me.admin ? 8 : 7, class: "muted", text: "No runs." })));
      for (const run of page.items) {
        tbody.append(
          el(
            "tr",
            { class: "run-row", "data-run": run.id, "data-status": run.status },
            el("td", {}, el("a", { href: `/dashboard/workflows/runs/${encodeURIComponent(run.id)}`, text: run.id })),
            el("td", { text: `${run.workflow} v${run.version}` }),
            el("td", {}, badge(run.status)),
            progress(run),
            el("td", { text: run.current_step || "–" }),
            me.admin ? el("td", { class: "small owner", text: run.owner_id === me.id ? `${run.owner_id} (you)` : run.owner_id }) : null,
            el("td", { class: "small", text: fmt.time(run.started_at || run.created_at) }),
            actions(run),
          ),
        );
      }
      pager(document.getElementById("pager"), page.next_cursor);
      showError("workflows-error", null);
    } catch (error) {
      showError("workflows-error", error);
    }
  }

  async function definitions() {
    const body = document.querySelector("#definition-table tbody");
    try {
      const page = await api("/api/v1/workflows", { params: { limit: 100 } });
      body.replaceChildren();
      if (!page.items.length) body.append(el("tr", {}, el("td", { colspan: 4, class: "muted", text: "No workflows saved yet." })));
      for (const w of page.items) {
        body.append(el("tr", {}, el("td", {}, el("a", { href: `/dashboard/workflows?workflow=${encodeURIComponent(w.name)}`, text: w.name })), el("td", { class: "num", text: String(w.latest_version) }), el("td", { text: w.description || "" }), el("td", { class: "small", text: fmt.time(w.updated_at) })));
      }
    } catch (error) {
      showError("workflows-error", error);
    }
  }

  let pending = null;
  function soon() {
    if (pending) return;
    pending = setTimeout(() => {
      pending = null;
      load();
    }, 250);
  }

  const feed = document.getElementById("dashboard-feed");
  const topics = [`user:${me.id}`];
  if (me.admin) topics.push("dashboard");
  live(
    topics,
    (message) => {
      if (message.type === "gap") return load();
      // The feeds carry other news too (collector samples, alerts): only runs matter here.
      if (!String(message.event).startsWith("workflow_")) return;
      if (message.topic === "dashboard" && feed) {
        const d = message.data || {};
        if (feed.firstChild && feed.firstChild.classList.contains("muted")) feed.replaceChildren();
        feed.prepend(el("li", {}, el("span", { class: "muted", text: fmt.clock(message.timestamp) + " " }), `${d.type || message.event} · ${d.run_id || ""}${d.workflow ? " · " + d.workflow : ""}${d.owner_id ? " · " + d.owner_id : ""}`));
        while (feed.children.length > 50) feed.lastChild.remove();
      }
      soon();
    },
    (state) => {
      document.getElementById("live-state").textContent = state;
    },
  );
  load();
  definitions();
})();
