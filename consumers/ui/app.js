"use strict";
// The operations dashboard: every figure and action goes through /api/v1,
// the same routes (and code path, and audit trail) as the CLI's API.
// Data is only ever inserted as text, never as markup.

const csrf = document.querySelector('meta[name="csrf-token"]').content;
const $ = (id) => document.getElementById(id);
let me = null;

class ApiFailure extends Error {
  constructor(status, body) {
    super(body.message || `HTTP ${status}`);
    this.status = status;
    this.code = body.error;
    this.field = body.field;
  }
}

async function api(method, path, body, raw) {
  const headers = {};
  if (method !== "GET") headers["X-CSRF-Token"] = csrf;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    credentials: "same-origin",
    body: body === undefined ? undefined : (raw ? body : JSON.stringify(body)),
  });
  if (response.status === 401) {
    window.location.assign("/ui/login");
    throw new ApiFailure(401, { message: "signed out" });
  }
  const parsed = await response.json().catch(() => ({}));
  if (!response.ok) throw new ApiFailure(response.status, parsed);
  return parsed;
}

function el(tag, text, attributes) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [name, value] of Object.entries(attributes || {})) node.setAttribute(name, value);
  return node;
}

function row(cells) {
  const tr = el("tr");
  for (const cell of cells) {
    const td = el("td");
    if (cell instanceof Node) td.append(cell); else td.textContent = cell ?? "–";
    tr.append(td);
  }
  return tr;
}

/** Each cell of `table`'s body carries its column's name (the phone layout
 * hides the header row and shows the name before the value). */
function labelCells(table) {
  const names = [...table.tHead.rows[0].cells].map((cell) => cell.textContent.trim());
  for (const tableRow of table.tBodies[0].rows) {
    [...tableRow.cells].forEach((cell, index) => cell.setAttribute("data-label", names[index] ?? ""));
  }
}

function when(iso) {
  return iso ? new Date(iso).toISOString().replace("T", " ").slice(0, 19) + "Z" : "–";
}

function age(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds > 0 && seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 1 : 0)} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

function fixed(value, digits) {
  return value === null || value === undefined ? "–" : Number(value).toFixed(digits);
}

/** A failure's reason, led by its kind unless it already is. */
function errorText(kind, reason) {
  return reason.startsWith(`${kind}:`) ? reason : `${kind}: ${reason}`;
}

function banner(message) {
  $("banner").textContent = message || "";
  $("banner").hidden = !message;
}

// ---- sections -------------------------------------------------------------

const sections = ["overview", "dead-letters", "dead-letter", "history"];

function route() {
  const hash = window.location.hash.slice(1) || "overview";
  const [name, argument] = hash.split("/");
  const shown = sections.includes(name) ? name : "overview";
  for (const section of sections) $(section).hidden = section !== shown;
  for (const link of document.querySelectorAll("nav a")) {
    const current = link.getAttribute("href") === `#${shown === "dead-letter" ? "dead-letters" : shown}`;
    if (current) link.setAttribute("aria-current", "page"); else link.removeAttribute("aria-current");
  }
  banner("");
  if (shown === "overview") refreshOverview();
  if (shown === "dead-letters") loadDeadLetters();
  if (shown === "dead-letter") showDeadLetter(argument);
  if (shown === "history") loadHistory();
}

// ---- overview -------------------------------------------------------------

const REFRESH_MS = 3000;

/** A sparkline of `series` (events applied per second, oldest first). */
function sparkline(series, slotSeconds) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 200 40");
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("class", "spark");
  svg.setAttribute("role", "img");
  const minutes = Math.round(series.length * slotSeconds / 60);
  const peak = Math.max(0, ...series);
  const now = series.length ? series[series.length - 1] : 0;
  svg.setAttribute("aria-label",
    `events applied per second over the last ${minutes} minutes, up to 15 to 30 s ago: latest ${now.toFixed(1)}, peak ${peak.toFixed(1)}`);
  const title = document.createElementNS(ns, "title");
  title.textContent = svg.getAttribute("aria-label");
  svg.append(title);
  if (series.length < 2) return svg;
  const top = Math.max(1, peak);
  const poly = document.createElementNS(ns, "polyline");
  poly.setAttribute("points", series.map((value, index) =>
    `${(200 * index / (series.length - 1)).toFixed(1)},${(38 - 36 * value / top).toFixed(1)}`).join(" "));
  poly.setAttribute("class", "acks");
  svg.append(poly);
  return svg;
}

function health(group) {
  if (group.ready > 0 && group.consumers === 0) return ["stuck", "no consumer: events wait"];
  if (group.backlog > 0 && group.ack_rate === 0) return ["stuck", "backlog but nothing acknowledged"];
  if (group.open_dead_letters > 0) return ["attention", "dead letters wait for an operator"];
  if (group.backlog > 0) return ["flowing", "working through a backlog"];
  return ["idle", "nothing waiting"];
}

function figure(dl, label, value, id) {
  dl.append(el("dt", label));
  const dd = el("dd", value);
  if (id) dd.id = id;
  dl.append(dd);
}

let overviewTimer = null;
async function refreshOverview() {
  clearTimeout(overviewTimer);
  if ($("overview").hidden) return;
  try {
    const stats = await api("GET", "/api/v1/stats");
    $("overview-at").textContent = `at ${when(stats.at)}, every ${REFRESH_MS / 1000} s`;
    $("management-note").hidden = !stats.management_unavailable;
    $("management-note").textContent = stats.management_unavailable
      ? `In flight and rates unavailable: ${stats.management_unavailable}` : "";
    const cards = [];
    for (const group of stats.groups) {
      const card = el("article", null, { class: "card", id: `group-${group.group}`, "aria-labelledby": `group-${group.group}-name` });
      const [state, why] = health(group);
      const title = el("h3", group.group, { id: `group-${group.group}-name` });
      title.append(" ", el("span", state, { class: `badge ${state}`, title: why }));
      card.append(title, el("p", why, { class: "why" }), sparkline(group.throughput, 15));
      const dl = el("dl", null, { class: "figures" });
      const id = (name) => `${group.group}-${name}`;
      figure(dl, "Ready", group.ready, id("ready"));
      figure(dl, "In flight", group.unacked ?? "–", id("unacked"));
      figure(dl, "Retrying", group.retrying, id("retrying"));
      figure(dl, "Open dead letters", group.open_dead_letters, id("open"));
      figure(dl, "Consumers", group.consumers, id("consumers"));
      figure(dl, "Applied/s (15–30 s ago)", fixed(group.throughput[group.throughput.length - 1], 1), id("applied"));
      figure(dl, "Acks/s", fixed(group.ack_rate, 1), id("acks"));
      figure(dl, "In/s", fixed(group.publish_rate, 1), id("in"));
      figure(dl, "Oldest waiting", age(group.oldest_waiting_seconds), id("oldest"));
      figure(dl, "Lag p50", age(group.lag_p50_seconds), id("lag-p50"));
      figure(dl, "Lag p99", age(group.lag_p99_seconds), id("lag-p99"));
      card.append(dl);
      if (group.open_dead_letters > 0) {
        card.append(el("a", `Inspect ${group.open_dead_letters} dead letters →`, { href: `#dead-letters`, "data-group": group.group, class: "inspect" }));
      }
      cards.push(card);
    }
    $("groups").replaceChildren(...cards);
    for (const link of document.querySelectorAll("a.inspect")) {
      link.addEventListener("click", () => { $("filter").elements.group.value = link.dataset.group; });
    }
    banner("");
  } catch (failure) {
    banner(`Figures unavailable: ${failure.message}`);
  }
  overviewTimer = setTimeout(refreshOverview, REFRESH_MS);
}

// ---- dead letters ---------------------------------------------------------

/** The filter form as the API's filter object. */
function filterObject() {
  const form = $("filter").elements;
  const filter = {};
  for (const name of ["group", "type", "error_kind", "error", "partition_key", "fingerprint", "status"]) {
    const value = form[name].value.trim();
    if (value) filter[name] = value;
  }
  for (const name of ["since", "until"]) {
    // Typed as UTC, as every time on the page is shown.
    if (form[name].value) filter[name] = new Date(`${form[name].value}Z`).toISOString();
  }
  return filter;
}

function queryString(filter, extra) {
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries({ ...filter, ...extra })) {
    params.set(name, Array.isArray(value) ? value.join(",") : value);
  }
  return params.toString();
}

let nextAfter = null;
const selected = new Set();
// Each load of the list counts up; an answer to an earlier load (the page's
// first load, overtaken by a filter typed before it came back) is dropped,
// so what is shown is always what the filter now says.
let listLoad = 0;

function updateSelection() {
  for (const id of ["replay-selected", "resolve-selected", "purge-selected"]) {
    const button = $(id);
    if (button) {
      button.disabled = selected.size === 0;
      button.textContent = button.textContent.replace(/ \(\d+\)$/, "") + (selected.size ? ` (${selected.size})` : "");
    }
  }
}

async function loadDeadLetters() {
  const load = ++listLoad;
  const filter = filterObject();
  $("filter-error").textContent = "";
  if ($("list-done")) $("list-done").textContent = "";
  selected.clear();
  updateSelection();
  try {
    const [summary, page] = await Promise.all([
      api("GET", `/api/v1/dead-letters/summary?${queryString(filter)}`),
      api("GET", `/api/v1/dead-letters?${queryString(filter, { limit: 50 })}`),
    ]);
    if (load !== listLoad) return;
    renderSummary(summary, filter);
    $("list").tBodies[0].replaceChildren();
    appendPage(page, filter);
  } catch (failure) {
    if (load !== listLoad) return;
    $("filter-error").textContent = failure.field ? `${failure.field}: ${failure.message}` : failure.message;
  }
}

function renderSummary(lines, filter) {
  const body = $("summary").tBodies[0];
  body.replaceChildren();
  for (const line of lines) {
    const actions = el("span", null, { class: "row-actions" });
    const named = `${line.group} ${line.event_type ?? "(no type)"} ${line.fingerprint}`;
    const show = el("button", "Show", { type: "button", "aria-label": `Show the dead letters of ${named}` });
    show.addEventListener("click", () => {
      $("filter").elements.fingerprint.value = line.fingerprint;
      $("filter").elements.group.value = line.group;
      loadDeadLetters();
    });
    actions.append(show);
    if (isOperator() && (filter.status || "open") === "open") {
      const replay = el("button", "Replay…", { type: "button", "aria-label": `Replay the dead letters of ${named}` });
      replay.addEventListener("click", () => openReplay(
        { ...filter, group: line.group, fingerprint: line.fingerprint },
        `every open dead letter of ${line.group} with fingerprint ${line.fingerprint}`));
      actions.append(" ", replay);
    }
    body.append(row([line.group, line.event_type, el("code", line.fingerprint), line.count,
      when(line.first_failed_at), when(line.last_failed_at), actions]));
  }
  labelCells($("summary"));
  $("summary-empty").hidden = lines.length > 0;
  $("summary-empty").textContent = emptyText(filter);
}

function emptyText(filter) {
  const narrowed = Object.keys(filter).some((key) => key !== "status");
  if (narrowed) return "Nothing matches this filter. Clear it to see every dead letter.";
  return (filter.status || "open") === "open"
    ? "No open dead letters: every event was applied or handled. Failures appear here with their reason."
    : "None with this status.";
}

function appendPage(page, filter) {
  const body = $("list").tBodies[0];
  for (const item of page.items) {
    const cells = [];
    if (isOperator()) {
      const box = el("input", null, { type: "checkbox", "aria-label": `Select dead letter ${item.id}` });
      box.addEventListener("change", () => {
        if (box.checked) selected.add(item.id); else selected.delete(item.id);
        updateSelection();
      });
      cells.push(box);
    }
    cells.push(el("a", item.id, { href: `#dead-letter/${item.id}` }), item.group, item.event_type,
      errorText(item.error_kind, item.reason), item.attempts, when(item.last_failed_at),
      item.status + (item.edited ? " (edited)" : ""));
    body.append(row(cells));
  }
  labelCells($("list"));
  nextAfter = page.next_after;
  $("more").hidden = nextAfter === null || nextAfter === undefined;
  $("list-empty").hidden = body.rows.length > 0;
  $("list-empty").textContent = emptyText(filter);
}

async function loadMore() {
  const load = listLoad;
  const filter = filterObject();
  try {
    const page = await api("GET", `/api/v1/dead-letters?${queryString(filter, { limit: 50, after: nextAfter })}`);
    if (load !== listLoad) return;
    appendPage(page, filter);
  } catch (failure) {
    if (load !== listLoad) return;
    $("filter-error").textContent = failure.message;
  }
}

// ---- one dead letter ------------------------------------------------------

let shown = null;

async function showDeadLetter(id) {
  shown = null;
  $("edit-error").textContent = "";
  $("edit-done").textContent = "";
  try {
    const letter = await api("GET", `/api/v1/dead-letters/${encodeURIComponent(id)}`);
    shown = letter;
    $("dead-letter-title").textContent = `Dead letter ${letter.id}`;
    const facts = $("dead-letter-facts");
    facts.replaceChildren();
    const fact = (label, value) => { facts.append(el("dt", label), el("dd", value ?? "–")); };
    fact("Status", letter.status);
    fact("Group", letter.group);
    fact("Event id", letter.event_id);
    fact("Type", letter.event_type);
    fact("Partition key", letter.partition_key);
    fact("Error", errorText(letter.error_kind, letter.reason));
    fact("Fingerprint", letter.fingerprint);
    fact("Attempts", letter.attempts);
    fact("First failed", when(letter.first_failed_at));
    fact("Last failed", when(letter.last_failed_at));
    if (letter.edited) fact("Edited", `by ${letter.edited_by} at ${when(letter.edited_at)}`);
    const over = letter.body_over_limit;
    if (over) fact("Body", `${over.size} bytes, over the event limit: only the first ${over.kept} kept (SHA-256 ${over.sha256})`);
    const editable = "json" in letter.body && letter.status === "open";
    $("event-body").value = "json" in letter.body ? JSON.stringify(letter.body.json, null, 2)
      : (letter.body.text ?? letter.body.hex ?? "");
    $("event-body").readOnly = !editable || !isOperator();
    for (const id of ["replay-one", "resolve-one", "purge-one", "save-event"]) {
      if ($(id)) $(id).disabled = letter.status !== "open" || (id === "save-event" && !editable);
    }
    if ($("reopen-one")) $("reopen-one").hidden = letter.status !== "resolved";
    $("dead-letter-headers").textContent = JSON.stringify(letter.headers, null, 2);
    const attempts = $("attempts").tBodies[0];
    attempts.replaceChildren();
    for (const attempt of Array.isArray(letter.attempts_log) ? letter.attempts_log : []) {
      attempts.append(row([when(attempt.at), attempt.worker, attempt.kind, attempt.message]));
    }
    const earlier = $("event-history").tBodies[0];
    earlier.replaceChildren();
    for (const other of letter.history || []) {
      earlier.append(row([el("a", other.id, { href: `#dead-letter/${other.id}` }), other.status,
        errorText(other.error_kind, other.reason), when(other.last_failed_at)]));
    }
    labelCells($("attempts"));
    labelCells($("event-history"));
  } catch (failure) {
    banner(failure.status === 404 ? `No dead letter ${id}.` : failure.message);
  }
}

async function saveEvent(event) {
  event.preventDefault();
  if (!shown) return;
  $("edit-error").textContent = "";
  $("edit-done").textContent = "";
  try {
    JSON.parse($("event-body").value);
  } catch (failure) {
    $("edit-error").textContent = `$: not valid JSON (${failure.message})`;
    $("event-body").setAttribute("aria-invalid", "true");
    return;
  }
  try {
    await api("PUT", `/api/v1/dead-letters/${shown.id}/event`, $("event-body").value, true);
    $("event-body").removeAttribute("aria-invalid");
    $("edit-done").textContent = "Saved. The original is kept; replay to apply the repaired event.";
    await showDeadLetter(shown.id);
    $("edit-done").textContent = "Saved. The original is kept; replay to apply the repaired event.";
  } catch (failure) {
    $("event-body").setAttribute("aria-invalid", "true");
    $("edit-error").textContent = failure.field ? `${failure.field}: ${failure.message}` : failure.message;
  }
}

// ---- replays --------------------------------------------------------------

let replayFilter = null;
let replayId = null;
let replayTimer = null;

async function openReplay(filter, description) {
  replayFilter = { ...filter, status: "open" };
  // The API acts on every open dead letter only when told so in words.
  if (Object.keys(filter).every((name) => name === "status")) {
    replayFilter.all = true;
    description = "every open dead letter (the filter is empty)";
  }
  replayId = null;
  $("replay-what").textContent = `Replay ${description}.`;
  $("replay-preview").textContent = "Counting (dry run)…";
  $("replay-error").textContent = "";
  $("replay-progress").hidden = true;
  $("replay-start").hidden = false;
  $("replay-start").disabled = true;
  $("replay-cancel").hidden = true;
  $("replay-dialog").showModal();
  try {
    const preview = await api("POST", "/api/v1/replays/preview", { filter: replayFilter });
    const report = preview.report;
    $("replay-preview").textContent = `Dry run: ${report.replayed} will be replayed` +
      (report.skipped ? `, ${report.skipped} skipped (poison: repair them first)` : "") + ".";
    $("replay-start").disabled = report.replayed === 0;
  } catch (failure) {
    $("replay-preview").textContent = "";
    $("replay-error").textContent = failure.field ? `${failure.field}: ${failure.message}` : failure.message;
  }
}

function renderProgress(progress) {
  $("replay-cancel").hidden = progress.outcome !== "running";
  const done = progress.replayed + progress.skipped;
  $("replay-bar").max = Math.max(progress.matched, 1);
  $("replay-bar").value = done;
  const breaker = progress.outcome === "tripped"
    ? "the breaker tripped" : `breaker closed (${progress.failed_again} failed again)`;
  $("replay-status").textContent = `${progress.outcome}: ${progress.replayed} replayed, ` +
    `${progress.skipped} skipped of ${progress.matched}; ${breaker}` +
    (progress.detail ? `. ${progress.detail}` : "");
}

async function startReplay() {
  const rate = $("replay-rate").value.trim();
  $("replay-error").textContent = "";
  try {
    const body = { filter: replayFilter };
    if (rate) {
      body.rate = Number(rate);
      // A second's worth per batch: progress moves (and a cancel lands) every second.
      body.batch = Math.min(10000, Math.max(1, Math.ceil(body.rate)));
    }
    const progress = await api("POST", "/api/v1/replays", body);
    replayId = progress.operation_id;
    $("replay-start").hidden = true;
    $("replay-progress").hidden = false;
    renderProgress(progress);
    pollReplay();
  } catch (failure) {
    $("replay-error").textContent = failure.field ? `${failure.field}: ${failure.message}` : failure.message;
  }
}

async function pollReplay() {
  clearTimeout(replayTimer);
  if (replayId === null) return;
  try {
    const progress = await api("GET", `/api/v1/replays/${replayId}`);
    renderProgress(progress);
    if (progress.outcome === "running") replayTimer = setTimeout(pollReplay, 500);
  } catch (failure) {
    $("replay-error").textContent = failure.message;
    replayTimer = setTimeout(pollReplay, 2000);
  }
}

async function cancelReplay() {
  if (replayId === null) return;
  try {
    renderProgress(await api("POST", `/api/v1/replays/${replayId}/cancel`));
  } catch (failure) {
    $("replay-error").textContent = failure.message;
  }
}

function closeReplay() {
  clearTimeout(replayTimer);
  $("replay-dialog").close();
  route();
}

// ---- resolve and purge ----------------------------------------------------

function confirmAction(text) {
  return new Promise((resolve) => {
    $("confirm-text").textContent = text;
    const dialog = $("confirm-dialog");
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "yes"), { once: true });
    dialog.returnValue = "";
    dialog.showModal();
  });
}

const VERBS = { resolve: ["Resolve", "resolved"], purge: ["Purge", "purged"], reopen: ["Reopen", "reopened"] };

async function close(action, filter, description) {
  const warning = action === "purge" ? " Purging deletes the payloads for good." : "";
  if (!(await confirmAction(`${VERBS[action][0]} ${description}?${warning}`))) return;
  try {
    const closed = await api("POST", `/api/v1/dead-letters/${action}`, { filter, confirm: action === "purge" });
    banner("");
    const fromList = !$("dead-letters").hidden;
    route();
    const done = `${closed.affected} ${VERBS[action][1]} (operation ${closed.operation_id}).` +
      (closed.note ? ` ${closed.note}` : "");
    $(fromList ? "list-done" : "edit-done").textContent = done;
  } catch (failure) {
    banner(failure.message);
  }
}

// ---- history --------------------------------------------------------------

async function loadHistory() {
  try {
    const operations = await api("GET", "/api/v1/operations?limit=200");
    const body = $("operations").tBodies[0];
    body.replaceChildren();
    for (const operation of operations) {
      body.append(row([operation.id, when(operation.started_at), operation.actor, operation.action,
        el("code", JSON.stringify(operation.filter)), operation.matched, operation.affected,
        operation.skipped, operation.failed_again, operation.outcome + (operation.detail ? `: ${operation.detail}` : "")]));
    }
    labelCells($("operations"));
    $("operations-empty").hidden = operations.length > 0;
  } catch (failure) {
    banner(failure.message);
  }
}

// ---- start ----------------------------------------------------------------

function isOperator() {
  return me !== null && me.role === "operator";
}

async function start() {
  try {
    me = await api("GET", "/api/v1/whoami");
  } catch (failure) {
    banner(failure.message);
    return;
  }
  $("who").textContent = `${me.name} (${me.role})`;
  if (!isOperator()) {
    // A viewer gets no control to change anything (the API refuses anyway).
    for (const node of document.querySelectorAll(".operator-only")) node.remove();
  }
  $("logout").addEventListener("click", async () => {
    await api("POST", "/ui/logout").catch(() => {});
    window.location.assign("/ui/login");
  });
  $("filter").addEventListener("submit", (event) => { event.preventDefault(); loadDeadLetters(); });
  $("filter").addEventListener("reset", () => setTimeout(loadDeadLetters));
  $("more").addEventListener("click", loadMore);
  if (isOperator()) {
    $("select-all").addEventListener("change", () => {
      for (const box of $("list").tBodies[0].querySelectorAll("input[type=checkbox]")) {
        if (box.checked !== $("select-all").checked) box.click();
      }
    });
    $("replay-selected").addEventListener("click", () =>
      openReplay({ ids: [...selected] }, `${selected.size} selected dead letters`));
    $("replay-filter").addEventListener("click", () =>
      openReplay(filterObject(), "every open dead letter matching the filter"));
    $("resolve-selected").addEventListener("click", () =>
      close("resolve", { ids: [...selected] }, `${selected.size} selected dead letters`));
    $("purge-selected").addEventListener("click", () =>
      close("purge", { ids: [...selected] }, `${selected.size} selected dead letters`));
    $("replay-one").addEventListener("click", () => openReplay({ ids: [shown.id] }, `dead letter ${shown.id}`));
    $("resolve-one").addEventListener("click", () => close("resolve", { ids: [shown.id], status: "open" }, `dead letter ${shown.id}`));
    $("purge-one").addEventListener("click", () => close("purge", { ids: [shown.id], status: "open" }, `dead letter ${shown.id}`));
    $("reopen-one").addEventListener("click", () => close("reopen", { ids: [shown.id], status: "resolved" }, `dead letter ${shown.id}`));
    $("edit-form").addEventListener("submit", saveEvent);
    $("replay-start").addEventListener("click", startReplay);
    $("replay-cancel").addEventListener("click", cancelReplay);
  }
  $("replay-close").addEventListener("click", closeReplay);
  window.addEventListener("hashchange", route);
  route();
}

start();
