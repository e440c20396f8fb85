/* One run: its status and steps (GET /api/v1/workflow/status/{id}), its events live over /ws
   (run:<id>, replayed from the database first, so nothing is missed), cancel and retry. */
"use strict";

(() => {
  const { api, el, fmt, badge, live, showError, me } = Trellis;
  const id = document.body.dataset.objectId;
  const ACTIVE = new Set(["queued", "running", "waiting"]);

  async function act(action) {
    try {
      await api(`/api/v1/workflow/${encodeURIComponent(id)}/${action}`, { method: "POST" });
      showError("run-error", null);
      await load();
    } catch (error) {
      showError("run-error", error);
    }
  }

  async function load() {
    try {
      const run = await api(`/api/v1/workflow/status/${encodeURIComponent(id)}`);
      const facts = document.getElementById("run-facts");
      facts.replaceChildren();
      const fact = (name, value) => facts.append(el("dt", { text: name }), el("dd", {}, value));
      fact("Workflow", `${run.workflow} v${run.version}`);
      fact("Status", badge(run.status));
      fact("Current step", run.current_step || "–");
      fact("Created", fmt.time(run.created_at));
      fact("Finished", fmt.time(run.finished_at));
      if (run.error) fact("Error", el("code", { text: run.error.message || JSON.stringify(run.error) }));
      if (run.result !== null && run.result !== undefined) fact("Result", el("code", { text: fmt.short(JSON.stringify(run.result), 300) }));
      document.querySelector("#run-progress .bar").style.width = `${Math.round(run.progress * 100)}%`;
      const actions = document.getElementById("run-actions");
      actions.replaceChildren();
      fact("Owner", run.owner_id === me.id ? `${run.owner_id} (you)` : run.owner_id);
      const mine = run.owner_id === me.id; // an administrator looking at another's run: no actions
      if (mine && ACTIVE.has(run.status) && !run.cancel_requested) actions.append(el("button", { type: "button", id: "cancel-run", onclick: () => act("cancel"), text: "Cancel run" }));
      if (mine && (run.status === "failed" || run.status === "cancelled")) actions.append(el("button", { type: "button", id: "retry-run", onclick: () => act("retry"), text: "Retry run" }));
      const steps = document.querySelector("#step-table tbody");
      steps.replaceChildren();
      for (const step of run.steps) {
        steps.append(el("tr", { "data-step": step.key }, el("td", { text: step.key }), el("td", {}, badge(step.status)), el("td", { class: "num", text: String(step.attempt) }), el("td", { class: "small", text: fmt.clock(step.started_at) }), el("td", { class: "small", text: fmt.clock(step.finished_at) }), el("td", { class: "small", text: step.error ? step.error.message || JSON.stringify(step.error) : "" })));
      }
      showError("run-error", null);
    } catch (error) {
      showError("run-error", error);
    }
  }

  let pending = null;
  const events = document.getElementById("run-events");
  live(
    [`run:${id}`],
    (message) => {
      const d = message.data || {};
      if (message.type !== "gap") events.append(el("li", {}, el("span", { class: "muted", text: fmt.clock(d.at || message.timestamp) + " " }), `${d.type || message.event}${d.step ? " · " + d.step : ""}`));
      if (!pending) pending = setTimeout(() => { pending = null; load(); }, 200);
    },
    (state) => {
      document.getElementById("live-state").textContent = state;
    },
  );
  load();
})();
