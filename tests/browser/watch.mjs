// Watches /ops in headless Chromium while a benchmark loads the server, and prints what
// an operator would live with, as one JSON line: how often the page was updated, how
// long each update took to render, the main thread's long tasks, the rates the page
// showed, and how long the search box took to open one order's journey. Run by
// benches/http_load.rs with BENCH_DASHBOARD=1, which passes:
//   OPS_URL      the server, http://127.0.0.1:PORT
//   OPS_TOKEN    a token with metrics:read and orders:read
//   OPS_SECONDS  how long to watch
//   OPS_ORDER    an order to open halfway through
//   CHROMIUM     optional: the browser (default /usr/bin/chromium)
// Prints `live` once the page is up and watched. Exits 1, printing why, when the page fails to come up or errs.
import { env, launch, openDashboard } from "./launch.mjs";

const base = env("OPS_URL");
const token = env("OPS_TOKEN");
const seconds = Number(env("OPS_SECONDS"));
const orderId = env("OPS_ORDER");
const WAIT = { timeout: 20000 };

const quantile = (sorted, q) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] : null);
const round = (n) => (n == null ? null : Math.round(n * 100) / 100);

const browser = await launch();
const problems = [];
let figures = null;
try {
  const page = await openDashboard(browser, base, token, WAIT, problems);
  // Every snapshot goes through the page's one top-level `render`: timing it times
  // what an update costs the page, DOM and charts included.
  await page.evaluate(() => {
    window.watched = { renders: [], shown: [], long: [] };
    const inner = window.render;
    window.render = (s) => {
      const started = performance.now();
      inner(s);
      window.watched.renders.push([started, performance.now() - started]);
      window.watched.shown.push(s.events.per_second);
    };
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) window.watched.long.push(e.duration);
    }).observe({ type: "longtask" });
  });
  // The benchmark starts its load on this line.
  console.log("live");
  await page.waitForTimeout((seconds * 1000) / 2);
  const asked = Date.now();
  await page.locator("#order-id").fill(orderId);
  await page.locator("#search button").click();
  await page.locator("#journey-steps li").first().waitFor(WAIT);
  const journeyMs = Date.now() - asked;
  await page.locator("#journey-close").click();
  await page.waitForTimeout((seconds * 1000) / 2);
  const watched = await page.evaluate(() => window.watched);
  const state = await page.locator("#connection").getAttribute("data-state");
  if (state !== "live") problems.push(`the stream ended ${state}`);

  const at = watched.renders.map((r) => r[0]);
  const gaps = at.slice(1).map((t, i) => t - at[i]).sort((a, b) => a - b);
  const renders = watched.renders.map((r) => r[1]).sort((a, b) => a - b);
  const shown = [...watched.shown].sort((a, b) => a - b);
  figures = {
    updates: renders.length,
    seconds,
    gap_ms: { p50: round(quantile(gaps, 0.5)), max: round(gaps[gaps.length - 1]) },
    render_ms: { p50: round(quantile(renders, 0.5)), p99: round(quantile(renders, 0.99)), max: round(renders[renders.length - 1]) },
    long_tasks: watched.long.length,
    long_task_max_ms: round(Math.max(0, ...watched.long)),
    shown_events_per_second: { median: quantile(shown, 0.5), max: shown[shown.length - 1] ?? null },
    journey_ms: journeyMs,
  };
} catch (e) {
  problems.push(e.stack || String(e));
} finally {
  await browser.close();
}
if (problems.length || !figures) {
  console.error(problems.join("\n"));
  process.exit(1);
}
console.log(JSON.stringify(figures));
