/* One context (GET /api/context/{id}) and its relationship graph (GET /api/context/{id}/graph),
   drawn as SVG: the root in the middle, each level of the breadth-first walk on a ring around it.
   A radial layout by depth is what the walk gives us already; it is stable from one load to the
   next (a force layout would move nodes around) and needs no library. */
"use strict";

(() => {
  const { api, el, fmt, showError } = Trellis;
  const id = document.body.dataset.objectId;
  const SVG = "http://www.w3.org/2000/svg";
  const svg = (tag, attrs) => {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
    return node;
  };

  function fact(list, name, value) {
    list.append(el("dt", { text: name }), el("dd", {}, value));
  }

  function draw(graph) {
    const box = document.getElementById("graph");
    const list = document.getElementById("graph-list");
    box.replaceChildren();
    list.replaceChildren();
    const size = 520;
    const centre = size / 2;
    const levels = new Map();
    for (const node of graph.nodes) {
      if (!levels.has(node.depth)) levels.set(node.depth, []);
      levels.get(node.depth).push(node);
    }
    const maxDepth = Math.max(...levels.keys(), 1);
    const ring = (centre - 60) / maxDepth;
    const at = new Map();
    for (const [depth, nodes] of levels) {
      nodes.forEach((node, i) => {
        const angle = (2 * Math.PI * i) / nodes.length - Math.PI / 2 + depth * 0.4;
        const r = depth * ring;
        at.set(node.id, [centre + r * Math.cos(angle), centre + r * Math.sin(angle)]);
      });
    }
    const picture = svg("svg", { viewBox: `0 0 ${size} ${size}`, class: "graph-svg", id: "graph-svg" });
    const defs = svg("defs");
    // userSpaceOnUse: the arrowhead keeps its size whatever the edge's width (its strength).
    const marker = svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 9, markerHeight: 9, markerUnits: "userSpaceOnUse", orient: "auto-start-reverse" });
    marker.append(svg("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrow" }));
    defs.append(marker);
    picture.append(defs);
    const radius = (node) => (node.depth === 0 ? 16 : 11);
    const byId = new Map(graph.nodes.map((node) => [node.id, node]));
    const name = (nodeId) => {
      const node = byId.get(nodeId);
      return node ? fmt.short(node.content_preview, 30) : nodeId;
    };
    for (const edge of graph.edges) {
      const a = at.get(edge.source_id);
      const b = at.get(edge.target_id);
      if (!a || !b) continue;
      // The line runs from the source's rim to the target's rim, so the arrow's tip touches it.
      const [dx, dy] = [b[0] - a[0], b[1] - a[1]];
      const length = Math.hypot(dx, dy) || 1;
      const [ux, uy] = [dx / length, dy / length];
      const from = radius(byId.get(edge.source_id));
      const to = radius(byId.get(edge.target_id)) + 2;
      picture.append(svg("line", { x1: a[0] + ux * from, y1: a[1] + uy * from, x2: b[0] - ux * to, y2: b[1] - uy * to, class: "edge", "marker-end": "url(#arrow)", "stroke-width": 1 + 2 * edge.strength }));
      const label = svg("text", { x: (a[0] + b[0]) / 2 + 6 * Math.abs(uy), y: (a[1] + b[1]) / 2 - 6 * Math.abs(ux), "text-anchor": Math.abs(uy) > 0.5 ? "start" : "middle", class: "edge-label" });
      label.textContent = edge.relationship_type;
      picture.append(label);
      const item = el("li", {}, el("a", { href: `/dashboard/contexts/${encodeURIComponent(edge.source_id)}`, text: name(edge.source_id) }), ` —${edge.relationship_type} (${edge.strength})→ `, el("a", { href: `/dashboard/contexts/${encodeURIComponent(edge.target_id)}`, text: name(edge.target_id) }));
      list.append(item);
    }
    for (const node of graph.nodes) {
      const [x, y] = at.get(node.id);
      const link = svg("a", { href: `/dashboard/contexts/${encodeURIComponent(node.id)}`, class: "node-link" });
      const title = svg("title");
      title.textContent = `${node.id} (${node.type})\n${node.content_preview}`;
      link.append(title);
      link.append(svg("circle", { cx: x, cy: y, r: radius(node), class: `node depth-${Math.min(node.depth, 3)}`, "data-id": node.id }));
      const label = svg("text", { x, y: y + radius(node) + 14, "text-anchor": "middle", class: "node-label" });
      label.textContent = fmt.short(node.content_preview, 26);
      link.append(label);
      const type = svg("text", { x, y: y + radius(node) + 26, "text-anchor": "middle", class: "node-type" });
      type.textContent = node.type;
      link.append(type);
      picture.append(link);
    }
    box.append(picture);
    if (!graph.edges.length) list.append(el("li", { text: "No relationships." }));
    if (graph.truncated) list.append(el("li", { text: "The walk stopped at the node limit: not every relationship is drawn." }));
  }

  async function loadGraph() {
    const depth = document.getElementById("graph-depth").value;
    try {
      draw(await api(`/api/context/${encodeURIComponent(id)}/graph`, { params: { depth } }));
    } catch (error) {
      showError("context-error", error);
    }
  }

  api(`/api/context/${encodeURIComponent(id)}`)
    .then((context) => {
      const facts = document.getElementById("context-facts");
      fact(facts, "Type", context.type);
      fact(facts, "Version", String(context.version));
      fact(facts, "Updated", fmt.time(context.updated_at));
      fact(facts, "Created", fmt.time(context.created_at));
      if (context.source) fact(facts, "Source", context.source);
      if (Object.keys(context.metadata).length) fact(facts, "Metadata", el("code", { text: JSON.stringify(context.metadata) }));
      document.getElementById("context-content").textContent = context.content;
      return loadGraph();
    })
    .catch((error) => showError("context-error", error));
  document.getElementById("graph-depth").addEventListener("change", loadGraph);
})();
