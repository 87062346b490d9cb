// Turns failures into messages a person can act on. Pure functions, so the
// wording is unit-tested without a browser (tests/unit.test.mjs).

/** Hints for SIP final responses, by status code. */
const SIP_HINTS = {
  401: "wrong user name or password",
  403: "forbidden: wrong credentials, or this user may not do that",
  404: "no such user or number",
  407: "wrong user name or password",
  408: "no answer in time",
  480: "temporarily unavailable (not registered?)",
  486: "busy",
  487: "cancelled",
  488: "media not acceptable",
  501: "the gateway does not implement this yet",
  503: "service unavailable: no PBX or media relay reachable",
  603: "declined",
};

/**
 * A SIP failure response, e.g. ("Registration failed", 401, "Unauthorized").
 * @returns {{kind: string, code: number, reason: string, message: string}}
 */
export function describeResponse(what, code, reason) {
  const hint = SIP_HINTS[code];
  const phrase = reason ? `${code} ${reason}` : `${code}`;
  return {
    kind: "sip",
    code,
    reason: reason || "",
    message: `${what}: ${phrase}${hint ? ` (${hint})` : ""}`,
  };
}

/**
 * A getUserMedia failure (DOMException names from the Media Capture spec;
 * older Chromium names kept).
 */
export function describeMediaError(err) {
  const name = (err && err.name) || "";
  const detail = (err && err.message) || String(err);
  let message;
  if (["NotFoundError", "DevicesNotFoundError", "OverconstrainedError"].includes(name)) {
    message = "No microphone: this browser has no audio input device";
  } else if (["NotAllowedError", "PermissionDeniedError", "SecurityError"].includes(name)) {
    message = "No microphone: access to the microphone was denied (allow it in the browser's site settings)";
  } else if (["NotReadableError", "TrackStartError", "AbortError"].includes(name)) {
    message = "No microphone: the microphone is in use or could not be started";
  } else {
    message = "No microphone: could not open the microphone";
  }
  return { kind: "no-microphone", code: 0, reason: name, message: `${message} [${name || "Error"}: ${detail}]` };
}

/** True when an error thrown while calling/answering came from getUserMedia. */
export function isMediaError(err) {
  const name = (err && err.name) || "";
  return [
    "NotFoundError", "DevicesNotFoundError", "OverconstrainedError", "NotAllowedError",
    "PermissionDeniedError", "SecurityError", "NotReadableError", "TrackStartError", "AbortError",
  ].includes(name);
}

/** The WebSocket could not be opened or closed unexpectedly. */
export function describeTransportError(url, err, connected = false) {
  const detail = err && err.message ? ` [${err.message}]` : "";
  const message = connected
    ? `WebSocket to ${url} closed unexpectedly${detail}`
    : `WebSocket refused: could not connect to ${url} (is rtcgate running there, is its certificate trusted, and is this page's origin allowed?)${detail}`;
  return { kind: "websocket", code: 0, reason: "", message };
}

/** SIP URI for what the user typed: "1001", "1001@host", "sip:1001@host". */
export function targetUri(input, domain) {
  const t = String(input || "").trim().replace(/\s+/g, "");
  if (!t) return null;
  if (/^sips?:/i.test(t)) return t;
  if (t.includes("@")) return `sip:${t}`;
  return `sip:${t}@${domain}`;
}
