// What the scripts here share. Debian's Chromium is launched through playwright-core:
// nothing is downloaded, and the flags keep an offline browser from trying hosts it
// cannot reach. playwright gives each launch a fresh, empty profile of its own.
import { chromium } from "playwright-core";

// A variable the script cannot run without.
export function env(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
}

export function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: [
      "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-quic",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
}

// Opens /ops at `base` and signs in with `token`; resolves once the stream is live. The
// page's errors, and errors it logs, are pushed to `problems` from the first load on.
export async function openDashboard(browser, base, token, wait, problems) {
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("console", (m) => { if (m.type() === "error") problems.push(`console: ${m.text()}`); });
  await page.goto(`${base}/ops`);
  await page.locator("#token").fill(token);
  await page.locator("#token-form button").click();
  await page.locator('#connection[data-state="live"]').waitFor(wait);
  return page;
}
