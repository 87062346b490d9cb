// The harness's own parts that the end-to-end tests rely on, checked now
// (before the gateway can carry calls): rtpengine on loopback driven over
// ng, the sipp demo-PBX scenarios, process clean-up by PID.

import assert from "node:assert/strict";
import { join } from "node:path";
import { describe, test } from "node:test";
import { WEB_DEMO, assertPresent, skipUnlessPresent, startProcess, startRtpengine, startSipp } from "./harness.mjs";

describe("harness: rtpengine", { skip: skipUnlessPresent(["rtpengine"]), timeout: 60_000 }, () => {
  test("starts on loopback, answers ng ping and list, stops by PID", async () => {
    assertPresent(["rtpengine"]);
    const r = await startRtpengine();
    try {
      assert.deepEqual(await r.ng({ command: "ping" }), { result: "pong" });
      const list = await r.ng({ command: "list" });
      assert.equal(list.result, "ok");
      assert.deepEqual(list.calls, []);
      assert.ok(r.portMin >= 30000 && r.portMax < 50000 && r.portMax > r.portMin);
    } finally {
      await r.stop();
    }
    assert.notEqual(r.proc.child.exitCode === null && r.proc.child.signalCode === null, true, "rtpengine stopped");
  });
});

describe("harness: sipp demo PBX", { skip: skipUnlessPresent(["sipp"]), timeout: 60_000 }, () => {
  test("the busy PBX scenario answers an INVITE with 486", async () => {
    assertPresent(["sipp"]);
    const pbx = await startSipp(["-sf", join(WEB_DEMO, "tests/sipp/uas-busy.xml"), "-m", "1"]);
    // A caller that expects 486 (sipp's uac scenario would fail on it, so
    // use a tiny inline scenario).
    const caller = await startSipp(["-sf", join(WEB_DEMO, "tests/sipp/uac-expect-486.xml"), "-m", "1", "-timeout", "10s"],
      { remote: `127.0.0.1:${pbx.port}` });
    try {
      assert.equal(await caller.exitCode(15_000), 0, caller.output().slice(-2000));
      assert.equal(await pbx.exitCode(5_000), 0, pbx.output().slice(-2000));
    } finally {
      await caller.stop();
      await pbx.stop();
    }
  });
});

test("stop() ends a process by PID, with SIGKILL if SIGTERM is ignored", async () => {
  const p = startProcess("stubborn", process.execPath, ["-e", "process.on('SIGTERM', () => {}); setInterval(() => {}, 1000); console.log('up')"]);
  for (let i = 0; i < 50 && !p.output().includes("up"); i++) await new Promise((r) => setTimeout(r, 100));
  const t0 = Date.now();
  await p.stop();
  assert.equal(p.child.signalCode, "SIGKILL");
  assert.ok(Date.now() - t0 < 8000);
});
