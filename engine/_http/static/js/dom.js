// Small DOM helpers: elements are built with h()/s(), never from HTML strings, so run data
// (ids, payloads, error messages) can never be interpreted as markup.

const SVG_NS = "http://www.w3.org/2000/svg";

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function apply(el, attrs) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.setAttribute("class", value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "style") Object.assign(el.style, value); // CSSOM: allowed by the CSP
    else if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  return el;
}

/** An HTML element: h("a", {href: "#/"}, "text", child, ...). */
export function h(tag, attrs, ...children) {
  return append(apply(document.createElement(tag), attrs), children);
}

/** An SVG element. */
export function s(tag, attrs, ...children) {
  return append(apply(document.createElementNS(SVG_NS, tag), attrs), children);
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

/** Seconds as short as their size allows: 0.21s, 12.5s, 2m05s, 1h02m, 3d00h. */
export function duration(seconds) {
  seconds = Math.max(seconds || 0, 0);
  if (seconds < 10) return `${seconds.toFixed(2)}s`;
  if (seconds < 60) return `${seconds.toFixed(1)}s`;
  const whole = Math.floor(seconds);
  const pad = (n) => String(n).padStart(2, "0");
  if (whole < 3600) return `${Math.floor(whole / 60)}m${pad(whole % 60)}s`;
  if (whole < 86400) return `${Math.floor(whole / 3600)}h${pad(Math.floor((whole % 3600) / 60))}m`;
  return `${Math.floor(whole / 86400)}d${pad(Math.floor((whole % 86400) / 3600))}h`;
}

/** An ISO timestamp as local date and time, to the second. */
export function when(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** Seconds between two ISO timestamps (the second defaulting to now). */
export function between(startIso, endIso) {
  const end = endIso ? new Date(endIso) : new Date();
  return (end - new Date(startIso)) / 1000;
}

export function statusBadge(status) {
  return h("span", { class: `badge status-${status}`, dataset: { status } }, status.replace(/_/g, " "));
}

export function json(value) {
  return JSON.stringify(value, null, 2);
}

export function link(id) {
  return `#/executions/${encodeURIComponent(id)}`;
}
