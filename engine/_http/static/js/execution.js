// One execution: status and actions, pending work with heartbeat progress, the timeline
// picture, the event history (with reset-to-event), and extension panels: a graph run's
// drawing, what it waits for (with Resume) and its states; any other extension as data.

import { api } from "./api.js";
import { RESUME_SIGNAL, parseAnswer, renderGraphExtension } from "./graph.js";
import { between, clear, duration, h, json, link, statusBadge, when } from "./dom.js";
import { renderTimeline } from "./timeline.js";
import { ask, reportError, toast } from "./ui.js";

const REFRESH_MS = 2000;

export function renderExecution(container, ident) {
  let stopped = false;
  let timer = null;
  let current = null;
  let latest = 0; // only the newest load may draw: an older one can answer last

  const header = h("section", { class: "run-header" });
  const facts = h("section", { class: "facts" });
  const pending = h("section", { id: "pending" });
  const timelineBox = h("section", { id: "timeline-section" });
  const extensions = h("section", { id: "extensions" });
  const historyBox = h("section", { id: "history-section" });
  container.append(
    h("p", null, h("a", { href: "#/" }, "← Executions")),
    header, facts, pending, extensions, timelineBox, historyBox);

  async function load() {
    clearTimeout(timer);
    const ticket = ++latest;
    try {
      const [run, timeline, history] = await Promise.all([
        api.get(ident), api.timeline(ident), api.history(ident, { limit: 5000 }),
      ]);
      if (stopped || ticket !== latest) return;
      current = run;
      drawHeader(run);
      drawFacts(run);
      drawPending(run);
      drawExtensions(run);
      clear(timelineBox).append(
        h("h2", null, "Timeline ", h("span", { class: "muted subtitle" },
          `from ${when(timeline.started_at)}${timeline.end !== null ? `, ${duration(timeline.end)}` : ""}`)),
        renderTimeline(timeline));
      drawHistory(run, history);
      if (run.status === "running") timer = setTimeout(load, REFRESH_MS);
    } catch (error) {
      if (stopped || ticket !== latest) return;
      if (error.status === 404) {
        clear(header).append(h("h1", null, ident), h("p", { class: "error" }, error.message));
        return;
      }
      reportError(error, `loading ${ident}`);
      timer = setTimeout(load, REFRESH_MS * 2);
    }
  }

  async function act(what, call, { navigate = false } = {}) {
    try {
      const result = await call();
      toast(`${what}: done`, "ok");
      if (navigate && result && result.run_id && result.run_id !== current.run_id) {
        window.location.hash = link(result.run_id);
        return;
      }
    } catch (error) {
      reportError(error, what);
    }
    load();
  }

  function drawHeader(run) {
    const open = run.status === "running";
    const cancel = h("button", { type: "button", id: "action-cancel", class: "danger", disabled: !open },
      "Cancel…");
    const terminate = h("button", { type: "button", id: "action-terminate", class: "ghost danger-text", disabled: !open },
      "Terminate…");
    // Recover moves a running run (stuck, or its worker gone) or resumes a failed one.
    const recoverable = open || run.status === "failed";
    const recover = h("button", {
      type: "button", id: "action-recover", class: "primary", disabled: !recoverable,
      title: recoverable ? null : "Only a running or failed run can be recovered",
    }, "Recover…");
    const exportButton = h("button", { type: "button", id: "action-export", class: "ghost" }, "Export");
    cancel.addEventListener("click", async () => {
      const reason = await ask({
        title: `Cancel ${run.workflow_id}?`,
        text: "The workflow sees a cancellation at its current await, may clean up, and ends cancelled.",
        label: "Reason (recorded in the history)",
        confirm: "Cancel run",
      });
      if (reason !== null) act("cancel", () => api.cancel(run.run_id, reason));
    });
    terminate.addEventListener("click", async () => {
      const reason = await ask({
        title: `Terminate ${run.workflow_id}?`,
        text: "The run ends now; none of its code runs again (no clean-up).",
        label: "Reason (recorded in the history)",
        confirm: "Terminate run",
      });
      if (reason !== null) act("terminate", () => api.terminate(run.run_id, reason));
    });
    recover.addEventListener("click", async () => {
      const reason = await ask({
        title: `Recover ${run.workflow_id}?`,
        text: run.status === "running"
          ? "The run is taken from the worker holding it and handed to the next worker that polls."
          : "A new run continues from just before the failing step, with a fresh retry budget; earlier results are kept.",
        label: "Reason",
        confirm: "Recover",
        danger: false,
      });
      if (reason !== null) act("recover", () => api.recover(run.run_id, reason), { navigate: true });
    });
    exportButton.addEventListener("click", async () => {
      try {
        const text = await api.exportText(run.run_id);
        const url = URL.createObjectURL(new Blob([text], { type: "application/json" }));
        const a = h("a", { href: url, download: `${run.workflow_id}-${run.run_id}.json` });
        document.body.append(a);
        a.click();
        a.remove();
        setTimeout(() => URL.revokeObjectURL(url), 1000);
      } catch (error) {
        reportError(error, "export");
      }
    });
    clear(header).append(
      h("div", { class: "title-row" },
        h("h1", { class: "mono", id: "run-title" }, run.workflow_id),
        h("span", { id: "run-status" }, statusBadge(run.status)),
        h("span", { class: "spacer" }),
        cancel, terminate, recover, exportButton),
      h("p", { class: "muted" }, `${run.workflow_type} · run `, h("span", { class: "mono" }, run.run_id)),
    );
  }

  function fact(name, ...value) {
    return [h("dt", null, name), h("dd", null, ...value)];
  }

  function drawFacts(run) {
    const items = [
      fact("task queue", run.task_queue),
      fact("started", when(run.started_at)),
      fact(run.closed_at ? "closed" : "running for",
        run.closed_at ? `${when(run.closed_at)} (after ${duration(between(run.started_at, run.closed_at))})`
          : duration(between(run.started_at, null))),
      fact("events", String(run.history_length)),
      fact("arguments", h("code", null, JSON.stringify(run.args))),
    ];
    if (run.status === "running") {
      items.push(fact("owner", run.owner
        ? `${run.owner}${run.lease_expires_at ? ` (lease until ${when(run.lease_expires_at)})` : ""}`
        : "none (waiting for a worker or a timer)"));
    }
    if (run.cancel_reason !== null) items.push(fact("cancel reason", run.cancel_reason || "(none given)"));
    if (run.has_result) items.push(fact("result", h("pre", { class: "value ok-text", id: "run-result" }, json(run.result))));
    if (run.failure) items.push(fact("failure", failureView(run.failure)));
    if (run.last_task_failure && run.status === "running") {
      items.push(fact("workflow task failure", failureView(run.last_task_failure)));
    }
    if (run.origin) {
      items.push(fact(`${run.origin.kind} of`, h("a", { href: link(run.origin.run_id), class: "mono" }, run.origin.run_id),
        ` at event ${run.origin.event_id}`, run.origin.reason ? ` — ${run.origin.reason}` : ""));
    }
    if (run.successor_run_id) {
      items.push(fact("continued by", h("a", { href: link(run.successor_run_id), class: "mono", id: "successor" }, run.successor_run_id)));
    }
    if (run.continued_from) {
      items.push(fact("continues", h("a", { href: link(run.continued_from), class: "mono" }, run.continued_from)));
    }
    if (run.parent_run_id) {
      items.push(fact("parent", h("a", { href: link(run.parent_run_id), class: "mono" }, run.parent_run_id)));
    }
    clear(facts).append(h("dl", null, items));
  }

  function failureView(failure) {
    return h("details", { class: "failure" },
      h("summary", { class: "fail-text" }, `${failure.type}: ${failure.message.split("\n")[0]}`),
      failure.stack ? h("pre", null, failure.stack) : null,
      failure.cause ? h("div", null, "caused by ", failureView(failure.cause)) : null);
  }

  function drawPending(run) {
    clear(pending);
    if (run.pending_activities.length === 0 && run.pending_timers.length === 0) return;
    pending.append(h("h2", null, "Pending"));
    if (run.pending_activities.length) {
      pending.append(h("table", { class: "grid", id: "pending-activities" },
        h("thead", null, h("tr", null, ["#", "Activity", "Attempt", "Progress", "Last heartbeat", "Next retry", "Last failure"]
          .map((t) => h("th", null, t)))),
        h("tbody", null, run.pending_activities.map((a) => h("tr", { dataset: { seq: a.seq } },
          h("td", null, String(a.seq)),
          h("td", null, a.activity_type),
          h("td", { class: "num" }, String(a.attempt)),
          h("td", null, progressBar(a)),
          h("td", null, a.last_heartbeat_at ? `${when(a.last_heartbeat_at)}` : "–",
            a.last_heartbeat_details.length ? h("code", { class: "details" }, JSON.stringify(a.last_heartbeat_details)) : null),
          h("td", null, a.retry_at ? when(a.retry_at) : "–"),
          h("td", null, a.last_failure ? failureView(a.last_failure) : "–"))))));
    }
    if (run.pending_timers.length) {
      pending.append(h("ul", { class: "timers" }, run.pending_timers.map((t) =>
        h("li", null, `timer T${t.seq} fires ${when(t.fire_at)} (in ${duration(Math.max(between(new Date().toISOString(), t.fire_at), 0))})`))));
    }
  }

  function progressBar(activity) {
    if (activity.progress === null) return h("span", { class: "muted" }, "–");
    const percent = Math.round(activity.progress * 100);
    const fill = h("span", { class: "progress-fill" });
    fill.style.width = `${percent}%`;
    return h("span", { class: "progress", role: "progressbar", "aria-valuenow": percent, "aria-valuemin": 0, "aria-valuemax": 100 },
      fill, h("span", { class: "progress-text" }, `${percent}%`));
  }

  function drawExtensions(run) {
    // Keep the state rows a person expanded open across live refreshes.
    const openStates = new Set([...extensions.querySelectorAll("#graph-states tr[data-event-id] details[open]")]
      .map((el) => el.closest("tr").dataset.eventId));
    clear(extensions);
    for (const [name, value] of Object.entries(run.extensions || {})) {
      if (name === "graph" && value && !value.error) {
        extensions.append(renderGraphExtension(value, {
          runOpen: run.status === "running",
          resume: (wait, interruptId) => resumeGraph(run, wait, interruptId),
          open: openStates,
        }));
        continue;
      }
      // Extensions without a renderer of their own (and a failed describer) show as data.
      extensions.append(h("section", { class: `extension extension-${name}`, dataset: { extension: name } },
        h("h2", null, name === "graph" ? "Graph" : name),
        h("pre", { class: value && value.error ? "value error" : "value" }, json(value))));
    }
  }

  async function resumeGraph(run, wait, interruptId) {
    let text = "";
    for (;;) {
      text = await ask({
        title: `Resume ${run.workflow_id}`,
        text: (wait.kind === "interrupt"
          ? `${wait.node} asks: ${JSON.stringify(wait.value)}. Your answer becomes the return value of its interrupt() call; the node runs again from its start.`
          : `The run paused ${wait.kind} ${wait.node}; the answer is recorded and the run goes on.`) +
          ` Sent as the ${RESUME_SIGNAL} signal.`,
        label: "Answer (JSON: \"yes\", true, 42, {\"ok\": true})",
        confirm: "Resume",
        value: text,
        danger: false,
      });
      if (text === null) return;
      const answer = parseAnswer(text);
      if (answer.error) {
        toast(`resume: ${answer.error}`, "error");
        continue;
      }
      const request = interruptId === null ? { value: answer.value } : { value: answer.value, interrupt_id: interruptId };
      act("resume", () => api.signal(run.run_id, RESUME_SIGNAL, [request]));
      return;
    }
  }

  function drawHistory(run, page) {
    // Keep the rows a person expanded open across live refreshes.
    const expanded = new Set([...historyBox.querySelectorAll("tr[data-event-id] details[open]")]
      .map((el) => el.closest("tr").dataset.eventId));
    const rows = page.events.map((event) => {
      const reset = h("button", { type: "button", class: "link-button", title: `Reset to event ${event.event_id}` }, "reset here");
      reset.addEventListener("click", async () => {
        const reason = await ask({
          title: `Reset ${run.workflow_id} to event ${event.event_id}?`,
          text: "A new run starts from a copy of this history up to that event (unfinished steps run again)." +
            (run.status === "running" ? " This run closes as reset." : " This run stays as it is."),
          label: "Reason",
          confirm: "Reset",
        });
        if (reason !== null) act("reset", () => api.reset(run.run_id, event.event_id, reason), { navigate: true });
      });
      const details = h("details", { open: expanded.has(String(event.event_id)) },
        h("summary", null, event.summary || "attributes"),
        h("pre", { class: "value" }, json(event.attributes)));
      return h("tr", { class: `event event-${event.type}`, dataset: { eventId: event.event_id } },
        h("td", { class: "num" }, String(event.event_id)),
        h("td", { class: "mono" }, `+${duration(event.offset_seconds)}`),
        h("td", null, event.type),
        h("td", null, details),
        h("td", null, event.event_id > 1 ? reset : null));
    });
    const note = page.next_after_event_id !== null
      ? h("p", { class: "muted" }, `Showing the first ${page.events.length} of ${page.history_length} events.`)
      : null;
    clear(historyBox).append(...[
      h("h2", null, `History (${page.history_length} events)`),
      h("table", { class: "grid history", id: "history" },
        h("thead", null, h("tr", null, ["ID", "Offset", "Type", "Details", ""].map((t) => h("th", null, t)))),
        h("tbody", null, rows)),
      note].filter(Boolean));
  }

  load();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
