//! What operations need from the proxy core: a snapshot for metrics, the
//! list of calls, hanging one up, and draining before a shutdown.

use std::collections::HashSet;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::{Proxy, call_id_of, route, tag_of_header};
use crate::rsip;
use crate::transaction;
use crate::transport::{Destination, FlowId, Source};

/// Initial INVITEs by how they ended.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallOutcomes {
    /// A 2xx went upstream.
    pub answered: u64,
    /// 486 Busy Here or 600 Busy Everywhere.
    pub busy: u64,
    /// 487: the caller cancelled (or the call was hung up while ringing).
    pub cancelled: u64,
    /// Any other final failure from downstream (or a timeout).
    pub failed: u64,
    /// Refused by rtcgate before any forwarding (no route, draining...).
    pub rejected: u64,
}

impl CallOutcomes {
    /// Counts the final status of a forwarded initial INVITE.
    pub(super) fn record(&mut self, status: u16) {
        match status {
            200..=299 => self.answered += 1,
            486 | 600 => self.busy += 1,
            487 => self.cancelled += 1,
            _ => self.failed += 1,
        }
    }

    /// Every outcome with its label, for metrics.
    pub fn labelled(&self) -> [(&'static str, u64); 5] {
        [
            ("answered", self.answered),
            ("busy", self.busy),
            ("cancelled", self.cancelled),
            ("failed", self.failed),
            ("rejected", self.rejected),
        ]
    }
}

/// The proxy's state in numbers, taken on demand (scrape, admin API).
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxySnapshot {
    /// Requests forwarded (per branch).
    pub forwarded: u64,
    /// Responses rtcgate generated itself, by class (index 1..=6).
    pub local_responses: [u64; 7],
    /// Loops detected (482).
    pub loops: u64,
    /// Initial INVITEs forwarded.
    pub call_attempts: u64,
    /// Initial INVITEs by outcome.
    pub calls: CallOutcomes,
    /// Live transactions.
    pub transactions: usize,
    /// Calls ringing (early dialogs).
    pub dialogs_early: usize,
    /// Established calls.
    pub dialogs_confirmed: usize,
    /// Requests waiting for a final response (forwarded or parked).
    pub pending_requests: usize,
    /// New requests are refused with 503.
    pub draining: bool,
    /// New requests refused with 503 by the transaction caps (`[limits]`).
    #[serde(default)]
    pub overloaded: u64,
}

/// One call as the admin API lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallView {
    /// Call-ID.
    pub call_id: String,
    /// The caller's URI (From).
    pub caller: String,
    /// The callee's URI (To).
    pub callee: String,
    /// `early` (ringing) or `confirmed`.
    pub state: String,
    /// Unix milliseconds when it entered this state (filled by the shell).
    pub since_ms: Option<i64>,
}

/// What an admin hangup did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HangupOutcome {
    /// A confirmed call: BYE sent to both sides, media deleted.
    Bye,
    /// A call still ringing: its branches were cancelled (the caller gets 487).
    Cancelled,
    /// No such call.
    NotFound,
}

impl Proxy {
    /// The counters and gauges, as one value.
    pub fn snapshot(&self) -> ProxySnapshot {
        ProxySnapshot {
            forwarded: self.stats.forwarded,
            local_responses: self.stats.local_responses,
            loops: self.stats.loops,
            call_attempts: self.stats.call_attempts,
            calls: self.stats.calls,
            transactions: self.txns.len(),
            dialogs_early: self.early.len(),
            dialogs_confirmed: self.dialogs.len(),
            pending_requests: self.forwards.values().filter(|f| !f.final_sent).count()
                + self.parked.len(),
            draining: self.draining.is_some(),
            overloaded: self.stats.overloaded,
        }
    }

    /// Refuse new out-of-dialog requests with 503 and `Retry-After: secs`
    /// (`None`: accept again). In-dialog requests and CANCEL still pass.
    pub fn set_draining(&mut self, retry_after: Option<u32>) {
        self.draining = retry_after;
    }

    /// The 503 of a draining node (`Retry-After` lets clients pick another).
    pub(super) fn refuse_draining(
        &mut self,
        now: Instant,
        key: transaction::ServerKey,
        req: &rsip::Request,
    ) {
        if req.method == rsip::Method::Invite {
            self.stats.calls.rejected += 1;
        }
        let mut resp = transaction::make_response(
            req,
            503,
            Some("Service Unavailable"),
            Some(&crate::sip::new_tag()),
        );
        if let Some(secs) = self.draining {
            resp.headers
                .push(rsip::Header::RetryAfter(rsip::headers::RetryAfter::new(
                    secs.to_string(),
                )));
        }
        self.send_final(now, key, resp);
    }

    /// Counts an initial INVITE that rtcgate answered itself.
    pub(super) fn count_rejected(&mut self, req: &rsip::Request) {
        if req.method == rsip::Method::Invite {
            self.stats.calls.rejected += 1;
        }
    }

    /// Established and ringing calls (for `GET /api/calls`).
    pub fn calls(&self) -> Vec<CallView> {
        let value = |h: &rsip::Header| {
            let t = h.to_string();
            t.split_once(':')
                .map_or(String::new(), |(_, v)| route::uri_of(v.trim()).to_owned())
        };
        let mut out: Vec<CallView> = self
            .dialogs
            .iter()
            .map(|d| CallView {
                call_id: d.call_id.clone(),
                caller: route::uri_of(&d.caller.identity).to_owned(),
                callee: route::uri_of(&d.callee.identity).to_owned(),
                state: "confirmed".into(),
                since_ms: None,
            })
            .collect();
        for f in self.forwards.values() {
            if f.method != rsip::Method::Invite || f.final_sent {
                continue;
            }
            let call_id = call_id_of(&f.request.headers);
            if !self.early.contains(&call_id) || self.dialogs.get(&call_id).is_some() {
                continue;
            }
            let header = |which: fn(&rsip::Header) -> bool| {
                f.request.headers.iter().find(|h| which(h)).map(value)
            };
            out.push(CallView {
                call_id,
                caller: header(|h| matches!(h, rsip::Header::From(_))).unwrap_or_default(),
                callee: header(|h| matches!(h, rsip::Header::To(_))).unwrap_or_default(),
                state: "early".into(),
                since_ms: None,
            });
        }
        out.sort_by(|a, b| a.call_id.cmp(&b.call_id));
        out.dedup_by(|a, b| a.call_id == b.call_id);
        out
    }

    /// Ends a call from the outside: BYE to both sides of a confirmed call
    /// (and rtpengine delete), or CANCEL downstream for a ringing one.
    pub fn hangup(&mut self, now: Instant, call_id: &str) -> HangupOutcome {
        if self.dialogs.get(call_id).is_some() {
            if self.media {
                self.tasks
                    .push_back(super::Task::Media(super::MediaTask::Terminate {
                        call_id: call_id.to_owned(),
                        reason: crate::media::EndReason::Bye,
                    }));
            }
            self.teardown(now, call_id, super::dialog::EndCause::AdminHangup);
            self.drain(now);
            return HangupOutcome::Bye;
        }
        let pending = self
            .forwards
            .iter()
            .find(|(_, f)| {
                f.method == rsip::Method::Invite
                    && !f.final_sent
                    && tag_of_header(&f.request, |h| matches!(h, rsip::Header::To(_))).is_none()
                    && call_id_of(&f.request.headers) == call_id
            })
            .map(|(k, _)| *k);
        let Some(key) = pending else {
            return HangupOutcome::NotFound;
        };
        if self.media {
            self.tasks
                .push_back(super::Task::Media(super::MediaTask::Terminate {
                    call_id: call_id.to_owned(),
                    reason: crate::media::EndReason::Cancel,
                }));
        }
        self.cancel_branches(now, key, None);
        self.drain(now);
        HangupOutcome::Cancelled
    }

    /// WebSocket flows something still depends on: a call, a request in
    /// progress, or a request parked for authentication.
    pub fn busy_flows(&self) -> HashSet<FlowId> {
        let mut out: HashSet<FlowId> = self.dialogs.iter().flat_map(|d| d.flows()).collect();
        let flow_of = |d: Destination| match d {
            Destination::Flow(f) => Some(f),
            Destination::Udp(_) => None,
        };
        for f in self.forwards.values() {
            if f.final_sent {
                continue;
            }
            out.extend(flow_of(f.source.reply_to()));
            out.extend(f.branches.iter().filter_map(|b| flow_of(b.dest)));
        }
        for p in self.parked.values() {
            if let Source::Ws { flow, .. } = p.source {
                out.insert(flow);
            }
        }
        out
    }

    /// Call-IDs the core still knows: confirmed, ringing or being set up.
    pub fn live_call_ids(&self) -> HashSet<String> {
        let mut out: HashSet<String> = self.dialogs.iter().map(|d| d.call_id.clone()).collect();
        out.extend(self.early.iter().cloned());
        out.extend(
            self.forwards
                .values()
                .filter(|f| f.method == rsip::Method::Invite)
                .map(|f| call_id_of(&f.request.headers)),
        );
        out.extend(
            self.parked
                .values()
                .filter(|p| p.request.method == rsip::Method::Invite)
                .map(|p| call_id_of(&p.request.headers)),
        );
        out
    }
}

#[cfg(test)]
#[path = "ops_tests.rs"]
mod tests;
