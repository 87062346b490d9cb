//! The JSON documents of the admin API (served by the gateway, read back by
//! the CLI).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use crate::proxy::ops::{CallView, HangupOutcome, ProxySnapshot};

/// `GET /api/stats`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Stats {
    /// rtcgate version.
    pub version: String,
    /// `general.node_id`.
    pub node_id: String,
    /// Seconds since start.
    pub uptime_s: u64,
    /// Open SIP WebSocket connections.
    pub ws_flows_open: u64,
    /// SIP WebSocket connections accepted since start.
    pub ws_flows_accepted: u64,
    /// Live registered contacts.
    pub registrations_active: u64,
    /// Calls held in rtpengine (absent without media).
    pub media_calls: Option<u64>,
    /// The proxy core: transactions, dialogs, calls by outcome...
    pub proxy: ProxySnapshot,
    /// Requests received by method.
    pub sip_requests: BTreeMap<String, u64>,
    /// Responses sent by code.
    pub sip_responses: BTreeMap<String, u64>,
    /// Final answers to REGISTER by code.
    pub register_responses: BTreeMap<String, u64>,
}

/// One row of `GET /api/registrations`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Registration {
    /// Address of record.
    pub aor: String,
    /// Contact URI.
    pub contact: String,
    /// Seconds left.
    pub expires_in: u32,
    /// Source address of the REGISTER.
    pub received: Option<String>,
    /// WebSocket flow it is bound to.
    pub flow: Option<String>,
    /// User-Agent.
    pub user_agent: Option<String>,
    /// Node holding the flow.
    pub node_id: String,
}

/// One destination of `GET /api/sets`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DestinationView {
    /// `ip:port`.
    pub address: String,
    /// `up`, `down` or `unknown` (not probed yet, or probing off).
    pub state: String,
    /// Whether new calls may go there.
    pub routable: bool,
    /// Probe failures in a row.
    pub failures: u32,
    /// Code of the last probe reply.
    pub last_code: Option<u16>,
    /// Seconds in the current state.
    pub since_s: u64,
}

/// One set of `GET /api/sets`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SetView {
    /// Set name.
    pub name: String,
    /// Its destinations.
    pub destinations: Vec<DestinationView>,
}

/// ng counters of one command on one instance.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NgCommandView {
    /// ng command (`offer`, `answer`, `delete`, `ping`...).
    pub command: String,
    /// Requests started.
    pub requests: u64,
    /// Successful replies.
    pub ok: u64,
    /// `error` replies.
    pub errors: u64,
    /// `load limit` replies.
    pub load_limits: u64,
    /// No reply after every retry.
    pub timeouts: u64,
    /// Retransmissions.
    pub retransmits: u64,
    /// Median round trip, milliseconds (bucket bound).
    pub p50_ms: Option<f64>,
    /// 99th percentile round trip, milliseconds (bucket bound).
    pub p99_ms: Option<f64>,
}

/// One instance of `GET /api/rtpengine`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RtpengineView {
    /// ng address.
    pub instance: String,
    /// Takes new calls.
    pub up: bool,
    /// Configured weight.
    pub weight: u32,
    /// Calls mapped to it.
    pub calls: usize,
    /// Timeouts in a row.
    pub consecutive_timeouts: u32,
    /// Last round trip, milliseconds.
    pub last_rtt_ms: Option<f64>,
    /// Per-command counters.
    pub commands: Vec<NgCommandView>,
}

/// One part of a reload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadItem {
    /// What was reloaded (`certificate`, `routing`...).
    pub what: String,
    /// Whether it worked (on failure the old one stays in force).
    pub ok: bool,
    /// What happened.
    pub detail: String,
}

/// `POST /api/reload` (and the outcome of SIGHUP).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadReport {
    /// Every part reloaded.
    pub items: Vec<ReloadItem>,
}

impl ReloadReport {
    /// True when no part failed.
    pub fn ok(&self) -> bool {
        self.items.iter().all(|i| i.ok)
    }

    /// Adds one part's outcome.
    pub fn push(&mut self, what: &str, result: Result<String, String>) {
        let (ok, detail) = match result {
            Ok(d) => (true, d),
            Err(d) => (false, d),
        };
        self.items.push(ReloadItem {
            what: what.to_owned(),
            ok,
            detail,
        });
    }
}

/// `POST /api/calls/{call_id}/hangup`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HangupReply {
    /// The call.
    pub call_id: String,
    /// What was done.
    pub outcome: HangupOutcome,
}

/// The body of every error response.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: String,
}
