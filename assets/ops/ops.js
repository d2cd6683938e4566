// The operations dashboard: reads GET /v1/ops/stream (Server-Sent Events, a snapshot a
// second) with the tab's token, and GET /v1/orders/{id}/journey for the search box.
// EventSource cannot send an Authorization header, so the stream is read with fetch and
// parsed here; it reconnects by itself, as EventSource would. Every value from the
// server is written as text (textContent), never as markup.
"use strict";

const TOKEN_KEY = "orderlog.ops.token";
const $ = (id) => document.getElementById(id);

let charts = null;
let stream = null;
let retryIn = 1000;

function token() { return sessionStorage.getItem(TOKEN_KEY); }

function authorized(extra) {
  return Object.assign({ Authorization: "Bearer " + token() }, extra || {});
}

function setConnection(state, text) {
  const pill = $("connection");
  pill.dataset.state = state;
  pill.textContent = text;
}

function showLogin(message) {
  $("login").hidden = false;
  $("board").hidden = true;
  $("login-error").textContent = message || "";
  $("token").focus();
}

function showBoard() {
  $("login").hidden = true;
  $("board").hidden = false;
}

async function errorText(response) {
  try {
    const body = await response.json();
    return body.code + ": " + body.detail;
  } catch (_) {
    return "HTTP " + response.status;
  }
}

// --- the stream ---------------------------------------------------------------------

async function connect() {
  if (stream) stream.abort();
  const controller = new AbortController();
  stream = controller;
  setConnection("retrying", "connecting…");
  let response;
  try {
    response = await fetch("/v1/ops/stream", {
      headers: authorized({ Accept: "text/event-stream" }),
      signal: controller.signal,
      cache: "no-store",
    });
  } catch (e) {
    return retry(controller);
  }
  if (response.status === 401 || response.status === 403) {
    const why = await errorText(response);
    sessionStorage.removeItem(TOKEN_KEY);
    setConnection("refused", "token refused");
    return showLogin(why);
  }
  if (!response.ok || !response.body) {
    setConnection("retrying", await errorText(response));
    return retry(controller);
  }
  showBoard();
  setConnection("live", "live");
  retryIn = 1000;
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        dispatch(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
      }
    }
  } catch (_) {
    // Aborted or cut: reconnect below.
  }
  retry(controller);
}

function retry(controller) {
  if (stream !== controller || controller.signal.aborted) return;
  setConnection("retrying", "reconnecting…");
  setTimeout(() => { if (stream === controller) connect(); }, retryIn);
  retryIn = Math.min(retryIn * 2, 10000);
}

// One SSE message: `event:` and `data:` lines; comments (keep-alives) start with `:`.
function dispatch(block) {
  let event = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") event = value;
    else if (field === "data") data.push(value);
  }
  if (event === "stats" && data.length) {
    try { render(JSON.parse(data.join("\n"))); } catch (e) { console.error(e); }
  }
}

// --- rendering ----------------------------------------------------------------------

const number = new Intl.NumberFormat("en");
const fmt = (n) => number.format(Math.round(n));
const ms = (n) => (n >= 100 ? fmt(n) : n.toFixed(n >= 10 ? 1 : 2));
const seconds = (n) => (n >= 10 ? fmt(n) : n.toFixed(2));

function text(id, value) { $(id).textContent = value; }

function cell(row, value, className) {
  const td = document.createElement("td");
  td.textContent = value;
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

function fill(tableId, items, key, cells) {
  const body = $(tableId).querySelector("tbody");
  body.replaceChildren();
  for (const item of items) {
    const row = document.createElement("tr");
    row.dataset.key = key(item);
    cells(row, item);
    body.appendChild(row);
  }
  if (!items.length) {
    const row = document.createElement("tr");
    const td = cell(row, "none", "dim");
    td.colSpan = $(tableId).querySelectorAll("th").length;
    body.appendChild(row);
  }
}

function render(s) {
  text("backend", s.backend);
  $("not-live").hidden = s.live;
  const last = s.history.length ? s.history[s.history.length - 1] : null;
  text("events-per-second", fmt(s.events.per_second));
  text("events-total", fmt(s.events.total));
  text("commands-per-second", fmt(s.commands.all.per_second));
  text("commands-refused", fmt(s.commands.all.refused));
  text("commands-shed", fmt(s.commands.all.shed));
  text("commands-p50", ms(s.commands.all.p50_ms));
  text("commands-p99", ms(s.commands.all.p99_ms));
  text("attempts-per-second", fmt(last ? last.attempts : 0));
  text("delivered-per-second", fmt(last ? last.delivered : 0));
  const active = s.subscriptions.filter((x) => x.state === "active").length;
  text("channels", fmt(active + s.streams_open));
  text("subscription-count", fmt(s.subscriptions.length));
  text("streams-open", fmt(s.streams_open));
  text("low-below", s.stock.below);

  fill("subscriptions", s.subscriptions, (x) => x.id, (row, x) => {
    const name = cell(row, x.kind + " " + x.target);
    name.title = x.id;
    cell(row, x.state, "state-" + x.state);
    cell(row, x.breaker || "–", x.breaker ? "state-" + x.breaker : "dim");
    cell(row, (x.window == null ? "–" : x.window) + " / " + x.max_in_flight, "num");
    cell(row, fmt(x.attempts_per_second), "num");
    cell(row, x.success_rate == null ? "–" : (x.success_rate * 100).toFixed(1) + "%", "num");
    cell(row, ms(x.attempt_p99_ms), "num");
    cell(row, fmt(x.waiting), "num");
    cell(row, fmt(x.dead), x.dead > 0 ? "num state-dead" : "num");
    cell(row, fmt(x.lag_events) + " · " + seconds(x.lag_seconds) + " s", "num lag");
  });
  fill("projections", s.projections, (p) => p.name, (row, p) => {
    const name = cell(row, p.name);
    if (p.last_error) name.title = p.last_error;
    cell(row, p.state, "state-" + p.state);
    cell(row, fmt(p.lag_events), "num lag-events");
    cell(row, seconds(p.lag_seconds), "num");
    cell(row, ms(p.apply_lag_p99_ms), "num");
  });
  fill("event-types", s.events.by_type, (e) => e.event_type, (row, e) => {
    cell(row, e.event_type);
    cell(row, fmt(e.per_second), "num");
    cell(row, fmt(e.total), "num");
  });
  fill("commands", s.commands.by_kind, (c) => c.kind, (row, c) => {
    cell(row, c.kind);
    cell(row, fmt(c.per_second), "num");
    cell(row, ms(c.p50_ms), "num");
    cell(row, ms(c.p99_ms), "num");
    cell(row, fmt(c.accepted), "num");
    cell(row, fmt(c.refused), "num");
    cell(row, fmt(c.shed), "num");
    cell(row, fmt(c.failed), c.failed ? "num state-failed" : "num");
  });
  fill("low-stock", s.stock.low, (i) => i.id, (row, i) => {
    cell(row, i.id);
    cell(row, fmt(i.available), "num");
    cell(row, fmt(i.reserved), "num");
    cell(row, fmt(i.on_hand), "num");
  });
  fill("backorders", s.stock.backordered, (i) => i.id, (row, i) => {
    cell(row, i.id);
    cell(row, fmt(i.backordered), "num");
    cell(row, fmt(i.on_hand), "num");
  });
  fill("inbox", s.inbox, (d) => d.source + "/" + d.state, (row, d) => {
    cell(row, d.source);
    cell(row, d.state, "state-" + d.state);
    cell(row, fmt(d.deliveries), "num");
  });
  plot(s.history);
}

function plot(history) {
  if (typeof uPlot === "undefined") return;
  const t = history.map((p) => p.at);
  const rates = [t, history.map((p) => p.events), history.map((p) => p.commands), history.map((p) => p.attempts)];
  const latency = [t, history.map((p) => p.p50_ms), history.map((p) => p.p99_ms)];
  if (!charts) {
    const width = () => Math.max(300, $("chart-rates").parentElement.clientWidth - 20);
    const axes = [{ stroke: "#8796a8", grid: { stroke: "#263140" } }, { stroke: "#8796a8", grid: { stroke: "#263140" } }];
    charts = {
      rates: new uPlot({
        width: width(), height: 180, axes,
        series: [{}, { label: "events", stroke: "#5aa9e6" }, { label: "commands", stroke: "#4cc38a" }, { label: "deliveries", stroke: "#e5a50a" }],
      }, rates, $("chart-rates")),
      latency: new uPlot({
        width: width(), height: 180, axes,
        series: [{}, { label: "p50", stroke: "#4cc38a" }, { label: "p99", stroke: "#ef5b5b" }],
      }, latency, $("chart-latency")),
    };
    window.addEventListener("resize", () => {
      for (const chart of Object.values(charts)) chart.setSize({ width: width(), height: 180 });
    });
  } else {
    charts.rates.setData(rates);
    charts.latency.setData(latency);
  }
}

// --- one order's journey ------------------------------------------------------------

async function openJourney(orderId) {
  const panel = $("journey");
  panel.hidden = false;
  text("journey-order", orderId);
  text("journey-error", "");
  const steps = $("journey-steps");
  steps.replaceChildren();
  let response;
  try {
    response = await fetch("/v1/orders/" + encodeURIComponent(orderId) + "/journey", { headers: authorized() });
  } catch (e) {
    return text("journey-error", "the server does not answer");
  }
  if (!response.ok) return text("journey-error", await errorText(response));
  const journey = await response.json();
  for (const step of journey.events) steps.appendChild(renderStep(step));
  panel.scrollIntoView({ behavior: "smooth", block: "start" });
}

function span(className, value) {
  const el = document.createElement("span");
  el.className = className;
  el.textContent = value;
  return el;
}

function renderStep(step) {
  const li = document.createElement("li");
  li.className = "step " + step.aggregate_type;
  li.dataset.eventType = step.event_type;
  const head = document.createElement("div");
  head.className = "step-head";
  head.append(
    span("step-time", new Date(step.recorded_at).toISOString().replace("T", " ").replace("Z", "")),
    span("step-type", step.event_type),
    span("step-meta", step.aggregate_type + " " + step.aggregate_id + " #" + step.sequence + " · position " + step.global_position),
  );
  li.appendChild(head);
  const meta = document.createElement("div");
  meta.className = "step-meta";
  meta.textContent = "trace " + (step.trace_id || "–") + " · by " + (step.actor || "–") + " · correlation " + (step.correlation_id || "–");
  li.appendChild(meta);
  const applied = document.createElement("div");
  applied.className = "applied";
  applied.append("views: ");
  for (const p of step.projections) {
    applied.append(span(p.applied ? "yes" : "no", (p.applied ? "✓ " : "… ") + p.name), " ");
  }
  li.appendChild(applied);
  for (const d of step.deliveries) {
    const block = document.createElement("div");
    block.className = "delivery";
    block.dataset.subscription = d.subscription_id;
    block.append(span("state-" + d.state, d.state), " " + d.kind + " " + d.target);
    if (d.last_error) block.append(span("dim", " · " + d.last_error));
    for (const a of d.attempts) {
      const line = document.createElement("div");
      line.className = "attempt";
      line.textContent = new Date(a.attempted_at).toISOString() + " · " + a.outcome +
        (a.status == null ? "" : " · HTTP " + a.status) + " · " + a.latency_ms + " ms" +
        (a.detail ? " · " + a.detail : "");
      block.appendChild(line);
    }
    li.appendChild(block);
  }
  return li;
}

// --- start --------------------------------------------------------------------------

$("token-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const value = $("token").value.trim();
  if (!value) return;
  sessionStorage.setItem(TOKEN_KEY, value);
  $("token").value = "";
  connect();
});

$("search").addEventListener("submit", (e) => {
  e.preventDefault();
  const id = $("order-id").value.trim();
  if (!id) return;
  if (!token()) return showLogin("connect with a token first");
  history.replaceState(null, "", "#order=" + encodeURIComponent(id));
  openJourney(id);
});

$("journey-close").addEventListener("click", () => {
  $("journey").hidden = true;
  history.replaceState(null, "", location.pathname);
});

if (token()) {
  connect();
  const wanted = new URLSearchParams(location.hash.slice(1)).get("order");
  if (wanted) { $("order-id").value = wanted; openJourney(wanted); }
} else {
  showLogin();
}
