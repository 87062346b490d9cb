// rtcgate softphone: a single page on SIP.js 0.21.2.
//
// Calls, hold, mute, DTMF and media go through SIP.js's Web.SessionManager;
// registration uses a Registerer of our own so that a rejected REGISTER is
// reported once and not retried in a loop (SessionManager retries forever).
// Everything the browser tests need is readable from window.rtcgateDemo.

import { Invitation, Registerer, RegistererState, RequestPendingError, SessionState, UserAgent, Web } from "sip.js";
import { describeMediaError, describeResponse, describeTransportError, isMediaError, targetUri } from "./errors.js";
import { summarize } from "./stats.js";

/* global __SIPJS_VERSION__ */
const SIPJS_VERSION = typeof __SIPJS_VERSION__ === "string" ? __SIPJS_VERSION__ : "?";
const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const STORE_KEY = "rtcgate-demo";
const MAX_EVENTS = 300;
const MAX_TRACE = 200;
const MAX_LOG = 50;
const CHART_POINTS = 60;

// ---------------------------------------------------------------- state

/** Everything the page knows; window.rtcgateDemo.state is this object. */
const state = {
  transport: "disconnected", // disconnected | connecting | connected
  server: "",
  wsProtocol: "", // negotiated WebSocket subprotocol ("sip")
  registration: "unregistered", // unregistered | registering | registered | failed
  aor: "",
  call: "idle", // idle | calling | ringing | incoming | answering | established | terminating
  direction: null, // "out" | "in"
  peer: "",
  held: false,
  muted: false,
  lastError: null, // { kind, code, reason, message }
  errors: [],
  stats: null, // latest summarize() output
  peerConnectionState: "",
  iceConnectionState: "",
  dtlsState: "",
  dtlsConnectedSeen: false, // DTLS reached "connected" during the current/last call
  dtmfSent: "",
  dtmfReceived: "",
  callLog: [],
  lastCall: null, // the last finished call-log entry
  events: [],
  sipTrace: [], // { dir: "in"|"out", at, text }
};

let sm = null; // Web.SessionManager
let smSignature = "";
let registerer = null;
let wantRegistered = false;
let current = null; // { session, entry, prevStats }
let statsTimer = null;
let callTimer = null;
const chartData = [];

// ---------------------------------------------------------------- helpers

function config() {
  const domain = $("domain").value.trim() || location.hostname;
  const server = $("server").value.trim() || `wss://${location.host}`;
  const ice = $("ice-servers").value.split(/[\s,]+/).filter(Boolean);
  return {
    server,
    user: $("user").value.trim(),
    password: $("password").value,
    domain,
    displayName: $("display-name").value.trim(),
    iceServers: ice.map((urls) => ({ urls })),
  };
}

function saveSettings() {
  try {
    const keep = {
      user: $("user").value, domain: $("domain").value, displayName: $("display-name").value,
      server: $("server").value, iceServers: $("ice-servers").value, callLog: state.callLog,
    };
    localStorage.setItem(STORE_KEY, JSON.stringify(keep));
  } catch { /* storage may be disabled */ }
}

function loadSettings() {
  let saved = {};
  try { saved = JSON.parse(localStorage.getItem(STORE_KEY) || "{}"); } catch { saved = {}; }
  $("user").value = params.get("user") ?? saved.user ?? "";
  $("domain").value = params.get("domain") ?? saved.domain ?? "";
  $("display-name").value = saved.displayName ?? "";
  $("server").value = params.get("server") ?? saved.server ?? "";
  $("ice-servers").value = saved.iceServers ?? "";
  $("number").value = params.get("number") ?? "";
  if (Array.isArray(saved.callLog)) state.callLog = saved.callLog.slice(0, MAX_LOG);
}

function event(text, level = "info") {
  const at = new Date().toISOString().slice(11, 23);
  state.events.push({ at, level, text });
  if (state.events.length > MAX_EVENTS) state.events.shift();
  const li = document.createElement("li");
  li.textContent = `${at} ${text}`;
  if (level === "error") li.className = "error";
  const list = $("events");
  list.appendChild(li);
  while (list.children.length > MAX_EVENTS) list.removeChild(list.firstChild);
  list.scrollTop = list.scrollHeight;
}

function showError(err) {
  state.lastError = err;
  state.errors.push(err);
  $("error-text").textContent = err.message;
  $("error").hidden = false;
  event(`error: ${err.message}`, "error");
}

function clearError() {
  $("error").hidden = true;
  $("error-text").textContent = "";
}

function fmtDuration(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

function fmtBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(2)} MiB`;
}

// ---------------------------------------------------------------- rendering

function setPill(id, label, value) {
  const pill = $(id);
  pill.dataset.state = value;
  pill.innerHTML = "";
  pill.append(`${label}: `);
  const b = document.createElement("b");
  b.textContent = value;
  pill.append(b);
}

const CALL_TEXT = {
  idle: "No call",
  calling: "Calling…",
  ringing: "Ringing…",
  incoming: "Incoming call",
  answering: "Answering…",
  established: "In call",
  terminating: "Hanging up…",
};

function render() {
  setPill("pill-transport", "WebSocket", state.transport);
  setPill("pill-registration", "Registration", state.registration);
  setPill("pill-call", "Call", state.held ? "on hold" : state.call);
  const inCall = state.call !== "idle";
  const established = state.call === "established";
  $("btn-register").disabled = state.registration === "registering";
  $("btn-unregister").disabled = state.registration !== "registered";
  $("btn-connect").disabled = state.transport !== "disconnected";
  $("btn-disconnect").disabled = state.transport === "disconnected";
  $("btn-call").disabled = inCall;
  $("btn-hangup").disabled = !inCall || state.call === "incoming";
  $("btn-mute").disabled = !established;
  $("btn-hold").disabled = !established;
  $("btn-mute").textContent = state.muted ? "Unmute" : "Mute";
  $("btn-mute").setAttribute("aria-pressed", String(state.muted));
  $("btn-hold").textContent = state.held ? "Resume" : "Hold";
  $("btn-hold").setAttribute("aria-pressed", String(state.held));
  $("incoming").hidden = state.call !== "incoming";
  $("incoming-from").textContent = state.peer;
  let status = CALL_TEXT[state.call] || state.call;
  if (inCall && state.peer) status += ` ${state.direction === "in" ? "from" : "to"} ${state.peer}`;
  if (state.held) status += " (on hold)";
  if (state.muted) status += " (muted)";
  $("call-status").textContent = status;
  $("dtmf-sent").textContent = state.dtmfSent;
  $("dtmf-received").textContent = state.dtmfReceived;
  $("ws-url").textContent = state.server || config().server;
}

function renderStats() {
  const s = state.stats;
  const set = (id, v) => { $(id).textContent = v; };
  if (!s) {
    for (const id of ["st-packets", "st-bytes", "st-rate", "st-jitter", "st-rtt", "st-loss", "st-codec", "st-transport", "st-pair"]) set(id, "–");
    drawChart();
    return;
  }
  set("st-packets", `${s.packetsSent} / ${s.packetsReceived}`);
  set("st-bytes", `${fmtBytes(s.bytesSent)} / ${fmtBytes(s.bytesReceived)}`);
  set("st-rate", `${s.sendKbps} / ${s.recvKbps} kbit/s (${s.sendPps} / ${s.recvPps} pkt/s)`);
  set("st-jitter", s.jitterMs === null ? "–" : `${s.jitterMs} ms`);
  set("st-rtt", s.rttMs === null ? "–" : `${s.rttMs} ms`);
  set("st-loss", `${s.packetsLost} lost (${s.lossPct} %)` + (s.remotePacketsLost ? `, remote reports ${s.remotePacketsLost}` : ""));
  set("st-codec", s.codec || "–");
  set("st-transport", `${state.iceConnectionState || s.iceState || "–"} / ${state.dtlsState || "–"}${s.srtpCipher ? ` (${s.srtpCipher})` : ""}`);
  set("st-pair", s.candidatePair ? `${s.candidatePair.local} ⇄ ${s.candidatePair.remote}` : "–");
  drawChart();
}

function drawChart() {
  const canvas = $("chart");
  const ctx = canvas.getContext("2d");
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || canvas.width;
  const h = canvas.clientHeight || canvas.height;
  if (canvas.width !== Math.round(w * dpr)) { canvas.width = Math.round(w * dpr); canvas.height = Math.round(h * dpr); }
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  const peak = Math.max(0, ...chartData.map((p) => Math.max(p.sent, p.recv)));
  const max = Math.max(60, Math.ceil((peak * 1.1) / 20) * 20);
  ctx.strokeStyle = "#e6ebf0";
  ctx.fillStyle = "#8a96a3";
  ctx.font = "10px system-ui, sans-serif";
  ctx.lineWidth = 1;
  for (const frac of [0.25, 0.5, 0.75]) {
    const y = Math.round(h - frac * h) + 0.5;
    ctx.beginPath(); ctx.moveTo(0, y); ctx.lineTo(w, y); ctx.stroke();
    ctx.fillText(`${Math.round(max * frac)}`, 4, y - 2);
  }
  if (chartData.length === 0) {
    ctx.fillText("packets/s appear here during a call", w / 2 - 80, h / 2);
    return;
  }
  const step = w / (CHART_POINTS - 1);
  const x0 = w - (chartData.length - 1) * step;
  for (const [key, color] of [["sent", "#2563eb"], ["recv", "#16a34a"]]) {
    ctx.strokeStyle = color;
    ctx.lineWidth = 2;
    ctx.beginPath();
    chartData.forEach((p, i) => {
      const x = x0 + i * step;
      const y = h - (p[key] / max) * h;
      if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.stroke();
  }
}

function renderLog() {
  const body = $("calllog-body");
  body.innerHTML = "";
  if (state.callLog.length === 0) {
    const tr = document.createElement("tr");
    tr.className = "empty";
    tr.innerHTML = '<td colspan="5">No calls yet</td>';
    body.appendChild(tr);
    return;
  }
  for (const e of state.callLog) {
    const tr = document.createElement("tr");
    const cells = [
      e.direction === "in" ? "↙" : "↗",
      e.peer,
      new Date(e.startedAt).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false }),
      e.answeredAt ? fmtDuration((e.endedAt || Date.now()) - e.answeredAt) : "–",
      e.result || "…",
    ];
    cells.forEach((text, i) => {
      const td = document.createElement("td");
      td.textContent = text;
      if (i === 0) td.title = e.direction === "in" ? "incoming" : "outgoing";
      if (i === 4) td.className = e.answeredAt ? "ok" : (e.result && e.result !== "…" ? "bad" : "");
      tr.appendChild(td);
    });
    body.appendChild(tr);
  }
}

// ---------------------------------------------------------------- SIP.js

function logConnector(level, category, _label, content) {
  if (typeof content !== "string") return;
  const m = /^(Sending WebSocket message|Received WebSocket text message):\n\n([\s\S]*)$/.exec(content);
  if (m) {
    const dir = m[1].startsWith("Sending") ? "out" : "in";
    const text = m[2].trim();
    state.sipTrace.push({ dir, at: Date.now(), text });
    if (state.sipTrace.length > MAX_TRACE) state.sipTrace.shift();
    event(`${dir === "out" ? "→" : "←"} ${text.split("\r\n")[0]}`);
    return;
  }
  if (level === "error" || level === "warn") event(`[${category}] ${content}`, level === "error" ? "error" : "info");
}

function buildUserAgent(cfg) {
  const aor = `sip:${cfg.user}@${cfg.domain}`;
  if (!UserAgent.makeURI(aor)) throw new Error(`invalid address ${aor}`);
  const manager = new Web.SessionManager(cfg.server, {
    aor,
    maxSimultaneousSessions: 1,
    media: {
      constraints: { audio: true, video: false },
      remote: { audio: $("remote-audio") },
    },
    reconnectionAttempts: 3,
    reconnectionDelay: 2,
    userAgentOptions: {
      authorizationUsername: cfg.user,
      authorizationPassword: cfg.password,
      displayName: cfg.displayName || undefined,
      logBuiltinEnabled: params.has("debug"),
      logLevel: "log",
      logConnector,
      userAgentString: `rtcgate-demo (SIP.js ${SIPJS_VERSION})`,
      sessionDescriptionHandlerFactoryOptions: {
        // No STUN by default (SIP.js would use a public Google server):
        // rtpengine sits beside rtcgate and offers its own candidates.
        peerConnectionConfiguration: { iceServers: cfg.iceServers },
        iceGatheringTimeout: 2000,
      },
    },
    delegate: {
      onServerConnect() {
        state.transport = "connected";
        state.wsProtocol = manager.userAgent.transport.ws?.protocol ?? "";
        event(`WebSocket connected to ${cfg.server} (subprotocol "${state.wsProtocol}")`);
        render();
        if (wantRegistered && registerer) doRegister().catch(() => {});
      },
      onServerDisconnect(error) {
        const was = state.transport;
        state.transport = "disconnected";
        if (state.registration === "registered" || state.registration === "registering") state.registration = "unregistered";
        if (error) showError(describeTransportError(cfg.server, error, was === "connected"));
        else event("WebSocket disconnected");
        render();
      },
      onCallCreated(session) { trackSession(session); },
      onCallReceived(session) {
        const id = session.remoteIdentity;
        state.peer = id.displayName ? `${id.displayName} <${id.uri.user}>` : `${id.uri.user}@${id.uri.host}`;
        state.call = "incoming";
        state.direction = "in";
        current.entry.peer = state.peer;
        event(`incoming call from ${state.peer}`);
        render();
      },
      onCallAnswered() {
        state.call = "established";
        if (current) current.entry.answeredAt = Date.now();
        event("call established");
        startCallTimer();
        render();
      },
      onCallHold(_session, held) { state.held = held; event(held ? "call on hold" : "call resumed"); render(); },
      onCallDTMFReceived(_session, tone) { state.dtmfReceived += tone; event(`DTMF received: ${tone}`); render(); },
    },
  });
  manager.userAgent.transport.stateChange.addListener((s) => {
    if (s === "Connecting") { state.transport = "connecting"; render(); }
  });
  return manager;
}

async function ensureUserAgent() {
  const cfg = config();
  if (!cfg.user) throw Object.assign(new Error("Enter a user name first"), { userFacing: true });
  const sig = JSON.stringify(cfg);
  if (sm && sig === smSignature) return sm;
  if (sm) await teardown();
  sm = buildUserAgent(cfg);
  smSignature = sig;
  state.server = cfg.server;
  state.aor = `sip:${cfg.user}@${cfg.domain}`;
  saveSettings();
  return sm;
}

async function ensureConnected() {
  const manager = await ensureUserAgent();
  if (manager.isConnected()) return manager;
  state.transport = "connecting";
  render();
  try {
    await manager.connect();
  } catch (err) {
    state.transport = "disconnected";
    showError(describeTransportError(state.server, err, false));
    render();
    throw Object.assign(err, { reported: true });
  }
  return manager;
}

async function teardown() {
  wantRegistered = false;
  const old = sm;
  sm = null;
  smSignature = "";
  if (registerer) { registerer.dispose().catch(() => {}); registerer = null; }
  state.registration = "unregistered";
  if (old) await old.disconnect().catch(() => {});
  state.transport = "disconnected";
  state.wsProtocol = "";
  render();
}

function reportUnexpected(what, err) {
  if (err && err.reported) return;
  if (err && err.userFacing) { showError({ kind: "input", code: 0, reason: "", message: err.message }); return; }
  showError({ kind: "internal", code: 0, reason: String(err && err.name), message: `${what}: ${err && err.message ? err.message : err}` });
}

// ---------------------------------------------------------------- registration

async function doRegister() {
  const manager = await ensureConnected();
  if (!registerer) {
    registerer = new Registerer(manager.userAgent, { expires: 300 });
    const mine = registerer;
    mine.stateChange.addListener((s) => {
      if (mine !== registerer) return;
      if (s === RegistererState.Registered) {
        state.registration = "registered";
        event(`registered as ${state.aor}`);
      } else if (s === RegistererState.Unregistered || s === RegistererState.Terminated) {
        if (state.registration !== "failed") state.registration = "unregistered";
      }
      render();
    });
  }
  wantRegistered = true;
  state.registration = "registering";
  render();
  try {
    await registerer.register({
      requestDelegate: {
        onReject(response) {
          const { statusCode, reasonPhrase } = response.message;
          wantRegistered = false;
          state.registration = "failed";
          showError(describeResponse("Registration failed", statusCode, reasonPhrase));
          render();
        },
      },
    });
  } catch (err) {
    if (err instanceof RequestPendingError) return;
    state.registration = "failed";
    render();
    throw err;
  }
}

async function onRegister(ev) {
  ev?.preventDefault();
  clearError();
  try { await doRegister(); } catch (err) { reportUnexpected("Registration failed", err); }
}

async function onUnregister() {
  clearError();
  wantRegistered = false;
  if (!registerer) return;
  try {
    await registerer.unregister({
      requestDelegate: {
        onReject(response) {
          showError(describeResponse("Unregistration failed", response.message.statusCode, response.message.reasonPhrase));
        },
      },
    });
    event("unregistered");
  } catch (err) { reportUnexpected("Unregistration failed", err); }
}

async function onConnect() {
  clearError();
  try { await ensureConnected(); } catch (err) { reportUnexpected("Connect failed", err); }
}

async function onDisconnect() {
  if (current) await hangup();
  await teardown();
  event("disconnected");
}

// ---------------------------------------------------------------- calls

function trackSession(session) {
  const entry = {
    direction: session instanceof Invitation ? "in" : "out",
    peer: state.peer,
    startedAt: Date.now(),
    answeredAt: null,
    endedAt: null,
    result: null,
    stats: null,
  };
  current = { session, entry, prevStats: null };
  state.stats = null;
  state.dtlsState = "";
  state.dtlsConnectedSeen = false;
  state.peerConnectionState = "";
  state.iceConnectionState = "";
  state.dtmfSent = "";
  state.dtmfReceived = "";
  state.held = false;
  state.muted = false;
  chartData.length = 0;
  renderStats();
  startStats();
  session.stateChange.addListener((s) => {
    if (s === SessionState.Terminating) { state.call = "terminating"; render(); }
    // SIP.js terminates the session before it calls onReject: let the
    // response's code reach the call-log entry first.
    if (s === SessionState.Terminated) setTimeout(() => finishCall(session), 0);
  });
}

function finishCall(session) {
  if (!current || current.session !== session) return;
  const { entry } = current;
  entry.endedAt = Date.now();
  if (!entry.result) {
    if (entry.answeredAt) entry.result = "answered";
    else entry.result = entry.direction === "in" ? "missed" : "cancelled";
  }
  pollStats().finally(() => {
    entry.stats = state.stats;
    stopStats();
  });
  state.callLog.unshift(entry);
  state.callLog.length = Math.min(state.callLog.length, MAX_LOG);
  state.lastCall = entry;
  current = null;
  state.call = "idle";
  state.direction = null;
  state.held = false;
  state.muted = false;
  stopCallTimer();
  event(`call ended: ${entry.result}`);
  saveSettings();
  renderLog();
  render();
}

async function onCall(ev) {
  ev?.preventDefault();
  clearError();
  if (state.call !== "idle") return;
  let manager;
  try { manager = await ensureConnected(); } catch (err) { reportUnexpected("Call failed", err); return; }
  const uri = targetUri($("number").value, config().domain);
  if (!uri || !UserAgent.makeURI(uri)) {
    showError({ kind: "input", code: 0, reason: "", message: "Enter a number or user@host to call" });
    return;
  }
  state.peer = uri.replace(/^sips?:/, "");
  state.call = "calling";
  state.direction = "out";
  render();
  event(`calling ${uri}`);
  let entry = null;
  try {
    await manager.call(uri, undefined, {
      requestDelegate: {
        onProgress(response) {
          const code = response.message.statusCode;
          if ((code === 180 || code === 183) && state.call === "calling") { state.call = "ringing"; render(); }
        },
        onReject(response) {
          const { statusCode, reasonPhrase } = response.message;
          const err = describeResponse("Call failed", statusCode, reasonPhrase);
          const target = current?.entry || state.lastCall;
          if (target) { target.result = `${statusCode} ${reasonPhrase}`; renderLog(); }
          showError(err);
        },
      },
    });
    entry = current?.entry;
  } catch (err) {
    const target = current?.entry || state.lastCall;
    if (isMediaError(err)) {
      const e = describeMediaError(err);
      if (target) target.result = "no microphone";
      showError(e);
    } else {
      if (target && !target.result) target.result = "failed";
      reportUnexpected("Call failed", err);
    }
    if (current && current.session.state !== SessionState.Terminated) {
      await manager.hangup(current.session).catch(() => {});
    }
    if (state.call === "calling" && !current) { state.call = "idle"; }
    renderLog();
    render();
  }
  return entry;
}

async function answer() {
  if (!current || state.call !== "incoming") return;
  clearError();
  state.call = "answering";
  render();
  try {
    await sm.answer(current.session);
  } catch (err) {
    const target = current?.entry || state.lastCall;
    if (isMediaError(err)) {
      if (target) target.result = "no microphone";
      showError(describeMediaError(err));
    } else {
      reportUnexpected("Answer failed", err);
    }
    if (current && current.session.state !== SessionState.Terminated) {
      await current.session.reject({ statusCode: 480 }).catch(() => {});
    }
    renderLog();
    render();
  }
}

async function reject() {
  if (!current || state.call !== "incoming") return;
  current.entry.result = "rejected";
  try { await current.session.reject({ statusCode: 603 }); } catch (err) { reportUnexpected("Reject failed", err); }
}

async function hangup() {
  if (!current) return;
  try { await sm.hangup(current.session); } catch (err) { reportUnexpected("Hang-up failed", err); }
}

function toggleMute() {
  if (!current || state.call !== "established") return;
  if (sm.isMuted(current.session)) sm.unmute(current.session); else sm.mute(current.session);
  state.muted = sm.isMuted(current.session);
  event(state.muted ? "muted" : "unmuted");
  render();
}

async function toggleHold() {
  if (!current || state.call !== "established") return;
  const session = current.session;
  const hold = !sm.isHeld(session);
  try {
    if (hold) await sm.hold(session); else await sm.unhold(session);
    state.held = sm.isHeld(session);
  } catch (err) {
    reportUnexpected(hold ? "Hold failed" : "Resume failed", err);
  }
  render();
}

async function sendTone(tone) {
  if (current && state.call === "established") {
    try {
      await sm.sendDTMF(current.session, tone);
      state.dtmfSent += tone;
      event(`DTMF sent: ${tone}`);
    } catch (err) { reportUnexpected("DTMF failed", err); }
    render();
  } else {
    $("number").value += tone;
  }
}

// ---------------------------------------------------------------- stats

function peerConnection() {
  return current?.session?.sessionDescriptionHandler?.peerConnection ?? null;
}

async function pollStats() {
  const pc = peerConnection();
  if (!pc) return;
  try {
    const report = await pc.getStats();
    const summary = summarize(report.values(), current?.prevStats ?? state.stats);
    if (current) current.prevStats = summary;
    state.stats = summary;
    state.peerConnectionState = pc.connectionState;
    state.iceConnectionState = pc.iceConnectionState;
    const senderTransport = pc.getSenders().find((s) => s.transport)?.transport;
    state.dtlsState = summary.dtlsState || senderTransport?.state || "";
    if (state.dtlsState === "connected") state.dtlsConnectedSeen = true;
    if (summary.timestamp) {
      chartData.push({ sent: summary.sendPps, recv: summary.recvPps });
      if (chartData.length > CHART_POINTS) chartData.shift();
    }
    renderStats();
  } catch { /* the connection may be closing */ }
}

function startStats() {
  stopStats();
  statsTimer = setInterval(pollStats, 1000);
}

function stopStats() {
  if (statsTimer) clearInterval(statsTimer);
  statsTimer = null;
}

function startCallTimer() {
  stopCallTimer();
  const t0 = Date.now();
  callTimer = setInterval(() => { $("call-timer").textContent = fmtDuration(Date.now() - t0); }, 500);
}

function stopCallTimer() {
  if (callTimer) clearInterval(callTimer);
  callTimer = null;
  $("call-timer").textContent = "";
}

// ---------------------------------------------------------------- wiring

function init() {
  loadSettings();
  $("domain").placeholder = location.hostname;
  $("server").placeholder = `wss://${location.host}`;
  $("sipjs-version").textContent = SIPJS_VERSION;
  $("account-form").addEventListener("submit", onRegister);
  $("btn-unregister").addEventListener("click", onUnregister);
  $("btn-connect").addEventListener("click", onConnect);
  $("btn-disconnect").addEventListener("click", onDisconnect);
  $("dial-form").addEventListener("submit", onCall);
  $("btn-answer").addEventListener("click", answer);
  $("btn-reject").addEventListener("click", reject);
  $("btn-hangup").addEventListener("click", hangup);
  $("btn-mute").addEventListener("click", toggleMute);
  $("btn-hold").addEventListener("click", toggleHold);
  $("error-close").addEventListener("click", clearError);
  $("btn-clear-log").addEventListener("click", () => { state.callLog = []; saveSettings(); renderLog(); });
  for (const b of $("keypad").querySelectorAll("button[data-tone]")) {
    b.addEventListener("click", () => sendTone(b.dataset.tone));
  }
  window.addEventListener("beforeunload", () => { if (sm) sm.disconnect().catch(() => {}); });
  render();
  renderStats();
  renderLog();
}

/** The test hook: read state without scraping the DOM; drive the page. */
window.rtcgateDemo = {
  version: 1,
  sipjsVersion: SIPJS_VERSION,
  state,
  /** A JSON copy of the state (Playwright's evaluate wants plain data). */
  snapshot: () => JSON.parse(JSON.stringify(state)),
  peerConnection,
  actions: {
    connect: onConnect,
    disconnect: onDisconnect,
    register: onRegister,
    unregister: onUnregister,
    call: (number) => { if (number !== undefined) $("number").value = number; return onCall(); },
    answer,
    reject,
    hangup,
    toggleMute,
    toggleHold,
    sendTone,
    pollStats,
  },
};

init();
