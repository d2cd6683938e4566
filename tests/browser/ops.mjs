// Opens /ops in headless Chromium (Debian's, through playwright-core: nothing is
// downloaded) and checks what an operator relies on. Run by tests/api/dashboard.rs,
// which starts the server, a webhook receiver and a few orders, and passes:
//   OPS_URL           the server, http://127.0.0.1:PORT
//   OPS_TOKEN         a token with metrics:read and orders:read
//   OPS_ORDER         an order whose webhook delivery was made
//   OPS_SUBSCRIPTION  that webhook subscription's id
//   OPS_PROJECTIONS   every projection's name, comma-separated
//   OPS_SCREENSHOT    optional: where to save a screenshot of the dashboard
//   OPS_JOURNEY_SCREENSHOT  optional: and of the journey
//   CHROMIUM          optional: the browser (default /usr/bin/chromium)
// Exits 0 when every check holds; otherwise prints what failed and exits 1.
import { env, launch, openDashboard } from "./launch.mjs";

const base = env("OPS_URL");
const token = env("OPS_TOKEN");
const orderId = env("OPS_ORDER");
const subscription = env("OPS_SUBSCRIPTION");
const projections = env("OPS_PROJECTIONS").split(",");
const WAIT = { timeout: 20000 };

const browser = await launch();
const problems = [];
try {
  const page = await openDashboard(browser, base, token, WAIT, problems);
  const total = async () => Number((await page.locator("#events-total").textContent()).replace(/,/g, ""));
  await page.waitForFunction(() => document.querySelector("#events-total").textContent !== "0", null, WAIT);
  const before = await total();

  // New events, through the API: the counter must move without a reload.
  for (let i = 0; i < 3; i++) {
    const response = await fetch(`${base}/v1/inventory/BROWSER-SKU/receipts`, {
      method: "POST",
      headers: { Authorization: `Bearer ${process.env.OPS_WRITE_TOKEN || token}`, "Content-Type": "application/json" },
      body: JSON.stringify({ quantity: 5 }),
    });
    if (!response.ok) throw new Error(`receipt refused: ${response.status} ${await response.text()}`);
  }
  await page.waitForFunction(
    (n) => Number(document.querySelector("#events-total").textContent.replace(/,/g, "")) >= n,
    before + 3, WAIT,
  );
  const after = await total();
  if (!(after >= before + 3)) problems.push(`events counter went from ${before} to ${after}`);

  // The subscription and every projection, each with its lag.
  const row = page.locator(`#subscriptions tbody tr[data-key="${subscription}"]`);
  await row.waitFor(WAIT);
  const lag = await row.locator("td.lag").textContent();
  if (!/\d+ · [\d.]+ s/.test(lag)) problems.push(`subscription lag reads "${lag}"`);
  for (const name of projections) {
    const p = page.locator(`#projections tbody tr[data-key="${name}"]`);
    await p.waitFor(WAIT);
    const events = await p.locator("td.lag-events").textContent();
    if (!/^\d[\d,]*$/.test(events)) problems.push(`projection ${name} lag reads "${events}"`);
  }

  if (process.env.OPS_SCREENSHOT) {
    await page.waitForTimeout(1500);
    await page.screenshot({ path: process.env.OPS_SCREENSHOT, fullPage: true });
  }

  // The journey of one order, from the search box, lists its webhook attempt.
  await page.locator("#order-id").fill(orderId);
  await page.locator("#search button").click();
  const delivery = page.locator(`#journey-steps .delivery[data-subscription="${subscription}"]`).first();
  await delivery.waitFor(WAIT);
  const attempt = await delivery.locator(".attempt").first().textContent();
  if (!/delivered · HTTP 2\d\d/.test(attempt)) problems.push(`the journey's attempt reads "${attempt}"`);
  const created = page.locator('#journey-steps li[data-event-type="order.created"]');
  if ((await created.count()) !== 1) problems.push("the journey does not list order.created once");
  if ((await page.locator('#journey-steps li[data-event-type="inventory.reserved"]').count()) < 1) {
    problems.push("the journey lists no reservation");
  }
  if (process.env.OPS_JOURNEY_SCREENSHOT) {
    await page.locator("#journey").screenshot({ path: process.env.OPS_JOURNEY_SCREENSHOT });
  }
} catch (e) {
  problems.push(e.stack || String(e));
} finally {
  await browser.close();
}
if (problems.length) {
  console.error(problems.join("\n"));
  process.exit(1);
}
console.log("dashboard checks passed");
