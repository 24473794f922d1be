// The status page's store header in a real browser (headless Debian chromium, playwright-core), for a node
// on a Redis whose maxmemory-policy would evict quotad's keys.
//   node status-store.mjs URL SCREENSHOT
// Checks: no console or page errors; the header says Redis is up with one node, and shows the eviction
// warning; with traffic on a local_share resource, the slices section shows acquires answered from this
// node's slices; a screenshot is saved. Exits non-zero on any failure.
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
  // Traffic on maps.geocode (local_share) runs meanwhile: the slices section shows what this node took.
  await page.locator("#shares:not([hidden])").waitFor({ timeout: 20000 });
  await page.waitForFunction(() => /[1-9]\d* acquires answered here/.test(document.querySelector("#shares-summary").textContent),
    null, { timeout: 20000 });
  const shares = await page.locator("#shares-summary").innerText();
  if (!/slices taken/.test(shares)) fail(`the slices section says nothing of slices: ${shares}`);
  await page.screenshot({ path: screenshot });
  console.log(`status page (Redis): "${summary}"; slices: "${shares}"; screenshot in ${screenshot}`);
  if (errors.length) fail(`console errors: ${errors.join(" | ")}`);
} finally {
  await browser.close();
}
