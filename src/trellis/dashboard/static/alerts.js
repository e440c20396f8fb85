/* Alerts: rules with their state (GET /api/v1/alerts/rules), what fires now (GET /api/v1/alerts),
   silences (GET/POST/DELETE /api/v1/alerts/silences) and the history of state changes
   (GET /api/v1/alerts/events, paged by cursor); live over /ws: alert events arrive on the
   "dashboard" feed (administrators) or the owner's own feed, and the page refreshes on each. */
"use strict";

(() => {
  const { api, el, fmt, badge, query, pager, live, stamp, showError, me } = Trellis;
  const DURATIONS = [["15 min", 900], ["1 h", 3600], ["4 h", 4 * 3600], ["24 h", 86400]];
  const names = new Map();

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

  async function silence(rule, seconds) {
    try {
      await api("/api/v1/alerts/silences", { method: "POST", body: { rule_id: rule.id, duration_seconds: seconds, comment: "from the dashboard" } });
      await load();
    } catch (error) {
      showError("alerts-error", error);
    }
  }

  function silenceCell(rule) {
    const select = el("select", { "aria-label": `Silence ${rule.name} for` }, ...DURATIONS.map(([label, s]) => el("option", { value: s, text: label })));
    return el("td", { class: "actions" }, select, el("button", { type: "button", class: "small-button silence", onclick: () => silence(rule, Number(select.value)), text: "Silence" }));
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
          el("td", { class: "small", text: rule.series + (Object.keys(rule.labels).length ? " " + JSON.stringify(rule.labels) : "") }),
          el("td", { class: "small", text: condition(rule) + (rule.for_seconds ? ` for ${rule.for_seconds}s` : "") }),
          el("td", {}, badge(rule.severity)),
          el("td", {}, badge(rule.state)),
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
    for (const rule of active) list.append(el("li", { class: `active-alert ${rule.state}`, "data-rule": rule.id }, badge(rule.state), " ", el("strong", { text: rule.name }), ` · ${rule.series} · value ${rule.value === null ? "–" : fmt.n(rule.value)} · since ${fmt.clock(rule.state_since)}`, rule.silenced_until ? el("span", { class: "small muted", text: ` · silenced until ${fmt.time(rule.silenced_until)}` }) : null));
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
      body.append(el("tr", { "data-silence": s.id }, el("td", { text: names.get(s.rule_id) || s.rule_id }), el("td", { class: "small", text: fmt.time(s.ends_at) }), el("td", { class: "small", text: s.created_by }), el("td", { class: "small", text: s.comment || "" }), el("td", {}, el("button", { type: "button", class: "small-button cancel", onclick: end, text: "End" }))));
    }
    if (!all.length) body.append(el("tr", {}, el("td", { colspan: 5, class: "muted", text: "No active silences." })));
  }

  async function events() {
    const page = await api("/api/v1/alerts/events", { params: { limit: 25, cursor: query().cursor } });
    const body = document.querySelector("#event-table tbody");
    body.replaceChildren();
    for (const e of page.items) {
      body.append(el("tr", { class: "alert-event", "data-to": e.to_state }, el("td", { class: "small", text: fmt.time(e.at) }), el("td", { text: e.rule_name }), el("td", {}, badge(e.from_state), " → ", badge(e.to_state)), el("td", { class: "num", text: e.value === null ? "–" : fmt.n(e.value) }), el("td", { class: "small", text: e.message }), el("td", { class: "small", text: e.notification.status + (e.notification.last_error ? `: ${e.notification.last_error}` : "") })));
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
  load();
})();
