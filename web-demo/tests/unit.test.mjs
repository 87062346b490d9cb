// The page's pure parts (error wording, stats condensing), without a browser.

import assert from "node:assert/strict";
import { test } from "node:test";
import { describeMediaError, describeResponse, describeTransportError, isMediaError, targetUri } from "../src/errors.js";
import { summarize } from "../src/stats.js";
import { bdecode, bencode } from "./harness.mjs";

test("SIP failures keep the code and reason phrase, with a hint", () => {
  const e = describeResponse("Registration failed", 401, "Unauthorized");
  assert.equal(e.code, 401);
  assert.equal(e.message, "Registration failed: 401 Unauthorized (wrong user name or password)");
  assert.equal(describeResponse("Call failed", 503, "Service Unavailable").message,
    "Call failed: 503 Service Unavailable (service unavailable: no PBX or media relay reachable)");
  assert.equal(describeResponse("Call failed", 599, "").message, "Call failed: 599");
});

test("getUserMedia failures read as no microphone", () => {
  for (const name of ["NotFoundError", "NotAllowedError", "NotReadableError"]) {
    const err = Object.assign(new Error("x"), { name });
    assert.ok(isMediaError(err));
    const d = describeMediaError(err);
    assert.equal(d.kind, "no-microphone");
    assert.match(d.message, /^No microphone: /);
  }
  assert.ok(!isMediaError(new TypeError("y")));
});

test("transport errors tell refused from dropped", () => {
  assert.match(describeTransportError("wss://h:1", new Error("code 1006")).message, /^WebSocket refused: could not connect to wss:\/\/h:1/);
  assert.match(describeTransportError("wss://h:1", null, true).message, /closed unexpectedly/);
});

test("dial strings become SIP URIs in the account's domain", () => {
  assert.equal(targetUri(" 2000 ", "example.com"), "sip:2000@example.com");
  assert.equal(targetUri("bob@pbx.example", "example.com"), "sip:bob@pbx.example");
  assert.equal(targetUri("sips:bob@x", "d"), "sips:bob@x");
  assert.equal(targetUri("", "d"), null);
});

test("stats: totals, jitter, RTT, loss, selected pair and per-second rates", () => {
  const mk = (t, sent, recv) => [
    { id: "T1", type: "transport", timestamp: t, dtlsState: "connected", iceState: "connected", srtpCipher: "AES_CM_128_HMAC_SHA1_80", selectedCandidatePairId: "CP1" },
    { id: "CP1", type: "candidate-pair", timestamp: t, localCandidateId: "L1", remoteCandidateId: "R1", state: "succeeded", currentRoundTripTime: 0.004 },
    { id: "L1", type: "local-candidate", timestamp: t, address: "127.0.0.1", port: 50000, protocol: "udp", candidateType: "host" },
    { id: "R1", type: "remote-candidate", timestamp: t, address: "127.0.0.1", port: 30000, protocol: "udp", candidateType: "host" },
    { id: "O1", type: "outbound-rtp", kind: "audio", timestamp: t, packetsSent: sent, bytesSent: sent * 100 },
    { id: "I1", type: "inbound-rtp", kind: "audio", timestamp: t, packetsReceived: recv, bytesReceived: recv * 100, packetsLost: 2, jitter: 0.0021, codecId: "C1" },
    { id: "C1", type: "codec", timestamp: t, mimeType: "audio/opus", clockRate: 48000 },
    { id: "RI1", type: "remote-inbound-rtp", kind: "audio", timestamp: t, roundTripTime: 0.0035, packetsLost: 1 },
  ];
  const a = summarize(mk(1000, 50, 48));
  assert.equal(a.packetsSent, 50);
  assert.equal(a.packetsReceived, 48);
  assert.equal(a.jitterMs, 2.1);
  assert.equal(a.rttMs, 3.5);
  assert.equal(a.lossPct, 4);
  assert.equal(a.codec, "opus/48000");
  assert.equal(a.dtlsState, "connected");
  assert.deepEqual(a.candidatePair, { local: "host 127.0.0.1:50000 udp", remote: "host 127.0.0.1:30000 udp", state: "succeeded" });
  const b = summarize(mk(2000, 100, 98), a);
  assert.equal(b.sendPps, 50);
  assert.equal(b.recvPps, 50);
  assert.equal(b.sendKbps, 40);
});

test("stats of an empty report are zeros, not errors", () => {
  const s = summarize([]);
  assert.equal(s.packetsSent, 0);
  assert.equal(s.candidatePair, null);
  assert.equal(s.jitterMs, null);
});

test("bencode round trip (the harness's ng client)", () => {
  const v = { command: "list", flags: ["a", "b"], limit: 32 };
  assert.equal(bencode(v), "d7:command4:list5:flagsl1:a1:be5:limiti32ee");
  assert.deepEqual(bdecode(bencode(v)), v);
});
