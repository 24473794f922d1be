// The status page's store header in a real browser (headless Debian chromium, playwright-core), for a node
// on a Redis whose maxmemory-policy would evict quotad's keys.
//   node status-store.mjs URL SCREENSHOT
// Checks: no console or page errors; the header says Redis is up with one node, and shows the eviction
// warning; a screenshot is saved. Exits non-zero on any failure.
import { open } from "./browser.mjs";

const [url, screenshot] = process.argv.slice(2);
const fail = (msg) => { console.error("status page (Redis): " + msg); process.exitCode = 1; };

const { browser, page, errors } = await open(url, 600);
try {
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
