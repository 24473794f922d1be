// The status page's store header in a real browser (headless Debian chromium, playwright-core), for a node
// on a Redis whose maxmemory-policy would evict quotad's keys.
//   node status-store.mjs URL SCREENSHOT
// Checks: no console or page errors; the header says Redis is up with one node, and shows the eviction
// warning; a screenshot is saved. Exits non-zero on any failure.
import { chromium } from "playwright-core";

const [url, screenshot] = process.argv.slice(2);
const fail = (msg) => { console.error("status page (Redis): " + msg); process.exitCode = 1; };

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 600 } });
  const errors = [];
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(url, { waitUntil: "load" });
  await page.locator("#evicting").waitFor({ timeout: 10000 });
  const summary = await page.locator("#summary").innerText();
  if (!/Redis up/.test(summary) || !/1 node\b/.test(summary)) fail(`the header does not say Redis is up with 1 node: ${summary}`);
  if (!/evicts: limits are not exact/.test(summary)) fail(`the header does not warn of eviction: ${summary}`);
  if (/live keys/.test(summary)) fail(`the header shows the in-memory store's caps: ${summary}`);
  await page.screenshot({ path: screenshot });
  console.log(`status page (Redis): "${summary}"; screenshot in ${screenshot}`);
  if (errors.length) fail(`console errors: ${errors.join(" | ")}`);
} finally {
  await browser.close();
}
