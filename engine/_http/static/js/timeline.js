// The run's timeline as an SVG picture: one row per activity (each attempt a bar, the wait
// before a retry dotted), timer and child run; signals, cancel requests and failed workflow
// tasks as marks on an "events" lane; a time axis in offsets from the run's start.

import { duration, h, link, s } from "./dom.js";

const ROW = 26;
const BAR = 14;
const LABEL = 210;
const WIDTH = 1000;
const AXIS = 28;
const RIGHT = 70;

const FILL = {
  completed: "var(--ok)",
  fired: "var(--timer)",
  failed: "var(--fail)",
  "timed out": "var(--warn)",
  cancelled: "var(--muted)",
  running: "var(--run)",
  waiting: "var(--timer)",
  retrying: "var(--warn)",
  terminated: "var(--fail)",
  "timed_out": "var(--warn)",
};

function niceStep(span, count) {
  const raw = span / count;
  const units = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60,
    120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400, 172800, 604800];
  return units.find((u) => u >= raw) || raw;
}

function title(text) {
  return s("title", null, text);
}

export function renderTimeline(timeline) {
  const steps = timeline.steps;
  const span = Math.max(timeline.span, 0.001);
  const chart = WIDTH - LABEL - RIGHT;
  const x = (offset) => LABEL + Math.min(Math.max(offset, 0), span) / span * chart;
  const rows = steps.length + 1;
  const height = AXIS + rows * ROW + 8;
  const svg = s("svg", {
    class: "timeline",
    id: "timeline",
    viewBox: `0 0 ${WIDTH} ${height}`,
    role: "img",
    "aria-label": `Timeline of ${timeline.workflow_id}: ${steps.length} steps`,
  });
  const defs = s("defs", null,
    s("pattern", { id: "hatch", width: 6, height: 6, patternUnits: "userSpaceOnUse",
      patternTransform: "rotate(45)" },
    s("rect", { width: 6, height: 6, fill: "var(--timer-bg)" }),
    s("line", { x1: 0, y1: 0, x2: 0, y2: 6, stroke: "var(--timer)", "stroke-width": 2 })),
    s("pattern", { id: "stripes", width: 8, height: 8, patternUnits: "userSpaceOnUse",
      patternTransform: "rotate(45)" },
    s("rect", { width: 8, height: 8, fill: "var(--run)" }),
    s("line", { x1: 0, y1: 0, x2: 0, y2: 8, stroke: "var(--run-light)", "stroke-width": 4 })));
  svg.append(defs);

  // Axis and grid.
  const step = niceStep(span, 6);
  for (let t = 0; t <= span + 1e-9; t += step) {
    const px = x(t);
    svg.append(
      s("line", { x1: px, y1: AXIS - 6, x2: px, y2: height - 4, class: "grid-line" }),
      s("text", { x: px, y: AXIS - 10, class: "axis-label", "text-anchor": "middle" }, `+${duration(t)}`));
  }

  // Events lane.
  const laneY = AXIS;
  svg.append(
    s("rect", { x: 0, y: laneY, width: WIDTH, height: ROW, class: "row-even" }),
    s("text", { x: 6, y: laneY + ROW / 2 + 4, class: "row-label" }, "events"));
  for (const marker of timeline.markers) {
    const cx = x(marker.offset);
    const cy = laneY + ROW / 2;
    let shape;
    if (marker.kind === "signal") {
      shape = s("path", { d: `M${cx} ${cy - 6} L${cx + 6} ${cy} L${cx} ${cy + 6} L${cx - 6} ${cy} Z`,
        class: "marker marker-signal" });
    } else if (marker.kind === "cancel_requested") {
      shape = s("rect", { x: cx - 5, y: cy - 5, width: 10, height: 10, class: "marker marker-cancel" });
    } else if (marker.kind === "task_failed") {
      shape = s("path", { d: `M${cx} ${cy - 6} L${cx + 6} ${cy + 5} L${cx - 6} ${cy + 5} Z`,
        class: "marker marker-task-failed" });
    } else {
      shape = s("line", { x1: cx, y1: AXIS, x2: cx, y2: height - 4, class: "marker-close" });
    }
    svg.append(s("g", { class: `mark mark-${marker.kind}`, dataset: { eventId: marker.event_id } },
      shape, title(`event ${marker.event_id} at +${duration(marker.offset)}: ${marker.label}`)));
  }

  // One row per step.
  steps.forEach((step, index) => {
    const top = AXIS + (index + 1) * ROW;
    const mid = top + ROW / 2;
    const barTop = mid - BAR / 2;
    const group = s("g", { class: `step step-${step.kind}`, dataset: { seq: step.seq, kind: step.kind } });
    group.append(s("rect", { x: 0, y: top, width: WIDTH, height: ROW, class: index % 2 ? "row-even" : "row-odd" }));
    const label = s("text", { x: 6, y: mid + 4, class: "row-label" }, truncate(step.label, 30));
    if (step.kind === "child" && step.child_workflow_id) {
      const anchor = s("a", { href: link(step.child_workflow_id) }, label);
      group.append(anchor);
    } else {
      group.append(label);
    }
    const endOf = (value) => (value === null || value === undefined ? span : value);
    if (step.kind === "activity") {
      let lastEnd = null;
      for (const attempt of step.attempts) {
        if (lastEnd !== null && attempt.start > lastEnd) {
          group.append(s("line", { x1: x(lastEnd), y1: mid, x2: x(attempt.start), y2: mid, class: "retry-wait" }));
        }
        const x0 = x(attempt.start);
        group.append(s("rect", {
          x: x0, y: barTop, width: Math.max(x(attempt.end) - x0, 2), height: BAR, rx: 2,
          fill: FILL[attempt.outcome] || "var(--muted)", class: `attempt attempt-${attempt.outcome.replace(/ /g, "-")}`,
        }, title(`${step.label} attempt ${attempt.number}: ${attempt.outcome} ` +
          `(+${duration(attempt.start)} → +${duration(attempt.end)})` +
          (attempt.detail ? `\n${attempt.detail}` : "") +
          (attempt.retry_at !== null ? `\nretry at +${duration(attempt.retry_at)}` : ""))));
        lastEnd = attempt.retry_at !== null ? attempt.retry_at : attempt.end;
        if (attempt.retry_at !== null) {
          group.append(s("line", { x1: x(attempt.end), y1: mid, x2: x(attempt.retry_at), y2: mid, class: "retry-wait" }));
        }
      }
      if (step.end === null) {
        const from = step.attempts.length ? (lastEnd ?? step.start) : step.start;
        if (step.outcome === "running") {
          const x0 = x(from);
          group.append(s("rect", {
            x: x0, y: barTop, width: Math.max(x(span) - x0, 3), height: BAR, rx: 2, fill: "url(#stripes)",
            class: "attempt attempt-open",
          }, title(`${step.label}: attempt ${step.attempts.length + 1} in flight since +${duration(from)}`)));
        }
      }
    } else {
      const x0 = x(step.start);
      const x1 = x(endOf(step.end));
      const fill = step.kind === "timer" ? "url(#hatch)" : (FILL[step.outcome] || "var(--child)");
      group.append(s("rect", {
        x: x0, y: barTop, width: Math.max(x1 - x0, 2), height: BAR, rx: 2, fill,
        class: step.kind === "child" ? `child child-${step.outcome.replace(/ /g, "-")}` : "timer-bar",
      }, title(`${step.label} (${step.call}): ${step.outcome}, +${duration(step.start)} → ` +
        (step.end === null ? (step.due !== null ? `due +${duration(step.due)}` : "open") : `+${duration(step.end)}`) +
        (step.result ? `\n${step.result}` : ""))));
      if (step.end === null && step.due !== null && step.due > span) {
        group.append(s("text", { x: x(span) + 4, y: mid + 4, class: "axis-label" }, `due +${duration(step.due)}`));
      }
    }
    const text = step.end !== null ? `${step.outcome}` : step.outcome;
    group.append(s("text", { x: WIDTH - RIGHT + 6, y: mid + 4, class: "row-outcome" }, text));
    svg.append(group);
  });

  const legend = h("div", { class: "legend" },
    legendItem("ok", "completed attempt"),
    legendItem("fail", "failed attempt"),
    legendItem("warn", "timed out"),
    legendItem("run", "in flight"),
    legendItem("timer", "timer"),
    legendItem("child", "child run"),
    h("span", { class: "legend-item" }, "◆ signal  ■ cancel request  ▲ failed workflow task  ┊ close"));
  const empty = steps.length === 0
    ? h("p", { class: "muted" }, "No activities, timers or child runs recorded yet.")
    : null;
  return h("div", { class: "timeline-box" }, svg, empty, legend);
}

function legendItem(kind, text) {
  return h("span", { class: "legend-item" }, h("span", { class: `swatch swatch-${kind}` }), text);
}

function truncate(text, width) {
  return text.length <= width ? text : text.slice(0, width - 1) + "…";
}
