/* Alerts: rules with their state and their label sets' (GET /api/v1/alerts/rules), what fires now,
   one line per label set (GET /api/v1/alerts),
   silences (GET/POST/DELETE /api/v1/alerts/silences) and the history of state changes
   (GET /api/v1/alerts/events, paged by cursor); live over /ws: alert events arrive on the
   "dashboard" feed (administrators) or the owner's own feed, and the page refreshes on each. */
"use strict";

(() => {
  const { api, el, fmt, badge, query, pager, live, stamp, showError, me } = Trellis;
  const DURATIONS = [["15 min", 900], ["1 h", 3600], ["4 h", 4 * 3600], ["24 h", 86400]];
  const names = new Map();

  function labelText(labels) {
    const parts = Object.entries(labels || {}).map(([k, v]) => `${k}=${v}`);
    return parts.length ? `{${parts.join(", ")}}` : "";
  }

  function counts(rule) {
    const by = {};
    for (const i of rule.instances) by[i.state] = (by[i.state] || 0) + 1;
    return ["firing", "pending", "resolved"].filter((s) => by[s]).map((s) => `${by[s]} ${s}`).join(" · ");
  }

  function condition(rule) {
    const c = rule.condition;
    const window = `${c.window_seconds}s`;
    switch (c.type) {
      case "threshold":
        return `${c.fn || "value"} ${c.op} ${c.value} over ${window}`;
      case "rate":
        return `rate ${c.op} ${c.value}/s over ${window}`;
      case "ratio":
        return `${Object.entries(c.numerator).map(([k, v]) => `${k}=${v}`).join(",")} share ${c.op} ${c.value} over ${window}`;
      case "absence":
        return `no data for ${window}`;
      default:
        return JSON.stringify(c);
    }
  }

  async function silence(ruleId, seconds, matchers) {
    try {
      await api("/api/v1/alerts/silences", { method: "POST", body: { rule_id: ruleId, matchers: matchers || {}, duration_seconds: seconds, comment: "from the dashboard" } });
      await load();
    } catch (error) {
      showError("alerts-error", error);
    }
  }

  function silenceCell(rule) {
    const select = el("select", { "aria-label": `Silence ${rule.name} for` }, ...DURATIONS.map(([label, s]) => el("option", { value: s, text: label })));
    return el("td", { class: "actions" }, select, el("button", { type: "button", class: "small-button silence", onclick: () => silence(rule.id, Number(select.value)), text: "Silence" }));
  }

  async function rules() {
    const [all, active] = await Promise.all([api("/api/v1/alerts/rules"), api("/api/v1/alerts")]);
    const body = document.querySelector("#rule-table tbody");
    body.replaceChildren();
    for (const rule of all) {
      names.set(rule.id, rule.name);
      body.append(
        el(
          "tr",
          { "data-rule": rule.id, "data-state": rule.state, class: rule.enabled ? "" : "muted" },
          el("td", {}, el("strong", { text: rule.name }), rule.builtin ? el("div", { class: "small muted", text: "built-in" }) : null, rule.enabled ? null : el("div", { class: "small", text: "switched off" })),
          el("td", { class: "small", text: rule.series + (Object.keys(rule.labels).length ? " " + JSON.stringify(rule.labels) : "") + (rule.group_by.length ? ` by ${rule.group_by.join(", ")}` : "") }),
          el("td", { class: "small", text: condition(rule) + (rule.for_seconds ? ` for ${rule.for_seconds}s` : "") }),
          el("td", {}, badge(rule.severity)),
          el("td", {}, badge(rule.state), rule.instances.length > 0 && rule.group_by.length > 0 ? el("div", { class: "small muted", text: counts(rule) }) : null),
          el("td", { class: "num", text: rule.value === null ? "–" : fmt.n(rule.value) }),
          el("td", { class: "small", text: fmt.time(rule.state_since) }),
          el("td", { class: "small", text: rule.silenced_until ? fmt.time(rule.silenced_until) : "–" }),
          silenceCell(rule),
        ),
      );
    }
    if (!all.length) body.append(el("tr", {}, el("td", { colspan: 9, class: "muted", text: "No rules." })));
    const list = document.getElementById("active-alerts");
    list.replaceChildren();
    // One line per label set: a rule grouped by a label fires for each of its values on its own.
    for (const alert of active) {
      const quiet = alert.silenced_until ? null : el("button", { type: "button", class: "small-button silence-one", title: "Silence this label set for 1 h", onclick: () => silence(alert.rule_id, 3600, alert.labels), text: "Silence 1 h" });
      list.append(el("li", { class: `active-alert ${alert.state}`, "data-rule": alert.rule_id, "data-labels": labelText(alert.labels) }, badge(alert.state), " ", el("strong", { text: alert.rule_name }), " ", el("span", { class: "small labels", text: labelText(alert.labels) }), ` · ${alert.series} · value ${alert.value === null ? "–" : fmt.n(alert.value)} · since ${fmt.clock(alert.state_since)}`, alert.silenced_until ? el("span", { class: "small muted", text: ` · silenced until ${fmt.time(alert.silenced_until)}` }) : null, quiet ? " " : null, quiet));
    }
    if (!active.length) list.append(el("li", { class: "muted", text: "Nothing is firing." }));
  }

  async function silences() {
    const all = await api("/api/v1/alerts/silences");
    const body = document.querySelector("#silence-table tbody");
    body.replaceChildren();
    for (const s of all) {
      const end = async () => {
        try {
          await api(`/api/v1/alerts/silences/${encodeURIComponent(s.id)}`, { method: "DELETE" });
          await load();
        } catch (error) {
          showError("alerts-error", error);
        }
      };
      body.append(el("tr", { "data-silence": s.id }, el("td", { text: `${names.get(s.rule_id) || s.rule_id} ${labelText(s.matchers)}`.trim() }), el("td", { class: "small", text: fmt.time(s.ends_at) }), el("td", { class: "small", text: s.created_by }), el("td", { class: "small", text: s.comment || "" }), el("td", {}, el("button", { type: "button", class: "small-button cancel", onclick: end, text: "End" }))));
    }
    if (!all.length) body.append(el("tr", {}, el("td", { colspan: 5, class: "muted", text: "No active silences." })));
  }

  async function events() {
    const page = await api("/api/v1/alerts/events", { params: { limit: 25, cursor: query().cursor } });
    const body = document.querySelector("#event-table tbody");
    body.replaceChildren();
    for (const e of page.items) {
      body.append(el("tr", { class: "alert-event", "data-to": e.to_state }, el("td", { class: "small", text: fmt.time(e.at) }), el("td", {}, e.rule_name, Object.keys(e.labels).length ? el("div", { class: "small muted labels", text: labelText(e.labels) }) : null), el("td", {}, badge(e.from_state), " → ", badge(e.to_state)), el("td", { class: "num", text: e.value === null ? "–" : fmt.n(e.value) }), el("td", { class: "small", text: e.message }), el("td", { class: "small", text: e.notification.status + (e.notification.last_error ? `: ${e.notification.last_error}` : "") })));
    }
    if (!page.items.length) body.append(el("tr", {}, el("td", { colspan: 6, class: "muted", text: "No state changes yet." })));
    pager(document.getElementById("pager"), page.next_cursor);
  }

  async function load() {
    try {
      await rules();
      await Promise.all([silences(), events()]);
      showError("alerts-error", null);
      stamp();
    } catch (error) {
      showError("alerts-error", error);
    }
  }

  let pending = null;
  live(
    me.admin ? ["dashboard"] : [`user:${me.id}`],
    (message) => {
      if (!String(message.event).startsWith("alert_") && message.type !== "gap") return;
      if (!pending) pending = setTimeout(() => { pending = null; load(); }, 200);
    },
    (state) => {
      document.getElementById("live-state").textContent = state;
    },
  );
  // Live messages are an accelerator: the page also reads again at the evaluator's pace (15 s by
  // default), so a missed alert_* message leaves it stale for one interval at most. Not while a
  // silence duration is being chosen: a redraw would reset the choice.
  setInterval(() => {
    if (!pending && !(document.activeElement instanceof HTMLSelectElement)) load();
  }, 15000);
  load();
})();
