/* One model call: GET /api/v1/db/logs/{id} (another user's is a 404, as on every door). */
"use strict";

(() => {
  const { api, el, fmt, badge, showError } = Trellis;
  const id = document.body.dataset.objectId;

  function fact(list, name, value) {
    list.append(el("dt", { text: name }), el("dd", {}, value));
  }

  api(`/api/v1/db/logs/${encodeURIComponent(id)}`)
    .then((call) => {
      const facts = document.getElementById("log-facts");
      fact(facts, "When", fmt.time(call.created_at));
      fact(facts, "Status", badge(call.status));
      fact(facts, "Model", `${call.requested_model}${call.served_model && call.served_model !== call.requested_model ? " → " + call.served_model : ""}`);
      fact(facts, "Provider", call.provider || "–");
      fact(facts, "Door", call.door);
      fact(facts, "Tokens", `${call.prompt_tokens} prompt + ${call.completion_tokens} completion`);
      fact(facts, "Latency", `${fmt.ms(call.latency_ms)}${call.ttft_ms !== null ? ` (first token ${fmt.ms(call.ttft_ms)})` : ""}`);
      fact(facts, "Cost", fmt.money(call.cost));
      fact(facts, "Cached", call.cached ? "yes" : "no");
      fact(facts, "Attempts", String(call.attempts));
      if (call.fallback_from) fact(facts, "Fallback from", call.fallback_from);
      if (call.finish_reason) fact(facts, "Finish reason", call.finish_reason);
      if (call.request_id) fact(facts, "Request id", call.request_id);
      fact(facts, "User", call.owner_id);
      const texts = document.getElementById("log-texts");
      if (call.error) texts.append(el("h2", { text: "Error" }), el("pre", { class: "text error", text: call.error }));
      if (call.prompt !== null) texts.append(el("h2", { text: "Prompt" }), el("pre", { class: "text", text: call.prompt }));
      if (call.messages) {
        texts.append(el("h2", { text: "Messages" }));
        for (const m of call.messages) texts.append(el("div", { class: "message" }, el("strong", { text: m.role }), el("pre", { class: "text", text: typeof m.content === "string" ? m.content : JSON.stringify(m.content, null, 2) })));
      }
      if (call.response !== null) texts.append(el("h2", { text: "Response" }), el("pre", { class: "text", id: "log-response", text: call.response }));
    })
    .catch((error) => showError("log-error", error));
})();
