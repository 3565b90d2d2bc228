// The execution list: status filter, search by id or type, paging, live refresh.

import { api } from "./api.js";
import { reportError } from "./ui.js";
import { between, clear, duration, h, link, statusBadge, when } from "./dom.js";

const STATUSES = ["running", "completed", "failed", "cancelled", "terminated", "timed_out",
  "continued_as_new", "reset"];
const REFRESH_MS = 3000;

export function renderList(container, params) {
  const state = {
    status: params.get("status") || "",
    q: params.get("q") || "",
    page: Number(params.get("page") || 0) || 0,
    size: Number(params.get("size") || 20) || 20,
    live: params.get("live") !== "0",
  };
  let timer = null;
  let stopped = false;
  let latest = 0; // only the newest request may draw: an older one can answer last
  let searchDelay = null;

  const status = h("select", { id: "filter-status", "aria-label": "Status" },
    h("option", { value: "" }, "all statuses"),
    STATUSES.map((s) => h("option", { value: s, selected: s === state.status }, s.replace(/_/g, " "))));
  const search = h("input", {
    id: "filter-search", type: "search", placeholder: "search id or type (prefix)",
    value: state.q, "aria-label": "Search",
  });
  const size = h("select", { id: "page-size", "aria-label": "Page size" },
    [10, 20, 50, 100].map((n) => h("option", { value: n, selected: n === state.size }, `${n} / page`)));
  const live = h("input", { id: "live-refresh", type: "checkbox", checked: state.live });
  const summary = h("span", { class: "muted", id: "list-summary" });
  const body = h("tbody", { id: "executions" });
  const prev = h("button", { type: "button", id: "page-prev", class: "ghost" }, "‹ Newer");
  const next = h("button", { type: "button", id: "page-next", class: "ghost" }, "Older ›");
  const pageLabel = h("span", { class: "muted", id: "page-label" });

  container.append(
    h("section", { class: "toolbar" },
      h("h1", null, "Executions"),
      h("span", { class: "spacer" }),
      status, search, size,
      h("label", { class: "check" }, live, " live")),
    h("table", { class: "grid" },
      h("thead", null, h("tr", null,
        ["Workflow ID", "Type", "Status", "Started", "Duration", "Events", "Run ID"]
          .map((t) => h("th", null, t)))),
      body),
    h("section", { class: "pager" }, prev, pageLabel, next, h("span", { class: "spacer" }), summary),
  );

  function syncHash() {
    const query = new URLSearchParams();
    if (state.status) query.set("status", state.status);
    if (state.q) query.set("q", state.q);
    if (state.page) query.set("page", state.page);
    if (state.size !== 20) query.set("size", state.size);
    if (!state.live) query.set("live", "0");
    const text = query.toString();
    history.replaceState(null, "", text ? `#/?${text}` : "#/");
  }

  async function load() {
    clearTimeout(timer);
    const ticket = ++latest;
    try {
      const page = await api.list({
        status: state.status, q: state.q, page: state.page, size: state.size,
      });
      if (stopped || ticket !== latest) return;
      if (page.items.length === 0 && state.page > 0 && page.total > 0) {
        state.page = Math.max(page.total_pages - 1, 0);
        syncHash();
        return load();
      }
      draw(page);
    } catch (error) {
      if (stopped || ticket !== latest) return;
      reportError(error, "listing executions");
    }
    if (!stopped && state.live) timer = setTimeout(load, REFRESH_MS);
  }

  function draw(page) {
    clear(body);
    if (page.items.length === 0) {
      body.append(h("tr", null, h("td", { colspan: 7, class: "muted empty" },
        state.q || state.status ? "No executions match." : "No executions yet.")));
    }
    for (const run of page.items) {
      const href = link(run.workflow_id);
      body.append(h("tr", { dataset: { workflowId: run.workflow_id, runId: run.run_id } },
        h("td", null, h("a", { href, class: "mono" }, run.workflow_id)),
        h("td", null, run.workflow_type),
        h("td", null, statusBadge(run.status)),
        h("td", null, when(run.started_at)),
        h("td", { class: "num" }, duration(between(run.started_at, run.closed_at))),
        h("td", { class: "num" }, run.history_length),
        h("td", null, h("a", { href: link(run.run_id), class: "mono muted", title: run.run_id },
          run.run_id.slice(0, 8)))));
    }
    const pages = Math.max(page.total_pages, 1);
    pageLabel.textContent = `page ${page.page + 1} of ${pages}`;
    prev.disabled = page.page <= 0;
    next.disabled = page.page + 1 >= page.total_pages;
    summary.textContent = `${page.total} execution${page.total === 1 ? "" : "s"}` +
      (page.truncated ? " (search stopped after the newest 10,000)" : "");
  }

  status.addEventListener("change", () => { state.status = status.value; state.page = 0; syncHash(); load(); });
  size.addEventListener("change", () => { state.size = Number(size.value); state.page = 0; syncHash(); load(); });
  search.addEventListener("input", () => {
    clearTimeout(searchDelay);
    searchDelay = setTimeout(() => { state.q = search.value.trim(); state.page = 0; syncHash(); load(); }, 250);
  });
  prev.addEventListener("click", () => { state.page = Math.max(state.page - 1, 0); syncHash(); load(); });
  next.addEventListener("click", () => { state.page += 1; syncHash(); load(); });
  live.addEventListener("change", () => { state.live = live.checked; syncHash(); load(); });

  load();
  return () => {
    stopped = true;
    clearTimeout(timer);
    clearTimeout(searchDelay);
  };
}
