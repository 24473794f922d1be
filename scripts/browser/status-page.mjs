// The status page in a real browser: headless Debian chromium driven by playwright-core.
//   node status-page.mjs URL SCREENSHOT  (with THROTTLE_CMD: a shell command that sends a ReportThrottle)
// Checks: the page loads with no console errors or page errors; it lists the resources; after THROTTLE_CMD
// reports a throttle on bedrock.invoke, the page shows the pause and the lowered rate within 2 s, without
// reloading; the Envoy rate limit section shows the domain the script asked about; a screenshot is saved. Exits non-zero on any failure.
import { execSync } from "node:child_process";
import { open } from "./browser.mjs";

const [url, screenshot] = process.argv.slice(2);
const fail = (msg) => { console.error("status page: " + msg); process.exitCode = 1; };

const { browser, page, errors } = await open(url, 900);
try {
  const row = page.locator('tr[data-resource="bedrock.invoke"]');
  await row.waitFor({ timeout: 10000 });
  const rows = await page.locator("#resources tbody tr").count();
  if (rows < 3) fail(`expected the default config's 3 resources, saw ${rows}`);
  const loads = await page.evaluate(() => performance.getEntriesByType("navigation").length);

  const sent = Date.now();
  execSync(process.env.THROTTLE_CMD, { stdio: "inherit" });
  await row.locator(".pause").first().waitFor({ timeout: 5000 });
  const took = Date.now() - sent;
  console.log(`status page: the pause showed ${took} ms after the ReportThrottle`);
  if (took > 2000) fail(`the pause took ${took} ms to show (more than 2 s)`);
  const text = await row.innerText();
  if (!/paused/.test(text) || !/lowered/.test(text)) fail(`bedrock.invoke's row does not show the pause and rate: ${text}`);
  if (!/priority: critical 20% reserved \(default\) > normal 10% reserved > batch/.test(text)) {
    fail(`bedrock.invoke's row does not show its priority classes: ${text}`);
  }
  const partner = await page.locator('tr[data-resource="partner.stripe"]').innerText();
  if (!/overrides: tenant=internal \(bypass\)/.test(partner)) fail(`partner.stripe's row does not show the bypass: ${partner}`);
  if (await page.evaluate(() => performance.getEntriesByType("navigation").length) !== loads) fail("the page reloaded");
  // Envoy's rate limit service answered (the script sent ShouldRateLimit calls first): its section shows them.
  const rls = await page.locator("#rls").innerText();
  if (!/edge\s+3\s+0/.test(rls)) fail(`the rate limit section does not show domain edge's 3 answers: ${rls}`);

  // Search narrows the table; clearing it brings everything back.
  await page.fill("#prefix", "bedrock");
  await page.waitForFunction(() => document.querySelectorAll("#resources tbody tr").length === 1, null, { timeout: 5000 });
  await page.fill("#prefix", "");
  await page.waitForFunction(() => document.querySelectorAll("#resources tbody tr").length >= 3, null, { timeout: 5000 });
  await page.waitForTimeout(2500); // a few samples in the charts
  await page.screenshot({ path: screenshot, fullPage: true });
  console.log(`status page: screenshot in ${screenshot}`);
  if (errors.length) fail(`console errors: ${errors.join(" | ")}`);
} finally {
  await browser.close();
}
