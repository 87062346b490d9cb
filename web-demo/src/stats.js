// Condenses an RTCStatsReport into the figures the page shows. Pure: takes
// any iterable of stats dictionaries (RTCStatsReport.values()) plus the
// previous summary (for per-second rates), so it is unit-tested in Node.

function candidateText(c) {
  if (!c) return "";
  const addr = c.address || c.ip || "?";
  return `${c.candidateType || "?"} ${addr}:${c.port} ${c.protocol || ""}`.trim();
}

function codecText(c) {
  return `${(c.mimeType || "").replace(/^audio\//, "")}/${c.clockRate || ""}`;
}

/**
 * @param {Iterable<object>} entries stats dictionaries
 * @param {object|null} prev the previous summary, for rates
 */
export function summarize(entries, prev = null) {
  const byId = new Map();
  for (const s of entries) byId.set(s.id, s);
  const out = {
    timestamp: 0,
    packetsSent: 0,
    bytesSent: 0,
    packetsReceived: 0,
    bytesReceived: 0,
    packetsLost: 0,
    remotePacketsLost: 0,
    jitterMs: null,
    rttMs: null,
    lossPct: 0,
    sendPps: 0,
    recvPps: 0,
    sendKbps: 0,
    recvKbps: 0,
    codec: "",
    dtlsState: "",
    iceState: "",
    srtpCipher: "",
    candidatePair: null,
  };
  let transport = null;
  let pair = null;
  for (const s of byId.values()) {
    out.timestamp = Math.max(out.timestamp, s.timestamp || 0);
    if (s.kind && s.kind !== "audio" && (s.type === "inbound-rtp" || s.type === "outbound-rtp")) continue;
    switch (s.type) {
      case "outbound-rtp":
        out.packetsSent += s.packetsSent || 0;
        out.bytesSent += s.bytesSent || 0;
        if (!out.codec && s.codecId && byId.has(s.codecId)) out.codec = codecText(byId.get(s.codecId));
        break;
      case "inbound-rtp":
        out.packetsReceived += s.packetsReceived || 0;
        out.bytesReceived += s.bytesReceived || 0;
        out.packetsLost += Math.max(0, s.packetsLost || 0);
        if (typeof s.jitter === "number") out.jitterMs = Math.round(s.jitter * 10000) / 10;
        if (s.codecId && byId.has(s.codecId)) out.codec = codecText(byId.get(s.codecId));
        break;
      case "remote-inbound-rtp":
        if (typeof s.roundTripTime === "number") out.rttMs = Math.round(s.roundTripTime * 10000) / 10;
        out.remotePacketsLost += Math.max(0, s.packetsLost || 0);
        break;
      case "transport":
        if (!transport || s.selectedCandidatePairId) transport = s;
        break;
      case "candidate-pair":
        if (s.selected || (!pair && s.nominated && s.state === "succeeded")) pair = s;
        break;
      default:
        break;
    }
  }
  if (transport) {
    out.dtlsState = transport.dtlsState || "";
    out.iceState = transport.iceState || "";
    out.srtpCipher = transport.srtpCipher || "";
    if (transport.selectedCandidatePairId && byId.has(transport.selectedCandidatePairId)) {
      pair = byId.get(transport.selectedCandidatePairId);
    }
  }
  if (pair) {
    out.candidatePair = {
      local: candidateText(byId.get(pair.localCandidateId)),
      remote: candidateText(byId.get(pair.remoteCandidateId)),
      state: pair.state || "",
    };
    if (out.rttMs === null && typeof pair.currentRoundTripTime === "number") {
      out.rttMs = Math.round(pair.currentRoundTripTime * 10000) / 10;
    }
  }
  const expected = out.packetsReceived + out.packetsLost;
  out.lossPct = expected > 0 ? Math.round((out.packetsLost / expected) * 1000) / 10 : 0;
  if (prev && out.timestamp > prev.timestamp) {
    const dt = (out.timestamp - prev.timestamp) / 1000;
    const rate = (a, b) => Math.max(0, (a - b) / dt);
    out.sendPps = Math.round(rate(out.packetsSent, prev.packetsSent));
    out.recvPps = Math.round(rate(out.packetsReceived, prev.packetsReceived));
    out.sendKbps = Math.round(rate(out.bytesSent, prev.bytesSent) * 8 / 100) / 10;
    out.recvKbps = Math.round(rate(out.bytesReceived, prev.bytesReceived) * 8 / 100) / 10;
  }
  return out;
}
