// Screenshot of the demo page served by a real rtcgate, for docs/.
// Usage: node web-demo/screenshot.mjs [out.png]   (default docs/web-demo.png)
// Env: RTCGATE_BIN as for the tests. Set SCREENSHOT_CALL=NUMBER to place a
// call first (once the gateway can carry calls: shows live media figures).
import { join, dirname } from "node:path";
import { mkdirSync } from "node:fs";
import { REPO, assertPresent, freeUdpPort, launchBrowser, openDemo, sleep, startGateway, startRtpengine, startSipp, waitForDemo } from "./tests/harness.mjs";

const out = process.argv[2] || join(REPO, "docs/web-demo.png");
assertPresent(["rtcgate", "chromium", "dist", "rtpengine", "sipp"]);
// A call in progress: rtpengine, a PBX echoing the audio, a registered user.
const rtpengine = await startRtpengine();
const pbxPort = await freeUdpPort();
const gw = await startGateway({
  users: [["1001", "secret"]],
  extraToml: `
[auth]
trusted = ["127.0.0.1:${pbxPort}"]

[rtpengine]
instances = [{ address = "127.0.0.1:${rtpengine.ngPort}", weight = 1 }]

[[routes]]
prefix = "2"
destination = "127.0.0.1:${pbxPort}"
`,
});
const pbx = await startSipp(["-sf", join(REPO, "loadtest/scenarios/pbx_uas.xml"), "-rtp_echo", "-m", "1"], { port: pbxPort });
let browser;
try {
  browser = await launchBrowser({ spki: gw.spki });
  const page = await openDemo(browser, gw, { user: "1001", password: "secret" });
  await page.fill("#display-name", "Alice");
  await page.click("#btn-register");
  await waitForDemo(page, "registered", (s) => s.registration === "registered");
  await page.fill("#number", process.env.SCREENSHOT_CALL || "2000");
  await page.click("#btn-call");
  await waitForDemo(page, "call established", (s) => s.call === "established", 20_000);
  await sleep(8000);
  await page.evaluate(() => document.querySelector("details.events").setAttribute("open", ""));
  mkdirSync(dirname(out), { recursive: true });
  await page.screenshot({ path: out, fullPage: true });
  console.log(`wrote ${out}`);
} finally {
  await browser?.close();
  await pbx.stop();
  await gw.stop();
  await rtpengine.stop();
}
