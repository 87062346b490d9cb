// Screenshot of the demo page served by a real rtcgate, for docs/.
// Usage: node web-demo/screenshot.mjs [out.png]   (default docs/web-demo.png)
// Env: RTCGATE_BIN as for the tests. Set SCREENSHOT_CALL=NUMBER to place a
// call first (once the gateway can carry calls: shows live media figures).
import { join } from "node:path";
import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import { REPO, assertPresent, launchBrowser, openDemo, sleep, startGateway, waitForDemo } from "./tests/harness.mjs";

const out = process.argv[2] || join(REPO, "docs/web-demo.png");
assertPresent(["rtcgate", "chromium", "dist"]);
const gw = await startGateway();
let browser;
try {
  browser = await launchBrowser({ spki: gw.spki });
  const page = await openDemo(browser, gw, { user: "1001", password: "secret" });
  await page.fill("#display-name", "Alice");
  const number = process.env.SCREENSHOT_CALL;
  if (number) {
    await page.click("#btn-register");
    await waitForDemo(page, "registered", (s) => s.registration !== "registering");
    await page.fill("#number", number);
    await page.click("#btn-call");
    await waitForDemo(page, "call settled", (s) => s.call === "established" || (s.call === "idle" && s.lastCall), 20_000);
    await sleep(8000);
  } else {
    // Today's gateway answers 501 to everything but OPTIONS: show that.
    await page.click("#btn-register");
    await waitForDemo(page, "registration settled", (s) => s.registration !== "registering");
    await page.fill("#number", "2000");
    await page.click("#btn-call");
    await waitForDemo(page, "call settled", (s) => s.call === "idle" && s.lastCall);
    await page.fill("#number", "");
  }
  await page.evaluate(() => document.querySelector("details.events").setAttribute("open", ""));
  mkdirSync(dirname(out), { recursive: true });
  await page.screenshot({ path: out, fullPage: true });
  console.log(`wrote ${out}`);
} finally {
  await browser?.close();
  await gw.stop();
}
