// The demo page against today's rtcgate (transports only: OPTIONS to itself
// registers with digest, refuses wrong passwords). Real Chromium, real gateway.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import {
  assertPresent, demoState, freeTcpPort, launchBrowser, openDemo, rtcgateBin, run, skipUnlessPresent, startGateway, waitForDemo,
} from "./harness.mjs";
import { summarize } from "../src/stats.js";

const PARTS = ["rtcgate", "chromium", "dist"];

// One visible verdict on the prerequisites: a failure in CI, a skip elsewhere.
test("browser test prerequisites: rtcgate binary, Chromium, page build", { skip: skipUnlessPresent(PARTS) }, () => {
  assertPresent(PARTS);
});

describe("web demo served by rtcgate", { skip: skipUnlessPresent(PARTS), timeout: 120_000 }, () => {
  let gw;
  let browser;

  before(async () => {
    assertPresent(PARTS);
    gw = await startGateway();
    browser = await launchBrowser({ spki: gw.spki });
  });

  after(async () => {
    await browser?.close();
    await gw?.stop();
  });

  test("the page, its script and style load over HTTPS from rtcgate", async () => {
    for (const [path, type] of [["/", "text/html"], ["/app.js", "text/javascript"], ["/style.css", "text/css"]]) {
      const r = await gw.get(path);
      assert.equal(r.status, 200, path);
      assert.match(r.headers["content-type"], new RegExp(`^${type}`), path);
    }
    const page = await browser.newPage();
    const resp = await page.goto(`${gw.origin}/`);
    assert.equal(resp.status(), 200);
    assert.equal(await page.title(), "rtcgate softphone");
    await page.waitForFunction(() => !!window.rtcgateDemo);
    const s = await demoState(page);
    assert.equal(s.transport, "disconnected");
    assert.equal(s.registration, "unregistered");
    assert.equal(s.call, "idle");
    assert.equal(await page.evaluate(() => window.rtcgateDemo.sipjsVersion), "0.21.2");
    // Defaults: the WebSocket URL is the page's own origin, the domain its host.
    assert.equal(await page.getAttribute("#server", "placeholder"), `wss://127.0.0.1:${gw.port}`);
    assert.equal(await page.getAttribute("#domain", "placeholder"), "127.0.0.1");
    assert.ok(await page.isVisible("#keypad"));
    assert.deepEqual(page.consoleErrors, []);
    await page.close();
  });

  test("SIP.js connects its WebSocket to rtcgate with subprotocol sip", async () => {
    const page = await openDemo(browser, gw);
    await page.click("#btn-connect");
    const s = await waitForDemo(page, "transport connected", (st) => st.transport === "connected");
    assert.equal(s.wsProtocol, "sip");
    assert.equal(s.server, `wss://127.0.0.1:${gw.port}`);
    assert.equal(await page.textContent("#pill-transport b"), "connected");
    assert.equal(s.lastError, null);
    await page.click("#btn-disconnect");
    await waitForDemo(page, "transport disconnected", (st) => st.transport === "disconnected");
    await page.close();
  });

  test("the right password registers (digest through SIP.js)", async () => {
    const page = await openDemo(browser, gw, { user: "1001", password: "secret" });
    await page.click("#btn-register");
    const s = await waitForDemo(page, "registered", (st) => st.registration === "registered");
    assert.equal(s.lastError, null);
    // SIP.js answered the MD5 challenge, the last of the two rtcgate sends.
    const challenge = s.sipTrace.find((m) => m.dir === "in" && m.text.startsWith("SIP/2.0 401"));
    assert.ok(challenge, "challenged first");
    const auths = challenge.text.match(/^WWW-Authenticate: .*$/gim) || [];
    assert.equal(auths.length, 2);
    assert.match(auths[0], /SHA-256/);
    assert.match(auths[1], /MD5/);
    const shown = run(rtcgateBin(), ["location", "show", "--config", gw.configPath, "1001"]);
    assert.match(shown.stdout, /sip:1001@127\.0\.0\.1/, shown.stdout + shown.stderr);
    await page.click("#btn-unregister");
    await waitForDemo(page, "unregistered", (st) => st.registration !== "registered");
    await page.close();
  });

  test("a wrong password is refused with 403, shown, and nothing is stored", async () => {
    const page = await openDemo(browser, gw, { user: "1001", password: "wrong" });
    await page.click("#btn-register");
    const s = await waitForDemo(page, "registration failed", (st) => st.registration === "failed");
    assert.equal(s.lastError.kind, "sip");
    assert.equal(s.lastError.code, 403);
    assert.ok(await page.isVisible("#error"));
    assert.match(await page.textContent("#error-text"), /^Registration failed: 403 Forbidden/);
    assert.equal(await page.textContent("#pill-registration b"), "failed");
    const out = s.sipTrace.filter((m) => m.dir === "out" && m.text.startsWith("REGISTER "));
    assert.equal(out.length, 2, "REGISTER, then REGISTER with credentials");
    assert.match(out[0].text, /^Via: SIP\/2.0\/WSS [a-z0-9]+\.invalid;/m);
    await new Promise((r) => setTimeout(r, 1500));
    const later = await demoState(page);
    assert.equal(later.sipTrace.filter((m) => m.dir === "out" && m.text.startsWith("REGISTER ")).length, 2, "not retried");
    const shown = run(rtcgateBin(), ["location", "show", "--config", gw.configPath, "1001"]);
    assert.match(shown.stdout, /no registrations/, shown.stdout + shown.stderr);
    await page.close();
  });

  test("a call to an unknown number ends with 404, shown and logged", async () => {
    const page = await openDemo(browser, gw);
    await page.fill("#number", "2000");
    await page.click("#btn-call");
    const s = await waitForDemo(page, "call failed", (st) => st.call === "idle" && st.lastCall && st.lastError);
    assert.equal(s.lastError.code, 404);
    assert.match(await page.textContent("#error-text"), /^Call failed: 404 Not Found/);
    assert.equal(s.lastCall.direction, "out");
    assert.equal(s.lastCall.peer, "2000@127.0.0.1");
    assert.equal(s.lastCall.result, "404 Not Found");
    assert.match(await page.textContent("#calllog-body"), /2000@127\.0\.0\.1.*404 Not Found/);
    const invite = s.sipTrace.find((m) => m.dir === "out" && m.text.startsWith("INVITE sip:2000@127.0.0.1 "));
    assert.ok(invite, "INVITE sent");
    // A WebRTC offer: DTLS-SRTP, ICE, rtcp-mux, no public STUN server used.
    assert.match(invite.text, /UDP\/TLS\/RTP\/SAVPF/);
    assert.match(invite.text, /a=fingerprint:sha-256 /);
    assert.match(invite.text, /a=rtcp-mux/);
    assert.doesNotMatch(invite.text, /typ srflx/);
    await page.close();
  });

  test("the stats summary reads real Chromium getStats() (a local peer-connection pair, fake microphone)", async () => {
    const page = await browser.newPage();
    await page.goto(`${gw.origin}/`);
    const raw = await page.evaluate(async () => {
      const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
      const a = new RTCPeerConnection({ iceServers: [] });
      const b = new RTCPeerConnection({ iceServers: [] });
      a.onicecandidate = (e) => e.candidate && b.addIceCandidate(e.candidate);
      b.onicecandidate = (e) => e.candidate && a.addIceCandidate(e.candidate);
      stream.getTracks().forEach((t) => a.addTrack(t, stream));
      const bStream = await navigator.mediaDevices.getUserMedia({ audio: true });
      const offer = await a.createOffer();
      await a.setLocalDescription(offer);
      await b.setRemoteDescription(offer);
      // b sends too (addTrack reuses the transceiver the offer created).
      bStream.getTracks().forEach((t) => b.addTrack(t, bStream));
      const answer = await b.createAnswer();
      await b.setLocalDescription(answer);
      await a.setRemoteDescription(answer);
      const snap = async () => [...(await a.getStats()).values()];
      await new Promise((r) => setTimeout(r, 2000));
      const first = await snap();
      await new Promise((r) => setTimeout(r, 1500));
      const second = await snap();
      a.close(); b.close();
      stream.getTracks().forEach((t) => t.stop());
      bStream.getTracks().forEach((t) => t.stop());
      return { first, second };
    });
    const s1 = summarize(raw.first);
    const s2 = summarize(raw.second, s1);
    assert.equal(s2.dtlsState, "connected");
    assert.ok(s2.packetsSent > s1.packetsSent && s2.packetsSent > 50, `sent ${s2.packetsSent}`);
    assert.ok(s2.packetsReceived > 0, `received ${s2.packetsReceived}`);
    assert.ok(s2.sendPps > 20, `send rate ${s2.sendPps}/s`);
    assert.match(s2.codec, /\/\d+$/);
    assert.match(s2.srtpCipher, /AES|AEAD/);
    assert.ok(s2.candidatePair && /^host /.test(s2.candidatePair.local), JSON.stringify(s2.candidatePair));
    assert.ok(s2.jitterMs !== null);
    await page.close();
  });

  test("a WebSocket that cannot connect is reported as refused", async () => {
    const closed = await freeTcpPort();
    const page = await openDemo(browser, gw, { query: `?server=wss://127.0.0.1:${closed}` });
    await page.click("#btn-connect");
    const s = await waitForDemo(page, "websocket error", (st) => st.lastError && st.lastError.kind === "websocket");
    assert.equal(s.transport, "disconnected");
    assert.match(await page.textContent("#error-text"), new RegExp(`^WebSocket refused: could not connect to wss://127\\.0\\.0\\.1:${closed}`));
    await page.close();
  });
});

describe("web demo in a browser without a microphone", { skip: skipUnlessPresent(PARTS), timeout: 120_000 }, () => {
  let gw;
  let browser;

  before(async () => {
    assertPresent(PARTS);
    gw = await startGateway();
    // No fake capture device and no auto-accepted permission prompt:
    // getUserMedia fails (no device, or permission denied).
    browser = await launchBrowser({ spki: gw.spki, fakeMedia: false, denyMicrophone: true });
  });

  after(async () => {
    await browser?.close();
    await gw?.stop();
  });

  test("calling shows the no-microphone error and sends no INVITE", async () => {
    const page = await openDemo(browser, gw);
    await page.fill("#number", "2000");
    await page.click("#btn-call");
    const s = await waitForDemo(page, "no-microphone error", (st) => st.lastError && st.call === "idle");
    assert.equal(s.lastError.kind, "no-microphone", JSON.stringify(s.lastError));
    assert.match(await page.textContent("#error-text"), /^No microphone: /);
    assert.equal(s.lastCall.result, "no microphone");
    assert.equal(s.sipTrace.filter((m) => m.text.startsWith("INVITE ")).length, 0);
    await page.close();
  });
});
