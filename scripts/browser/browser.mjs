// What both browser checks share: Debian's headless chromium (playwright-core) on one page that records
// console errors and page errors.
import { chromium } from "playwright-core";

// A browser and a page of `height` px at `url` (loaded), with `errors` filled as they happen.
export async function open(url, height) {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
  });
  const page = await browser.newPage({ viewport: { width: 1400, height } });
  const errors = [];
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  page.on("pageerror", (e) => errors.push(String(e)));
  try {
    await page.goto(url, { waitUntil: "load" });
  } catch (e) {
    await browser.close();
    throw e;
  }
  return { browser, page, errors };
}
