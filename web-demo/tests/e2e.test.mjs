// End-to-end calls through rtcgate with real media: Chromium (SIP.js page)
// ⇄ rtcgate ⇄ sipp as the demo PBX, media relayed by rtpengine.
//
// Users are added with `rtcgate user add`; the PBX (sipp) is trusted by its
// address and reached by a static route for extensions 2xxx.

import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import {
  WEB_DEMO, assertPresent, cleanupStack, demoState, freeUdpPort, launchBrowser, openDemo, skipUnlessPresent, sleep,
  startGateway, startRtpengine, startSipp, waitFor, waitForDemo, E2E_SKIP,
} from "./harness.mjs";

const PARTS = ["rtcgate", "chromium", "dist", "rtpengine", "sipp"];
const SKIP = E2E_SKIP || skipUnlessPresent(PARTS);
const USERS = { 1001: "secret1001", 1002: "secret1002" };
const PBX_EXTENSION = "2000";
const SIPP_DIR = join(WEB_DEMO, "tests/sipp");

/** Config for the demo PBX (trusted, extensions 2xxx) and rtpengine. */
function e2eToml({ ngPort, pbxPort }) {
  return `
[auth]
trusted = ["127.0.0.1:${pbxPort}"]

[rtpengine]
instances = [{ address = "127.0.0.1:${ngPort}", weight = 1 }]
ws_drop_grace_ms = 2000

[[routes]]
prefix = "2"
destination = "127.0.0.1:${pbxPort}"
`;
}

// The suite itself always runs so that each planned test shows up as
// skipped (with the reason) in the runner's summary.
describe("end-to-end calls (browser, rtcgate, rtpengine, sipp)", { timeout: 300_000 }, () => {
  let rtpengine;
  let pbxPort; // the port the sipp PBX of each test listens on / sends from
  let gw;
  let browser;

  before(async () => {
    if (SKIP) return;
    assertPresent(PARTS);
    rtpengine = await startRtpengine();
    // sipp PBXes bind this port, one test at a time, so the config can
    // name it before they start.
    pbxPort = await freeUdpPort();
    gw = await startGateway({ extraToml: e2eToml({ ngPort: rtpengine.ngPort, pbxPort }), users: Object.entries(USERS) });
    browser = await launchBrowser({ spki: gw.spki });
  });

  after(async () => {
    await browser?.close();
    await gw?.stop();
    await rtpengine?.stop();
  });

  /** The demo PBX (sipp) on pbxPort. */
  function pbx(args, opts = {}) {
    return startSipp(args, { port: pbxPort, ...opts });
  }

  async function register(page) {
    await page.click("#btn-register");
    return waitForDemo(page, "registered", (s) => s.registration === "registered" || s.registration === "failed")
      .then((s) => { assert.equal(s.registration, "registered", JSON.stringify(s.lastError)); return s; });
  }

  /** Media flowed both ways over DTLS-SRTP in this page's current call. */
  async function mediaBothWays(page, min = 50) {
    await page.evaluate(() => window.rtcgateDemo.actions.pollStats());
    return waitForDemo(page, `>=${min} packets both ways, DTLS connected`, (s) =>
      s.stats && s.stats.packetsSent >= min && s.stats.packetsReceived >= min && s.dtlsState === "connected", 20_000);
  }

  async function rtpengineEmpty() {
    await waitFor("rtpengine without calls", async () => {
      const r = await rtpengine.ng({ command: "list" });
      return r.result === "ok" && Array.isArray(r.calls) && r.calls.length === 0;
    }, { ms: 10_000, every: 250 });
  }

  test("a browser registers and calls the demo PBX: media both ways, DTLS, nothing left in rtpengine", { skip: SKIP }, async () => {
    const c = cleanupStack();
    try {
      const sipp = await pbx(["-sn", "uas", "-rtp_echo", "-m", "1"]);
      c.push(() => sipp.stop());
      const page = await openDemo(browser, gw, { user: "1001", password: USERS[1001] });
      c.push(() => page.close());
      await register(page);
      await page.fill("#number", PBX_EXTENSION);
      await page.click("#btn-call");
      await waitForDemo(page, "call established", (s) => s.call === "established", 20_000);
      const s = await mediaBothWays(page);
      assert.ok(s.stats.candidatePair, "a selected candidate pair");
      assert.ok(s.stats.bytesReceived > 0 && s.stats.bytesSent > 0);
      assert.ok(s.stats.jitterMs !== null, "jitter reported");
      await page.click("#btn-hangup");
      const end = await waitForDemo(page, "call ended", (st) => st.call === "idle");
      assert.equal(end.lastCall.result, "answered");
      assert.ok(end.dtlsConnectedSeen);
      await rtpengineEmpty();
      assert.equal(await sipp.exitCode(), 0, sipp.output().slice(-2000));
    } finally {
      await c.run();
    }
  });

  test("the PBX calls a registered browser, which answers; the PBX hangs up", { skip: SKIP }, async () => {
    const c = cleanupStack();
    try {
      const page = await openDemo(browser, gw, { user: "1001", password: USERS[1001] });
      c.push(() => page.close());
      await register(page);
      const sipp = await pbx(["-sn", "uac", "-s", "1001", "-m", "1", "-d", "6000", "-rtp_echo"], { remote: `127.0.0.1:${gw.udpPort}` });
      c.push(() => sipp.stop());
      const ringing = await waitForDemo(page, "incoming call", (s) => s.call === "incoming", 15_000);
      assert.ok(await page.isVisible("#incoming"));
      assert.match(ringing.peer, /sipp|127\.0\.0\.1/);
      await page.click("#btn-answer");
      await waitForDemo(page, "call established", (s) => s.call === "established");
      await mediaBothWays(page);
      const end = await waitForDemo(page, "PBX hung up", (s) => s.call === "idle", 20_000);
      assert.equal(end.lastCall.direction, "in");
      assert.equal(end.lastCall.result, "answered");
      assert.equal(await sipp.exitCode(), 0, sipp.output().slice(-2000));
      await rtpengineEmpty();
    } finally {
      await c.run();
    }
  });

  test("browser A calls browser B; hold/resume; DTMF by SIP INFO", { skip: SKIP }, async () => {
    const c = cleanupStack();
    try {
      const a = await openDemo(browser, gw, { user: "1001", password: USERS[1001] });
      c.push(() => a.close());
      const b = await openDemo(browser, gw, { user: "1002", password: USERS[1002] });
      c.push(() => b.close());
      await register(a);
      await register(b);
      await a.fill("#number", "1002");
      await a.click("#btn-call");
      const ring = await waitForDemo(b, "B rings", (s) => s.call === "incoming", 15_000);
      assert.match(ring.peer, /1001/);
      await b.click("#btn-answer");
      await waitForDemo(a, "A established", (s) => s.call === "established");
      await waitForDemo(b, "B established", (s) => s.call === "established");
      await mediaBothWays(a);
      await mediaBothWays(b);

      // Hold: A's offer is sendonly, B answers recvonly, so A stops receiving.
      await a.click("#btn-hold");
      await waitForDemo(a, "A on hold", (s) => s.held);
      await sleep(1500);
      const h1 = (await demoState(a)).stats.packetsReceived;
      await sleep(2000);
      await a.evaluate(() => window.rtcgateDemo.actions.pollStats());
      const h2 = (await demoState(a)).stats.packetsReceived;
      assert.ok(h2 - h1 < 10, `A still received ${h2 - h1} packets while holding`);
      await a.click("#btn-hold");
      await waitForDemo(a, "A resumed", (s) => !s.held);
      await mediaBothWays(a, h2 + 50);

      for (const tone of ["1", "2", "#"]) await a.click(`#keypad button[data-tone="${tone}"]`);
      await waitForDemo(b, "B got DTMF 12#", (s) => s.dtmfReceived === "12#");
      assert.equal((await demoState(a)).dtmfSent, "12#");

      await a.click("#btn-hangup");
      const endA = await waitForDemo(a, "A idle", (s) => s.call === "idle");
      const endB = await waitForDemo(b, "B idle", (s) => s.call === "idle");
      assert.equal(endA.lastCall.result, "answered");
      assert.equal(endB.lastCall.result, "answered");
      assert.ok(endA.dtlsConnectedSeen && endB.dtlsConnectedSeen);
      await rtpengineEmpty();
    } finally {
      await c.run();
    }
  });

  test("a wrong password is reported as a failed registration (401/403)", { skip: SKIP }, async () => {
    const page = await openDemo(browser, gw, { user: "1001", password: "not-the-password" });
    try {
      await page.click("#btn-register");
      const s = await waitForDemo(page, "registration failed", (st) => st.registration === "failed");
      assert.ok([401, 403, 407].includes(s.lastError.code), JSON.stringify(s.lastError));
      assert.match(await page.textContent("#error-text"), /^Registration failed: 40[137] .*(wrong user name or password|forbidden)/);
      const registers = s.sipTrace.filter((m) => m.dir === "out" && m.text.startsWith("REGISTER "));
      assert.equal(registers.length, 2, "one unauthenticated REGISTER, one with credentials");
      assert.match(registers[1].text, /^Authorization: Digest .*algorithm=MD5/m);
    } finally {
      await page.close();
    }
  });

  test("a busy PBX: the call fails with 486 Busy Here shown", { skip: SKIP }, async () => {
    const c = cleanupStack();
    try {
      const sipp = await pbx(["-sf", join(SIPP_DIR, "uas-busy.xml"), "-m", "1"]);
      c.push(() => sipp.stop());
      const page = await openDemo(browser, gw, { user: "1001", password: USERS[1001] });
      c.push(() => page.close());
      await register(page);
      await page.fill("#number", PBX_EXTENSION);
      await page.click("#btn-call");
      const s = await waitForDemo(page, "call failed", (st) => st.call === "idle" && st.lastError, 15_000);
      assert.equal(s.lastError.code, 486);
      assert.match(await page.textContent("#error-text"), /^Call failed: 486 Busy Here/);
      await rtpengineEmpty();
    } finally {
      await c.run();
    }
  });
});
