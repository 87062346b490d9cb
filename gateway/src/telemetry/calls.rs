//! One `tracing` span per call, kept by the proxy shell: every message,
//! task and log line of a call runs inside it, so logs carry the Call-ID and
//! an OTLP exporter sees one trace per call. The same table remembers since
//! when each call is ringing or established (for the admin API).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use tracing::Span;

use crate::proxy::dialog::{DialogEvent, DialogEventKind};
use crate::rsip;
use crate::sip::Checked;

/// Span target of the per-call root spans.
pub const CALL_TARGET: &str = "rtcgate::call";
/// Span target of the child spans (messages, ng round trips, auth, routing).
pub const TRACE_TARGET: &str = "rtcgate::trace";

/// Calls tracked at most (beyond that, new calls run without a span).
const MAX_CALLS: usize = 100_000;
/// A call the core no longer knows is dropped after this long.
const LINGER: Duration = Duration::from_secs(5);
/// How often the table is compared with the core.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Setup,
    Early,
    Confirmed,
}

struct Entry {
    span: Span,
    state: State,
    /// Unix milliseconds of the last state change.
    since_ms: i64,
    seen: Instant,
}

/// The per-call spans and states.
pub struct CallTraces {
    calls: HashMap<String, Entry>,
    record_trace_id: bool,
    next_sweep: Instant,
}

impl std::fmt::Debug for CallTraces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallTraces")
            .field("calls", &self.calls.len())
            .finish_non_exhaustive()
    }
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl CallTraces {
    /// An empty table; `record_trace_id` writes the OpenTelemetry trace id
    /// into each call span (only useful when traces are exported).
    pub fn new(record_trace_id: bool) -> Self {
        Self {
            calls: HashMap::new(),
            record_trace_id,
            next_sweep: Instant::now() + SWEEP_EVERY,
        }
    }

    /// Number of calls tracked.
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    /// Whether none is tracked.
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// The span a message is processed in: a child of its call's span (the
    /// call starts with an initial INVITE), or `None` outside calls.
    pub fn message_span(&mut self, msg: &Checked, now: Instant) -> Option<Span> {
        let call = match self.calls.get_mut(msg.call_id.as_str()) {
            Some(e) => {
                e.seen = now;
                e.span.clone()
            }
            None => {
                let rsip::SipMessage::Request(req) = &msg.msg else {
                    return None;
                };
                if req.method != rsip::Method::Invite
                    || self.calls.len() >= MAX_CALLS
                    || has_to_tag(req)
                {
                    return None;
                }
                let span = self.call_span(&msg.call_id);
                self.calls.insert(
                    msg.call_id.clone(),
                    Entry {
                        span: span.clone(),
                        state: State::Setup,
                        since_ms: unix_ms(),
                        seen: now,
                    },
                );
                span
            }
        };
        // DEBUG: free unless an exporter (or a debug log filter) wants it.
        let child = match &msg.msg {
            rsip::SipMessage::Request(r) => tracing::debug_span!(
                target: TRACE_TARGET, parent: &call, "sip.request",
                method = %r.method, cseq = msg.cseq
            ),
            rsip::SipMessage::Response(r) => tracing::debug_span!(
                target: TRACE_TARGET, parent: &call, "sip.response",
                status = r.status_code.code(), method = %msg.cseq_method
            ),
        };
        Some(if child.is_disabled() { call } else { child })
    }

    fn call_span(&self, call_id: &str) -> Span {
        let span = tracing::info_span!(
            target: CALL_TARGET, parent: None, "call",
            call_id = %call_id, trace_id = tracing::field::Empty
        );
        if self.record_trace_id && !span.is_disabled() {
            use opentelemetry::trace::TraceContextExt;
            use tracing_opentelemetry::OpenTelemetrySpanExt;
            let id = span.context().span().span_context().trace_id();
            if id != opentelemetry::trace::TraceId::INVALID {
                span.record("trace_id", tracing::field::display(id));
            }
        }
        span
    }

    /// The span of a call, if it has one.
    pub fn span(&self, call_id: &str) -> Option<Span> {
        self.calls.get(call_id).map(|e| e.span.clone())
    }

    /// Follows the core's dialog events: ringing, established, ended.
    pub fn on_event(&mut self, ev: &DialogEvent) {
        match &ev.kind {
            DialogEventKind::Started(_) => {}
            DialogEventKind::Early | DialogEventKind::Confirmed { .. } => {
                let state = if ev.kind == DialogEventKind::Early {
                    State::Early
                } else {
                    State::Confirmed
                };
                if let Some(e) = self.calls.get_mut(&ev.call_id) {
                    e.state = state;
                    e.since_ms = unix_ms();
                    e.span
                        .in_scope(|| tracing::info!(state = ?state, "call state"));
                } else if self.calls.len() < MAX_CALLS {
                    // A call that started before a restart of the table.
                    let span = self.call_span(&ev.call_id);
                    self.calls.insert(
                        ev.call_id.clone(),
                        Entry {
                            span,
                            state,
                            since_ms: unix_ms(),
                            seen: Instant::now(),
                        },
                    );
                }
            }
            DialogEventKind::Terminated { reason } => {
                if let Some(e) = self.calls.remove(&ev.call_id) {
                    e.span
                        .in_scope(|| tracing::info!(reason = reason.as_str(), "call ended"));
                }
            }
            DialogEventKind::Failed { status, .. } => {
                if let Some(e) = self.calls.remove(&ev.call_id) {
                    e.span.in_scope(|| tracing::info!(status, "call failed"));
                }
            }
        }
    }

    /// Unix milliseconds since which a call is in its current state.
    pub fn since_ms(&self, call_id: &str) -> Option<i64> {
        self.calls.get(call_id).map(|e| e.since_ms)
    }

    /// Whether a sweep is due.
    pub fn sweep_due(&self, now: Instant) -> bool {
        now >= self.next_sweep
    }

    /// Drops calls the core no longer knows (failed before ringing, or
    /// ended without an event), once they have been quiet for a moment.
    pub fn sweep(&mut self, now: Instant, live: &HashSet<String>) {
        self.next_sweep = now + SWEEP_EVERY;
        self.calls
            .retain(|id, e| live.contains(id) || now.saturating_duration_since(e.seen) < LINGER);
    }
}

/// Whether a request's To header has a tag (in-dialog).
fn has_to_tag(req: &rsip::Request) -> bool {
    req.headers.iter().any(|h| match h {
        rsip::Header::To(t) => {
            let v = t.value();
            let after = v.rfind('>').map_or(v, |i| &v[i + 1..]);
            after
                .split(';')
                .any(|p| p.trim().to_ascii_lowercase().starts_with("tag="))
        }
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invite(call_id: &str, to_tag: bool) -> Checked {
        let tag = if to_tag { ";tag=x" } else { "" };
        let text = format!(
            "INVITE sip:1@h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKa\r\nFrom: <sip:a@h>;tag=f\r\nTo: <sip:1@h>{tag}\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        );
        crate::sip::parse(text.as_bytes(), 65535).unwrap()
    }

    #[test]
    fn a_call_lives_from_its_invite_to_its_end() {
        let mut t = CallTraces::new(false);
        let now = Instant::now();
        t.message_span(&invite("c1", false), now);
        t.message_span(&invite("c2", true), now);
        assert_eq!(t.len(), 1, "only an initial INVITE starts a call");
        t.on_event(&DialogEvent {
            call_id: "c1".into(),
            at: now,
            kind: DialogEventKind::Confirmed {
                destination: "udp:127.0.0.1:5080".into(),
            },
        });
        assert!(t.since_ms("c1").is_some());
        t.on_event(&DialogEvent {
            call_id: "c1".into(),
            at: now,
            kind: DialogEventKind::Terminated {
                reason: crate::proxy::dialog::EndCause::ByeFromCaller,
            },
        });
        assert!(t.is_empty());
    }

    #[test]
    fn sweep_drops_calls_the_core_forgot() {
        let mut t = CallTraces::new(false);
        let now = Instant::now();
        t.message_span(&invite("c1", false), now);
        t.message_span(&invite("c2", false), now);
        let live: HashSet<String> = ["c2".to_string()].into();
        t.sweep(now, &live);
        assert_eq!(t.len(), 2, "recent calls linger");
        t.sweep(now + LINGER, &live);
        assert_eq!(t.len(), 1);
        assert!(t.span("c2").is_some());
    }
}
