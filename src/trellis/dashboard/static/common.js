/* Shared by every dashboard page: the REST client (session cookie + CSRF header), DOM and
   number helpers, a small SVG line chart, and the live-event socket (/ws with a ticket).

   No library: the pages need a few tables, a line chart of a few hundred points and one graph
   drawing; an SVG polyline does the chart, and nothing here needs a build step or the network.
   Everything a server sent is put in the page as text (textContent), never as HTML. */
"use strict";

const Trellis = (() => {
  const body = document.body.dataset;
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const me = { id: body.userId, admin: body.admin === "true" };
  const refreshMs = Math.max(500, Number(body.refresh || 2) * 1000);

  class ApiError extends Error {
    constructor(message, status, error) {
      super(message);
      this.status = status;
      this.error = error;
    }
  }

  function signIn() {
    location.assign("/dashboard/sign-in?next=" + encodeURIComponent(location.pathname + location.search));
  }

  /* GET or change something through the REST API; resolves to the envelope's data. */
  async function api(path, { method = "GET", params, body: payload } = {}) {
    const url = new URL(path, location.origin);
    for (const [name, value] of Object.entries(params || {})) {
      if (Array.isArray(value)) value.forEach((v) => url.searchParams.append(name, v));
      else if (value !== undefined && value !== null && value !== "") url.searchParams.set(name, value);
    }
    const headers = { Accept: "application/json" };
    if (method !== "GET") headers["X-CSRF-Token"] = csrf;
    if (payload !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(url, {
      method,
      headers,
      credentials: "same-origin",
      body: payload === undefined ? undefined : JSON.stringify(payload),
    });
    if (response.status === 401) {
      signIn();
      throw new ApiError("Your session has ended: sign in again", 401, null);
    }
    let envelope = null;
    try {
      envelope = await response.json();
    } catch (_) {
      /* not JSON: reported below */
    }
    if (!response.ok || !envelope || envelope.success !== true) {
      const error = envelope && envelope.error;
      let message = (error && error.message) || `HTTP ${response.status}`;
      const fields = error && error.details && error.details.fields;
      if (fields && fields.length) message += ": " + fields.map((f) => `${f.field}: ${f.message}`).join("; ");
      throw new ApiError(message, response.status, error);
    }
    return envelope.data;
  }

  /* el("a", {href: "/x", class: "y"}, "text", child) */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (name === "text") node.textContent = value;
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? "" : value);
    }
    for (const child of children) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function showError(id, error) {
    const box = document.getElementById(id);
    if (!box) return;
    if (!error) {
      box.hidden = true;
      box.textContent = "";
      return;
    }
    box.hidden = false;
    box.textContent = error.message || String(error);
  }

  const numberFormat = new Intl.NumberFormat(undefined, { maximumFractionDigits: 2 });
  const compactFormat = new Intl.NumberFormat(undefined, { notation: "compact", maximumFractionDigits: 1 });
  const fmt = {
    n: (v) => (v === null || v === undefined || Number.isNaN(v) ? "–" : numberFormat.format(v)),
    int: (v) => (v === null || v === undefined ? "–" : Math.round(v).toLocaleString()),
    ms: (v) => (v === null || v === undefined ? "–" : v >= 1000 ? `${(v / 1000).toFixed(v >= 10000 ? 0 : 1)} s` : `${v < 10 ? v.toFixed(1) : Math.round(v)} ms`),
    compact: (v) => compactFormat.format(v),
    money: (v) => (v === null || v === undefined ? "–" : `$${v < 0.01 && v > 0 ? v.toPrecision(2) : v.toFixed(2)}`),
    pct: (v) => (v === null || v === undefined || Number.isNaN(v) ? "–" : `${(v * 100).toFixed(1)}%`),
    time: (iso) => (iso ? new Date(iso).toLocaleString() : "–"),
    clock: (iso) => (iso ? new Date(iso).toLocaleTimeString() : "–"),
    short: (text, size = 80) => {
      const s = String(text ?? "").replace(/\s+/g, " ").trim();
      return s.length > size ? s.slice(0, size - 1) + "…" : s;
    },
  };

  function quantile(values, q) {
    if (!values.length) return null;
    const sorted = [...values].sort((a, b) => a - b);
    const pos = (sorted.length - 1) * q;
    const low = Math.floor(pos);
    const high = Math.ceil(pos);
    return sorted[low] + (sorted[high] - sorted[low]) * (pos - low);
  }

  function badge(status) {
    return el("span", { class: `badge ${status}`, text: status });
  }

  /* The page's query string as an object, and links that keep it with one value changed. */
  function query() {
    return Object.fromEntries(new URLSearchParams(location.search));
  }
  function withParams(changes) {
    const params = new URLSearchParams(location.search);
    for (const [name, value] of Object.entries(changes)) {
      if (value === null || value === undefined || value === "") params.delete(name);
      else params.set(name, value);
    }
    const text = params.toString();
    return location.pathname + (text ? "?" + text : "");
  }
  /* Fill a GET form's fields from the query string, so a filtered page shows its filter. */
  function fillForm(form) {
    const values = query();
    for (const field of form.elements) {
      if (field.name && values[field.name] !== undefined) field.value = values[field.name];
    }
  }
  function pager(nav, nextCursor) {
    nav.replaceChildren();
    if (query().cursor) nav.append(el("a", { href: withParams({ cursor: null }), text: "« First page", id: "first-page" }));
    if (nextCursor) nav.append(el("a", { href: withParams({ cursor: nextCursor }), text: "Next page »", id: "next-page" }));
  }

  /* A line chart: series = [{name, cls, points: [[epochMs, value], ...]}]. */
  const SVG = "http://www.w3.org/2000/svg";
  function svg(tag, attrs) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
    return node;
  }
  function lineChart(container, series, { unit = "", height = 160 } = {}) {
    const width = Math.max(container.clientWidth || 300, 200);
    const pad = { left: 44, right: 8, top: 8, bottom: 20 };
    const all = series.flatMap((s) => s.points);
    container.replaceChildren();
    const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, width: "100%", height, class: "line-chart" });
    if (!all.length) {
      const empty = svg("text", { x: width / 2, y: height / 2, "text-anchor": "middle", class: "empty" });
      empty.textContent = "no data yet";
      chart.append(empty);
      container.append(chart);
      return;
    }
    const t0 = Math.min(...all.map((p) => p[0]));
    const t1 = Math.max(...all.map((p) => p[0]), t0 + 1000);
    const top = Math.max(...all.map((p) => p[1]), 0) * 1.1 || 1;
    const x = (t) => pad.left + ((t - t0) / (t1 - t0)) * (width - pad.left - pad.right);
    const y = (v) => height - pad.bottom - (v / top) * (height - pad.top - pad.bottom);
    for (const frac of [0, 0.5, 1]) {
      const value = top * frac;
      chart.append(svg("line", { x1: pad.left, x2: width - pad.right, y1: y(value), y2: y(value), class: "grid" }));
      const label = svg("text", { x: pad.left - 4, y: y(value) + 4, "text-anchor": "end", class: "axis" });
      label.textContent = fmt.compact(value) + unit;
      chart.append(label);
    }
    for (const [t, anchor] of [[t0, "start"], [t1, "end"]]) {
      const label = svg("text", { x: x(t), y: height - 4, "text-anchor": anchor, class: "axis" });
      label.textContent = new Date(t).toLocaleTimeString();
      chart.append(label);
    }
    for (const s of series) {
      if (!s.points.length) continue;
      const path = s.points.map((p) => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" ");
      chart.append(svg("polyline", { points: path, class: `series ${s.cls || ""}` }));
      const last = s.points[s.points.length - 1];
      chart.append(svg("circle", { cx: x(last[0]), cy: y(last[1]), r: 2.5, class: `dot ${s.cls || ""}` }));
    }
    container.append(chart);
    const legend = el("div", { class: "legend small" });
    for (const s of series) legend.append(el("span", { class: `key ${s.cls || ""}`, text: s.name }));
    container.append(legend);
  }

  /* Live events over /ws: a single-use ticket (POST, CSRF-protected) opens the socket, then each
     topic is subscribed; on a drop, reconnect with backoff and resume from the last id seen. */
  function live(topics, onMessage, onState = () => {}) {
    const lastIds = {};
    let delay = 500;
    let socket = null;
    let stopped = false;
    async function connect() {
      if (stopped) return;
      onState("connecting…");
      let ticket;
      try {
        ticket = (await api("/api/v1/ws/ticket", { method: "POST" })).ticket;
      } catch (error) {
        onState("offline: " + error.message);
        return retry();
      }
      const scheme = location.protocol === "https:" ? "wss:" : "ws:";
      socket = new WebSocket(`${scheme}//${location.host}/ws?ticket=${encodeURIComponent(ticket)}`);
      socket.addEventListener("open", () => {
        delay = 500;
        topics.forEach((topic, i) => {
          const message = { type: "subscribe", id: `s${i}`, topic };
          if (lastIds[topic] !== undefined) message.last_id = lastIds[topic];
          socket.send(JSON.stringify(message));
        });
        onState("live");
      });
      socket.addEventListener("message", (event) => {
        let message;
        try {
          message = JSON.parse(event.data);
        } catch (_) {
          return;
        }
        if (message.topic && typeof message.id === "number") lastIds[message.topic] = message.id;
        if (message.type === "ping" || message.type === "pong" || message.type === "ack") return;
        onMessage(message);
      });
      socket.addEventListener("close", () => {
        onState("reconnecting…");
        retry();
      });
    }
    function retry() {
      if (stopped) return;
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, 15000);
    }
    connect();
    return {
      close() {
        stopped = true;
        if (socket) socket.close();
      },
    };
  }

  /* Call fn now and every refresh interval; pauses while the tab is hidden. */
  function every(fn, ms = refreshMs) {
    let timer = null;
    async function tick() {
      try {
        await fn();
      } finally {
        timer = setTimeout(tick, ms);
      }
    }
    document.addEventListener("visibilitychange", () => {
      if (document.hidden) {
        clearTimeout(timer);
        timer = null;
      } else if (timer === null) tick();
    });
    tick();
  }

  function stamp() {
    const node = document.getElementById("updated");
    if (node) node.textContent = "updated " + new Date().toLocaleTimeString();
  }

  return { api, el, fmt, quantile, badge, query, withParams, fillForm, pager, lineChart, live, every, stamp, showError, me, refreshMs };
})();
