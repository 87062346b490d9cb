// Test harness for the web demo: real rtcgate (prebuilt, never built here),
// real rtpengine, real sipp, real Chromium (Debian's, via playwright-core).
// Everything on loopback, on free ports; every process is tracked by PID and
// stopped at the end, also when a test fails.

import { spawn, spawnSync } from "node:child_process";
import { createHash, X509Certificate } from "node:crypto";
import dgram from "node:dgram";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync, createWriteStream } from "node:fs";
import https from "node:https";
import net from "node:net";
import { homedir, tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const WEB_DEMO = resolve(dirname(fileURLToPath(import.meta.url)), "..");
export const REPO = resolve(WEB_DEMO, "..");
export const DIST = join(WEB_DEMO, "dist");
export const CI = process.env.CI === "true" || process.env.CI === "1";
// End-to-end calls run by default; RTCGATE_E2E=0 skips them (e.g. on a machine without media).
export const E2E = process.env.RTCGATE_E2E !== "0";
export const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
export const RTPENGINE = process.env.RTPENGINE_PATH || "/usr/bin/rtpengine";
export const SIPP = process.env.SIPP_PATH || "/usr/bin/sipp";
/** Reason given by the end-to-end tests until the gateway can carry calls. */
export const E2E_SKIP = E2E ? false : "skipped by RTCGATE_E2E=0";

export function rtcgateBin() {
  if (process.env.RTCGATE_BIN) return process.env.RTCGATE_BIN;
  const target = process.env.CARGO_TARGET_DIR || join(homedir(), ".cache/rtcgate/target");
  return join(target, "debug/rtcgate");
}

/**
 * Why a suite cannot run here (a missing binary, browser or page build), or
 * false. In CI a missing part is a failure, never a skip: callers pass the
 * result to `skip` only when not in CI, and `assertPresent` throws in CI.
 */
export function missing(parts = ["rtcgate", "chromium", "dist"]) {
  const why = [];
  if (parts.includes("rtcgate") && !existsSync(rtcgateBin())) why.push(`rtcgate binary ${rtcgateBin()} (build it: cargo build -p rtcgate)`);
  if (parts.includes("chromium") && !existsSync(CHROMIUM)) why.push(`Chromium at ${CHROMIUM} (apt-get install chromium)`);
  if (parts.includes("dist") && !existsSync(join(DIST, "index.html"))) why.push(`page build ${DIST} (run scripts/setup.sh or node web-demo/build.mjs)`);
  if (parts.includes("rtpengine") && !existsSync(RTPENGINE)) why.push(`rtpengine at ${RTPENGINE}`);
  if (parts.includes("sipp") && !existsSync(SIPP)) why.push(`sipp at ${SIPP}`);
  return why.length ? `missing: ${why.join("; ")}` : false;
}

/** `skip` option for a suite: a reason outside CI, false in CI (so it fails). */
export function skipUnlessPresent(parts) {
  const why = missing(parts);
  return why && !CI ? why : false;
}

export function assertPresent(parts) {
  const why = missing(parts);
  if (why) throw new Error(why);
}

// ------------------------------------------------------------ processes

const children = new Set();

function killTree(child, signal) {
  try { process.kill(child.pid, signal); } catch { /* gone */ }
}

// Last resort if the runner exits without calling stop(): SIGKILL by PID.
process.on("exit", () => { for (const c of children) killTree(c, "SIGKILL"); });

/**
 * Spawns a tracked process; its output goes to `logFile` and to a buffer.
 * @returns {{ child, pid, output: () => string, exited: Promise<number|null>, stop: () => Promise<void> }}
 */
export function startProcess(name, cmd, args, { logFile, cwd, env } = {}) {
  const child = spawn(cmd, args, { cwd, env: env || process.env, stdio: ["ignore", "pipe", "pipe"] });
  children.add(child);
  let buf = "";
  const file = logFile ? createWriteStream(logFile) : null;
  const collect = (d) => {
    const s = d.toString();
    buf = (buf + s).slice(-200_000);
    file?.write(s);
  };
  child.stdout.on("data", collect);
  child.stderr.on("data", collect);
  const exited = new Promise((res) => {
    child.on("exit", (code, signal) => { children.delete(child); file?.end(); res(code ?? signal); });
    child.on("error", (e) => { buf += `\n[spawn error] ${e.message}`; children.delete(child); res(null); });
  });
  return {
    name,
    child,
    pid: child.pid,
    output: () => buf,
    exited,
    /** SIGTERM by PID, SIGKILL after 5 s. */
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null || !children.has(child)) return;
      killTree(child, "SIGTERM");
      const t = setTimeout(() => killTree(child, "SIGKILL"), 5000);
      await exited;
      clearTimeout(t);
    },
  };
}

// ------------------------------------------------------------ ports

export function freeTcpPort() {
  return new Promise((res, rej) => {
    const srv = net.createServer();
    srv.once("error", rej);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => res(port));
    });
  });
}

export function freeUdpPort() {
  return new Promise((res, rej) => {
    const s = dgram.createSocket("udp4");
    s.once("error", rej);
    s.bind(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
  });
}

/** A media port range unlikely to collide with other test runs (per PID). */
export function mediaPortRange(size = 100) {
  const slots = Math.floor(20000 / size);
  const base = 30000 + ((process.pid * 7 + Math.floor(Math.random() * slots)) % slots) * size;
  return [base, base + size - 1];
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** The process's exit code (or signal), or "running" after `ms`. */
export function exitWithin(proc, ms) {
  let timer;
  const late = new Promise((r) => { timer = setTimeout(() => r("running"), ms); });
  return Promise.race([proc.exited, late]).finally(() => clearTimeout(timer));
}

/** Polls `fn` until it returns a truthy value or `ms` pass; an error with
 * `fatal` set (e.g. the process under test exited) ends the wait at once. */
export async function waitFor(what, fn, { ms = 10_000, every = 100 } = {}) {
  const end = Date.now() + ms;
  let last;
  while (Date.now() < end) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      if (e && e.fatal) throw e;
      last = e;
    }
    await sleep(every);
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what}${last instanceof Error ? `: ${last.message}` : ""}`);
}

// ------------------------------------------------------------ rtcgate

function httpsGet(url, ca, timeoutMs = 2000) {
  return new Promise((res, rej) => {
    const req = https.get(url, { ca, timeout: timeoutMs }, (r) => {
      let body = "";
      r.on("data", (d) => { body += d; });
      r.on("end", () => res({ status: r.statusCode, headers: r.headers, body }));
    });
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", rej);
  });
}

/**
 * Starts rtcgate with a temporary config on free loopback ports, serving
 * web-demo/dist, and waits for /healthz.
 * @param {{ extraToml?: string, generalToml?: string, sipToml?: string }} opts
 *   extra TOML appended to the file / the [general] / the [sip] section.
 */
export async function startGateway(opts = {}) {
  const dir = mkdtempSync(join(tmpdir(), "rtcgate-webdemo-"));
  const port = await freeTcpPort();
  const udpPort = await freeUdpPort();
  const origin = `https://127.0.0.1:${port}`;
  const certDir = join(dir, "certs");
  const configPath = join(dir, "rtcgate.toml");
  writeFileSync(configPath, `# written by web-demo/tests/harness.mjs
[general]
domains = ["127.0.0.1", "localhost"]
log = "debug"
${opts.generalToml || ""}

[sip]
udp_listen = ["127.0.0.1:${udpPort}"]
${opts.sipToml || ""}

[websocket]
wss_listen = ["127.0.0.1:${port}"]
ws_listen = []
allowed_origins = ["${origin}", "https://localhost:${port}"]

[database]
url = "sqlite://${join(dir, "rtcgate.db")}?mode=rwc"

[admin]
listen = "127.0.0.1:0"

[tls]
cert = "${join(certDir, "cert.pem")}"
key = "${join(certDir, "key.pem")}"
generate_dev_cert = true

${opts.extraToml || ""}
`);
  // Subscribers, added with the real CLI before the gateway starts.
  for (const [user, password] of opts.users || [["1001", "secret"]]) {
    const r = run(rtcgateBin(), ["user", "add", "--config", configPath, user, password]);
    if (r.status !== 0) throw new Error(`rtcgate user add ${user}: ${r.stderr || r.error}`);
  }
  const proc = startProcess("rtcgate", rtcgateBin(), ["run", "--config", configPath, "--web-root", DIST], {
    logFile: join(dir, "rtcgate.log"),
    cwd: dir,
  });
  let ca;
  try {
    await waitFor("rtcgate /healthz", async () => {
      if (proc.child.exitCode !== null) throw Object.assign(new Error(`rtcgate exited (${proc.child.exitCode})`), { fatal: true });
      if (!existsSync(join(certDir, "ca.pem"))) return false;
      ca = readFileSync(join(certDir, "ca.pem"));
      const r = await httpsGet(`${origin}/healthz`, ca);
      return r.status === 200 && r.body.trim() === "ok";
    }, { ms: 20_000, every: 150 });
  } catch (e) {
    await proc.stop();
    const out = proc.output().slice(-4000);
    if (!process.env.KEEP_TMP) rmSync(dir, { recursive: true, force: true });
    throw new Error(`${e.message}\n--- rtcgate output ---\n${out}`);
  }
  const leaf = new X509Certificate(readFileSync(join(certDir, "cert.pem")));
  const spki = createHash("sha256").update(leaf.publicKey.export({ type: "spki", format: "der" })).digest("base64");
  return {
    dir, port, udpPort, origin, ca, spki, proc, configPath,
    sipUri: `sip:127.0.0.1:${udpPort}`,
    get: (path) => httpsGet(`${origin}${path}`, ca),
    output: proc.output,
    async stop() {
      await proc.stop();
      if (!process.env.KEEP_TMP) rmSync(dir, { recursive: true, force: true });
    },
  };
}

// ------------------------------------------------------------ rtpengine

/** Starts a userspace rtpengine on loopback; `ng(cmd)` talks to it. */
export async function startRtpengine() {
  const dir = mkdtempSync(join(tmpdir(), "rtpengine-webdemo-"));
  const ngPort = await freeUdpPort();
  const [min, max] = mediaPortRange();
  const proc = startProcess("rtpengine", RTPENGINE, [
    "--foreground", "--log-stderr", "--table=-1", "--interface=127.0.0.1",
    `--listen-ng=127.0.0.1:${ngPort}`, `--port-min=${min}`, `--port-max=${max}`,
    "--delete-delay=0", "--log-level=6",
  ], { logFile: join(dir, "rtpengine.log") });
  const handle = {
    dir, ngPort, portMin: min, portMax: max, proc, output: proc.output,
    ng: (cmd, timeoutMs) => ngRequest(ngPort, cmd, timeoutMs),
    async stop() {
      await proc.stop();
      if (!process.env.KEEP_TMP) rmSync(dir, { recursive: true, force: true });
    },
  };
  try {
    await waitFor("rtpengine ng ping", async () => {
      if (proc.child.exitCode !== null) throw Object.assign(new Error(`rtpengine exited: ${proc.output().slice(-2000)}`), { fatal: true });
      const r = await handle.ng({ command: "ping" }, 300).catch(() => null);
      return r && r.result === "pong";
    }, { ms: 10_000, every: 200 });
  } catch (e) {
    await handle.stop();
    throw e;
  }
  return handle;
}

// Minimal bencode for the ng protocol (test-side only).
export function bencode(v) {
  if (typeof v === "number") return `i${Math.trunc(v)}e`;
  if (typeof v === "string") return `${Buffer.byteLength(v)}:${v}`;
  if (Array.isArray(v)) return `l${v.map(bencode).join("")}e`;
  if (v && typeof v === "object") {
    return `d${Object.keys(v).sort().map((k) => bencode(k) + bencode(v[k])).join("")}e`;
  }
  throw new Error(`cannot bencode ${v}`);
}

export function bdecode(buf) {
  let i = 0;
  const b = Buffer.isBuffer(buf) ? buf : Buffer.from(buf);
  function next() {
    const c = String.fromCharCode(b[i]);
    if (c === "i") {
      const end = b.indexOf(0x65, i);
      const n = Number(b.subarray(i + 1, end).toString());
      i = end + 1;
      return n;
    }
    if (c === "l") {
      i++;
      const out = [];
      while (b[i] !== 0x65) out.push(next());
      i++;
      return out;
    }
    if (c === "d") {
      i++;
      const out = {};
      while (b[i] !== 0x65) { const k = next(); out[k] = next(); }
      i++;
      return out;
    }
    const colon = b.indexOf(0x3a, i);
    const len = Number(b.subarray(i, colon).toString());
    const s = b.subarray(colon + 1, colon + 1 + len).toString();
    i = colon + 1 + len;
    return s;
  }
  return next();
}

export function ngRequest(port, cmd, timeoutMs = 2000) {
  return new Promise((res, rej) => {
    const sock = dgram.createSocket("udp4");
    const cookie = `t${process.pid}_${Math.random().toString(36).slice(2, 10)}`;
    const t = setTimeout(() => { sock.close(); rej(new Error(`ng ${cmd.command}: no answer`)); }, timeoutMs);
    sock.on("message", (msg) => {
      const s = msg.toString("latin1");
      if (!s.startsWith(`${cookie} `)) return;
      clearTimeout(t);
      sock.close();
      try { res(bdecode(Buffer.from(s.slice(cookie.length + 1), "latin1"))); } catch (e) { rej(e); }
    });
    sock.send(`${cookie} ${bencode(cmd)}`, port, "127.0.0.1");
  });
}

// ------------------------------------------------------------ sipp

/**
 * Starts sipp (the demo PBX side). `args` are sipp arguments after the
 * remote host; the local side is loopback on a free port.
 */
export async function startSipp(args, { remote, port: fixedPort, logDir } = {}) {
  const dir = logDir || mkdtempSync(join(tmpdir(), "sipp-webdemo-"));
  const port = fixedPort || await freeUdpPort();
  const mediaPort = await freeUdpPort();
  const full = [
    ...(remote ? [remote] : []),
    "-i", "127.0.0.1", "-p", String(port), "-mi", "127.0.0.1", "-mp", String(mediaPort),
    "-nostdin", "-trace_err", "-error_file", join(dir, "errors.log"),
    ...args,
  ];
  const proc = startProcess("sipp", SIPP, full, { logFile: join(dir, "sipp.log"), cwd: dir });
  return {
    dir, port, mediaPort, proc, output: proc.output, exited: proc.exited,
    uri: (user) => `sip:${user}@127.0.0.1:${port}`,
    /** Exit code, or "running" if it has not exited within `ms`. */
    exitCode: (ms = 10_000) => exitWithin(proc, ms),
    async stop() {
      await proc.stop();
      if (!process.env.KEEP_TMP && !logDir) rmSync(dir, { recursive: true, force: true });
    },
  };
}

// ------------------------------------------------------------ browser

/** Chromium flags for every test browser. */
export function chromiumArgs({ fakeMedia = true, spki } = {}) {
  const args = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
    // WebRTC on loopback only: no mDNS obfuscation of host candidates.
    "--disable-features=WebRtcHideLocalIpsWithMdns",
  ];
  if (fakeMedia) args.push("--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream");
  // Trust exactly the gateway's dev certificate (by its public key), not
  // every certificate as --ignore-certificate-errors would.
  if (spki) args.push(`--ignore-certificate-errors-spki-list=${spki}`);
  return args;
}

/**
 * Launches headless Chromium with a fresh profile.
 * @returns {Promise<{ context, newPage, close }>}
 */
export async function launchBrowser({ fakeMedia = true, spki, denyMicrophone = false } = {}) {
  const { chromium } = await import("playwright-core");
  const userDataDir = mkdtempSync(join(tmpdir(), "chromium-webdemo-"));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: chromiumArgs({ fakeMedia, spki }),
    viewport: { width: 1280, height: 900 },
    timeout: 30_000,
    env: { ...process.env, HOME: userDataDir },
  });
  context.setDefaultTimeout(10_000);
  if (denyMicrophone) await context.clearPermissions();
  const pages = [];
  return {
    context,
    /** A page that records console errors and page errors. */
    async newPage() {
      const page = await context.newPage();
      page.consoleErrors = [];
      page.on("console", (m) => { if (m.type() === "error") page.consoleErrors.push(m.text()); });
      page.on("pageerror", (e) => page.consoleErrors.push(`pageerror: ${e.message}`));
      pages.push(page);
      return page;
    },
    async close() {
      await context.close().catch(() => {});
      rmSync(userDataDir, { recursive: true, force: true });
    },
  };
}

// ------------------------------------------------------------ page helpers

/** The page's test hook state (a JSON copy). */
export function demoState(page) {
  return page.evaluate(() => window.rtcgateDemo.snapshot());
}

/** Waits until `pred(state)` holds in the page; returns that state. */
export async function waitForDemo(page, what, pred, ms = 10_000) {
  return waitFor(what, async () => {
    const s = await demoState(page);
    return pred(s) ? s : false;
  }, { ms, every: 100 }).catch(async (e) => {
    const s = await demoState(page).catch(() => null);
    const brief = s && { transport: s.transport, registration: s.registration, call: s.call, lastError: s.lastError, dtlsState: s.dtlsState };
    throw new Error(`${e.message}\npage state: ${JSON.stringify(brief)}\nlast events: ${JSON.stringify(s?.events.slice(-12))}`);
  });
}

/** Opens the demo page and fills the account form. */
export async function openDemo(browser, gw, { user = "1001", password = "secret", query = "" } = {}) {
  const page = await browser.newPage();
  const resp = await page.goto(`${gw.origin}/${query}`, { waitUntil: "load" });
  if (!resp || resp.status() !== 200) throw new Error(`page load: HTTP ${resp && resp.status()}`);
  await page.waitForFunction(() => !!window.rtcgateDemo);
  await page.fill("#user", user);
  await page.fill("#password", password);
  return page;
}

/** Runs `fn` with everything in `cleanups` stopped afterwards, in reverse. */
export function cleanupStack() {
  const stack = [];
  return {
    push(fn) { stack.push(fn); return fn; },
    async run() {
      while (stack.length) {
        const fn = stack.pop();
        try { await fn(); } catch (e) { console.error(`cleanup: ${e.message}`); }
      }
    },
  };
}

/** Runs a command synchronously (short helpers only). */
export function run(cmd, args) {
  return spawnSync(cmd, args, { encoding: "utf8", timeout: 10_000 });
}
