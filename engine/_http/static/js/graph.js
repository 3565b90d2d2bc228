// A graph run (the server's built-in `graph` extension) as a picture: the graph drawn as SVG
// with the running and waiting nodes highlighted, what the run waits for with a Resume
// button, and the state after every super-step.
//
// The layout is a small layered (Sugiyama-style) one, computed here from nodes and edges:
// edges that close a cycle are found by a depth-first search from START and set aside, the
// remaining acyclic graph is layered by longest path (START on top, END alone at the
// bottom), edges longer than one layer pass through invisible waypoints that take a slot in
// each layer they cross, and a few barycenter sweeps order each layer to cut crossings.
// Back edges are drawn bowing out to the right of the boxes (a node's loop on itself to its
// left), so a loop is visible rather than hidden under the forward edge it retraces.

import { h, json, s, when } from "./dom.js";

export const RESUME_SIGNAL = "__graph_resume";

const START = "__start__";
const END = "__end__";
const CHAR = 7.6;      // width of one character of the 12.5px monospace label
const BOX_H = 34;
const PILL_H = 26;
const LAYER_GAP = 64;  // vertical space between two layers of boxes
const GAP = 36;        // horizontal space between two boxes of a layer
const WAYPOINT = 12;   // the width a long edge takes in a layer it crosses
const BOW = 56;        // how far a back edge bows out to the right
const MARGIN = 16;

function boxWidth(node) {
  const label = labelOf(node);
  return Math.max(node.kind === "start" || node.kind === "end" ? 64 : 72, label.length * CHAR + 28);
}

function labelOf(node) {
  if (node.kind === "start") return "START";
  if (node.kind === "end") return "END";
  return node.name;
}

/**
 * Positions for nodes and routes for edges.
 * Returns { width, height, boxes: Map(name -> {x, y, w, h, node}), edges: [{edge, points, back}] }
 * where (x, y) is a box's centre and points run from the source to the target.
 */
export function layoutGraph(nodes, edges) {
  const names = nodes.map((n) => n.name);
  const known = new Set(names);
  const usable = edges.filter((e) => known.has(e.source) && known.has(e.target));
  const out = new Map(names.map((n) => [n, []]));
  usable.forEach((e, index) => out.get(e.source).push(index));

  // 1. Back edges: those reaching a node still on the depth-first stack.
  const back = new Set();
  const state = new Map(); // name -> "open" | "done"
  const visit = (name) => {
    state.set(name, "open");
    for (const index of out.get(name)) {
      const target = usable[index].target;
      if (state.get(target) === "open") back.add(index);
      else if (!state.has(target)) visit(target);
    }
    state.set(name, "done");
  };
  if (known.has(START)) visit(START);
  for (const name of names) if (!state.has(name)) visit(name);

  // 2. Layers by longest path over the forward edges (Kahn's order).
  const layer = new Map(names.map((n) => [n, 0]));
  const indegree = new Map(names.map((n) => [n, 0]));
  usable.forEach((e, i) => { if (!back.has(i)) indegree.set(e.target, indegree.get(e.target) + 1); });
  const ready = names.filter((n) => indegree.get(n) === 0);
  while (ready.length) {
    const name = ready.shift();
    for (const index of out.get(name)) {
      if (back.has(index)) continue;
      const target = usable[index].target;
      layer.set(target, Math.max(layer.get(target), layer.get(name) + 1));
      indegree.set(target, indegree.get(target) - 1);
      if (indegree.get(target) === 0) ready.push(target);
    }
  }
  if (known.has(END)) {
    const deepest = Math.max(0, ...names.filter((n) => n !== END).map((n) => layer.get(n)));
    layer.set(END, deepest + 1);
  }
  if (known.has(START)) layer.set(START, 0);
  const depth = Math.max(0, ...layer.values()) + 1;

  // 3. Vertices per layer: the nodes, and a waypoint wherever an edge crosses a layer.
  const vertices = new Map(); // id -> {id, layer, w, node?}
  const rows = Array.from({ length: depth }, () => []);
  for (const node of nodes) {
    const v = { id: node.name, layer: layer.get(node.name), w: boxWidth(node), node };
    vertices.set(v.id, v);
    rows[v.layer].push(v.id);
  }
  const chains = usable.map((e, index) => {
    const from = layer.get(e.source);
    const to = layer.get(e.target);
    const chain = [e.source];
    if (e.source !== e.target) {
      const step = to > from ? 1 : -1;
      for (let l = from + step; l !== to; l += step) {
        const id = `\u0000${index}:${l}`;
        vertices.set(id, { id, layer: l, w: WAYPOINT });
        rows[l].push(id);
        chain.push(id);
      }
    }
    chain.push(e.target);
    return chain;
  });
  const above = new Map([...vertices.keys()].map((id) => [id, []]));
  const below = new Map([...vertices.keys()].map((id) => [id, []]));
  for (const chain of chains) {
    for (let i = 0; i + 1 < chain.length; i++) {
      const [a, b] = [chain[i], chain[i + 1]];
      if (a === b) continue;
      const [upper, lower] = vertices.get(a).layer < vertices.get(b).layer ? [a, b] : [b, a];
      below.get(upper).push(lower);
      above.get(lower).push(upper);
    }
  }

  // 4. Order each layer by the mean position of its neighbours, sweeping down then up.
  const position = new Map();
  const index = () => rows.forEach((row) => row.forEach((id, i) => position.set(id, i)));
  index();
  const sweep = (range, neighbours) => {
    for (const l of range) {
      const keyed = rows[l].map((id, i) => {
        const ns = neighbours.get(id);
        const key = ns.length ? ns.reduce((sum, n) => sum + position.get(n), 0) / ns.length : i;
        return { id, key, i };
      });
      keyed.sort((a, b) => a.key - b.key || a.i - b.i);
      rows[l] = keyed.map((k) => k.id);
      rows[l].forEach((id, i) => position.set(id, i));
    }
  };
  const down = [...Array(depth).keys()].slice(1);
  const up = [...Array(depth).keys()].reverse().slice(1);
  for (let round = 0; round < 3; round++) {
    sweep(down, above);
    sweep(up, below);
  }
  // Back edges climb along the right-hand side, clear of the forward edges.
  const backWaypoint = new Set(chains.flatMap((chain, i) => (back.has(i) ? chain.slice(1, -1) : [])));
  rows.forEach((row, l) => {
    rows[l] = [...row.filter((id) => !backWaypoint.has(id)), ...row.filter((id) => backWaypoint.has(id))];
  });

  // 5. Coordinates: layers top to bottom, each centred; room to the right of a box that a
  //    back edge leaves or enters, for its bow.
  //    A node looping on itself gets its loop on its left, clear of the back edges.
  const bows = new Set();
  const loops = new Set();
  usable.forEach((e, i) => {
    if (e.source === e.target) loops.add(e.source);
    else if (back.has(i)) { bows.add(e.source); bows.add(e.target); }
  });
  const before = (id, i) => (loops.has(id) && i > 0 ? BOW : 0);
  const after = (id, i, row) => (bows.has(id) && i + 1 < row.length ? BOW : 0);
  // The first loop and the last bow reach into the margins, so rows centre on their boxes.
  const rowWidth = (row) => row.reduce((sum, id, i) =>
    sum + before(id, i) + vertices.get(id).w + after(id, i, row), 0) +
    GAP * Math.max(row.length - 1, 0);
  const inner = Math.max(...rows.map(rowWidth), 0);
  const left = loops.size ? BOW : 0;
  const width = inner + 2 * MARGIN + BOW + left;
  const boxes = new Map();
  const point = new Map();
  rows.forEach((row, l) => {
    const y = MARGIN + BOX_H / 2 + l * (BOX_H + LAYER_GAP);
    let x = MARGIN + left + (inner - rowWidth(row)) / 2;
    for (const [i, id] of row.entries()) {
      const v = vertices.get(id);
      x += before(id, i);
      point.set(id, { x: x + v.w / 2, y });
      if (v.node) {
        const hgt = v.node.kind === "start" || v.node.kind === "end" ? PILL_H : BOX_H;
        boxes.set(id, { x: x + v.w / 2, y, w: v.w, h: hgt, node: v.node });
      }
      x += v.w + GAP + after(id, i, row);
    }
  });
  const height = MARGIN * 2 + depth * BOX_H + (depth - 1) * LAYER_GAP;

  // 6. Routes: forward edges from the bottom of the source to the top of the target through
  //    their waypoints; back edges from the right side of the source, up the waypoints, to
  //    the right side of the target.
  const routed = usable.map((edge, i) => {
    const chain = chains[i];
    const src = boxes.get(edge.source);
    const dst = boxes.get(edge.target);
    const isBack = back.has(i) || edge.source === edge.target;
    const middle = chain.slice(1, -1).map((id) => point.get(id));
    let points;
    if (!isBack) {
      points = [{ x: src.x, y: src.y + src.h / 2 }, ...middle, { x: dst.x, y: dst.y - dst.h / 2 }];
    } else if (edge.source === edge.target) {
      points = [{ x: src.x - src.w / 2, y: src.y + 6 }, { x: src.x - src.w / 2, y: src.y - 6 }];
    } else {
      points = [{ x: src.x + src.w / 2, y: src.y }, ...middle, { x: dst.x + dst.w / 2, y: dst.y }];
    }
    return { edge, points, back: isBack };
  });
  return { width, height, boxes, edges: routed };
}

function pathOf(route) {
  const p = route.points;
  let d = `M${p[0].x} ${p[0].y}`;
  if (route.back && route.edge.source === route.edge.target) {
    const [a, b] = p;
    return `${d} C${a.x - BOW} ${a.y + 24} ${b.x - BOW} ${b.y - 24} ${b.x} ${b.y}`;
  }
  for (let i = 0; i + 1 < p.length; i++) {
    const a = p[i];
    const b = p[i + 1];
    const dy = (b.y - a.y) / 2;
    // Forward: vertical tangents. Back: out of the source's right side and into the
    // target's, vertical through the waypoints between.
    const c1 = route.back && i === 0 ? { x: a.x + BOW, y: a.y } : { x: a.x, y: a.y + dy };
    const c2 = route.back && i + 2 === p.length ? { x: b.x + BOW, y: b.y } : { x: b.x, y: b.y - dy };
    d += ` C${c1.x} ${c1.y} ${c2.x} ${c2.y} ${b.x} ${b.y}`;
  }
  return d;
}

function labelPoint(route) {
  const p = route.points;
  if (route.edge.source === route.edge.target) {
    return { x: p[0].x - BOW * 0.75 - 4, y: p[0].y - 2, anchor: "end" };
  }
  if (route.back) {
    // Beside the bow: a cubic with both handles BOW to the right peaks at 3/4 of it.
    const [a, b] = p.length > 2 ? [p[0], p[1]] : p;
    return { x: Math.max(a.x, b.x) + (p.length > 2 ? BOW / 2 : BOW * 0.75) + 4, y: (a.y + b.y) / 2, anchor: "start" };
  }
  // Beside the middle of the edge's first leg, not on it.
  const [a, b] = p;
  return { x: (a.x + b.x) / 2 + 6, y: (a.y + b.y) / 2, anchor: "start" };
}

/** The SVG picture: `running` and `waiting` are node names, `ran` those that have run. */
export function drawGraph(view, { running = [], waiting = [], ran = new Set() } = {}) {
  const layout = layoutGraph(view.nodes, view.edges);
  const svg = s("svg", {
    class: "graph-drawing",
    id: "graph-svg",
    viewBox: `0 0 ${layout.width} ${layout.height}`,
    width: layout.width,
    height: layout.height,
    role: "img",
    "aria-label": `Graph ${view.graph}: ${view.nodes.length} nodes` +
      (waiting.length ? `, waiting in ${waiting.join(", ")}` : "") +
      (running.length ? `, running ${running.join(", ")}` : ""),
  });
  const arrow = (id, cls) => s("marker", {
    id, viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 9, markerHeight: 9,
    markerUnits: "userSpaceOnUse", orient: "auto-start-reverse", class: cls,
  }, s("path", { d: "M0 0 L10 5 L0 10 Z" }));
  svg.append(s("defs", null, arrow("graph-arrow", "arrow"), arrow("graph-arrow-back", "arrow arrow-back")));

  const edgeLayer = s("g", { class: "graph-edges" });
  const labelLayer = s("g", { class: "graph-edge-labels" });
  for (const route of layout.edges) {
    const { edge } = route;
    const classes = ["graph-edge"];
    if (edge.conditional) classes.push("edge-conditional");
    if (edge.join) classes.push("edge-join");
    if (route.back) classes.push("edge-back");
    const text = `${edge.source} → ${edge.target}` +
      (edge.conditional ? ` (conditional${edge.label ? `: ${edge.label}` : ""})` : "") +
      (edge.join ? " (join)" : "") + (route.back ? ", loops back" : "");
    edgeLayer.append(s("path", {
      d: pathOf(route),
      class: classes.join(" "),
      "marker-end": `url(#${route.back ? "graph-arrow-back" : "graph-arrow"})`,
      dataset: { source: edge.source, target: edge.target },
    }, s("title", null, text)));
    if (edge.label) {
      const at = labelPoint(route);
      labelLayer.append(s("text", { x: at.x, y: at.y + 4, class: "edge-label", "text-anchor": at.anchor }, edge.label));
    }
  }
  svg.append(edgeLayer, labelLayer);

  const running_ = new Set(running);
  const waiting_ = new Set(waiting);
  for (const [name, box] of layout.boxes) {
    const kind = box.node.kind || "node";
    const stateClass = waiting_.has(name) ? "node-waiting" : running_.has(name) ? "node-running"
      : ran.has(name) ? "node-ran" : "node-idle";
    const what = waiting_.has(name) ? "waiting" : running_.has(name) ? "running"
      : ran.has(name) ? "has run" : "not run";
    const group = s("g", {
      class: `graph-node kind-${kind} ${stateClass}`,
      dataset: { node: name, state: what },
    }, s("title", null, `${labelOf(box.node)} (${kind}): ${what}`));
    const round = kind === "start" || kind === "end" ? box.h / 2 : 6;
    group.append(s("rect", {
      x: box.x - box.w / 2, y: box.y - box.h / 2, width: box.w, height: box.h, rx: round, class: "node-box",
    }));
    if (kind === "subgraph") {
      group.append(s("rect", {
        x: box.x - box.w / 2 + 4, y: box.y - box.h / 2 + 4, width: box.w - 8, height: box.h - 8, rx: 4,
        class: "node-inner",
      }));
    }
    group.append(s("text", { x: box.x, y: box.y + 4, class: "node-label", "text-anchor": "middle" }, labelOf(box.node)));
    svg.append(group);
  }
  return svg;
}

function legendItem(kind, text) {
  return h("span", { class: "legend-item" }, h("span", { class: `swatch swatch-node-${kind}` }), text);
}

/**
 * The panel of the `graph` extension. `resume(answer, interruptId)` sends the resume signal
 * (interruptId is null when the run waits for one thing only: the answer goes to it).
 * `open` holds the step numbers of state rows expanded before a refresh.
 */
export function renderGraphExtension(view, { runOpen, resume, open = new Set() }) {
  const box = h("section", { class: "extension extension-graph", id: "graph", dataset: { extension: "graph" } });
  box.append(h("h2", null, "Graph ", h("span", { class: "mono subtitle" }, view.graph)));
  const running = view.running || [];
  const waiting = view.waiting || [];
  const waitingNodes = waiting.map((w) => w.node);
  const ran = new Set((view.states || []).flatMap((st) => st.next));
  if (view.status === "completed") ran.add(END);
  if ((view.states || []).length) ran.add(START);

  box.append(h("p", { class: "graph-status", id: "graph-status" },
    h("span", { class: `badge status-${view.status}`, dataset: { status: view.status } }, view.status.replace(/_/g, " ")),
    ` after ${view.step} super-step${view.step === 1 ? "" : "s"}`,
    running.length ? ` · running ${running.join(", ")}` : "",
    waitingNodes.length ? ` · waiting in ${waitingNodes.join(", ")}` : ""));

  if (waiting.length) box.append(waitingPanel(waiting, { runOpen, resume }));

  if (view.nodes && view.nodes.length) {
    box.append(h("div", { class: "graph-box" },
      drawGraph(view, { running, waiting: waitingNodes, ran }),
      h("div", { class: "legend", id: "graph-legend" },
        legendItem("running", "running"),
        legendItem("waiting", "waiting for an answer"),
        legendItem("ran", "has run"),
        legendItem("idle", "not run yet"),
        h("span", { class: "legend-item" }, h("span", { class: "line-sample" }), "edge"),
        h("span", { class: "legend-item" }, h("span", { class: "line-sample dashed" }), "conditional edge"),
        h("span", { class: "legend-item" }, h("span", { class: "line-sample thick" }), "join"),
        h("span", { class: "legend-item" }, h("span", { class: "line-sample back" }), "loops back"))));
  } else {
    box.append(h("p", { class: "muted" }, "The run recorded no shape for this graph."));
  }
  if (view.mermaid) {
    box.append(h("details", { class: "graph-mermaid" }, h("summary", null, "Mermaid"),
      h("pre", { class: "value" }, view.mermaid)));
  }
  box.append(statesTable(view.states || [], open));
  return box;
}

function waitingPanel(waiting, { runOpen, resume }) {
  const single = waiting.length === 1;
  const items = waiting.map((w, i) => {
    const button = h("button", {
      type: "button", class: "primary graph-resume", id: single ? "graph-resume" : `graph-resume-${i}`,
      disabled: !runOpen, dataset: { interruptId: w.id },
      title: runOpen ? `Answer ${w.node} and let the run go on` : "The run is closed",
    }, "Resume…");
    button.addEventListener("click", () => resume(w, single ? null : w.id));
    const what = w.kind === "interrupt" ? `${w.node} asks`
      : w.kind === "before" ? `paused before ${w.node}` : `paused after ${w.node}`;
    return h("div", { class: "graph-wait", dataset: { interruptId: w.id, node: w.node } },
      h("div", { class: "graph-wait-head" },
        h("strong", null, what),
        h("span", { class: "muted" }, ` (${w.kind}, id `, h("code", null, w.id), `, task `, h("code", null, w.task), ")"),
        h("span", { class: "spacer" }),
        button),
      w.value === null || w.value === undefined ? null
        : h("pre", { class: "value graph-question" }, json(w.value)));
  });
  return h("div", { class: "graph-waiting", id: "graph-waiting" },
    h("h3", null, single ? "Waiting for" : `Waiting for ${waiting.length} answers`), items);
}

function statesTable(states, open) {
  const rows = states.map((st) => h("tr", { dataset: { step: st.step, eventId: st.event_id } },
    h("td", { class: "num" }, String(st.step)),
    h("td", null, st.source),
    h("td", { class: "mono" }, st.next.length ? st.next.join(", ") : "–"),
    h("td", null, st.waiting.length ? st.waiting.map((w) => w.node).join(", ") : "–"),
    h("td", null, h("details", { open: open.has(String(st.event_id)) },
      h("summary", null, summary(st.state)),
      h("pre", { class: "value" }, json(st.state)))),
    h("td", { class: "num", title: when(st.timestamp) }, String(st.event_id))));
  return h("div", null,
    h("h3", null, `States (${states.length})`),
    h("table", { class: "grid graph-states", id: "graph-states" },
      h("thead", null, h("tr", null, ["Step", "Source", "Next", "Waiting", "State", "Event"]
        .map((t) => h("th", null, t)))),
      h("tbody", null, rows)));
}

function summary(state) {
  const keys = Object.keys(state || {});
  const text = keys.length ? `${keys.length} key${keys.length === 1 ? "" : "s"}: ${keys.join(", ")}` : "empty";
  return text.length > 80 ? text.slice(0, 79) + "…" : text;
}

/** Parse the answer typed into the Resume dialog: JSON, or an error naming what is wrong. */
export function parseAnswer(text) {
  const trimmed = text.trim();
  if (!trimmed) return { error: "the answer is empty; write a JSON value, e.g. \"yes\", true or {\"ok\": 1}" };
  try {
    return { value: JSON.parse(trimmed) };
  } catch (error) {
    return { error: `the answer is not JSON (${error.message}); a text goes in double quotes: "${trimmed.replace(/"/g, "")}"` };
  }
}
