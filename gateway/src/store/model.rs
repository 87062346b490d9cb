//! Plain data types persisted by the store.

use sha2::{Digest, Sha256};

/// A subscriber (a user that may register and call).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Subscriber {
    /// User part of the AOR and digest user name (stored verbatim, case-sensitive).
    pub username: String,
    /// Domain, also the digest realm.
    pub domain: String,
    /// MD5(username:realm:password), lower-case hex.
    pub ha1_md5: String,
    /// SHA-256(username:realm:password), lower-case hex (RFC 8760).
    pub ha1_sha256: String,
    /// Plaintext password, only when the operator asked to keep it.
    pub password: Option<String>,
    /// Creation time, unix seconds.
    pub created_at: i64,
    /// Last change, unix seconds.
    pub updated_at: i64,
}

impl Subscriber {
    /// The stored HA1 for `alg`.
    pub fn ha1(&self, alg: crate::auth::Algorithm) -> &str {
        match alg {
            crate::auth::Algorithm::Md5 => &self.ha1_md5,
            crate::auth::Algorithm::Sha256 => &self.ha1_sha256,
        }
    }
}

/// One registered contact of an AOR (a row of `location`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// Canonical address of record, `sip:user@domain`.
    pub aor: String,
    /// The Contact URI as the UA sent it (without angle brackets).
    pub contact: String,
    /// Unix seconds after which the binding is gone.
    pub expires_at: i64,
    /// q-value in thousandths (1000 = 1.0).
    pub q: u16,
    /// Path header values (RFC 3327), in order.
    pub path: Vec<String>,
    /// Source address the REGISTER came from (`ip:port`).
    pub received: Option<String>,
    /// Transport flow (connection) id that carried the REGISTER.
    pub flow_id: Option<String>,
    /// Node that holds the flow.
    pub node_id: String,
    /// `+sip.instance` value (RFC 5626/5627), without quotes.
    pub instance: Option<String>,
    /// `reg-id` (RFC 5626).
    pub reg_id: Option<u32>,
    /// User-Agent header.
    pub user_agent: Option<String>,
    /// Call-ID of the REGISTER that created/refreshed the binding.
    pub call_id: String,
    /// Its CSeq number.
    pub cseq: u32,
    /// Last change, unix seconds.
    pub updated_at: i64,
}

impl Binding {
    /// The row key: SHA-256 over AOR and contact (fixed length, so it indexes well everywhere).
    pub fn key(&self) -> String {
        binding_key(&self.aor, &self.contact)
    }

    /// Seconds left at `now` (0 when expired).
    pub fn remaining(&self, now: i64) -> u32 {
        u32::try_from(self.expires_at.saturating_sub(now).max(0)).unwrap_or(u32::MAX)
    }

    /// True when the binding is expired at `now`.
    pub fn is_expired(&self, now: i64) -> bool {
        self.expires_at <= now
    }
}

/// The row key of the binding (`aor`, `contact`).
pub fn binding_key(aor: &str, contact: &str) -> String {
    let mut h = Sha256::new();
    h.update(aor.as_bytes());
    h.update([0u8]);
    h.update(contact.as_bytes());
    hex::encode(h.finalize())
}

/// A change to the location table computed by the registrar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindingChange {
    /// Insert or refresh a binding.
    Upsert(Binding),
    /// Remove the binding (`aor`, `contact`).
    Remove {
        /// Address of record.
        aor: String,
        /// Contact URI.
        contact: String,
    },
}

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct BindingRow {
    pub aor: String,
    pub contact: String,
    pub expires_at: i64,
    pub q: i64,
    pub path: String,
    pub received: Option<String>,
    pub flow_id: Option<String>,
    pub node_id: String,
    pub instance: Option<String>,
    pub reg_id: Option<i64>,
    pub user_agent: Option<String>,
    pub call_id: String,
    pub cseq: i64,
    pub updated_at: i64,
}

/// Path entries are stored newline-separated: a header value never contains CR/LF.
pub(crate) fn join_path(path: &[String]) -> String {
    path.join("\n")
}

impl From<BindingRow> for Binding {
    fn from(r: BindingRow) -> Self {
        Self {
            aor: r.aor,
            contact: r.contact,
            expires_at: r.expires_at,
            q: u16::try_from(r.q.clamp(0, 1000)).unwrap_or(1000),
            path: r
                .path
                .split('\n')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
            received: r.received,
            flow_id: r.flow_id,
            node_id: r.node_id,
            instance: r.instance,
            reg_id: r.reg_id.and_then(|v| u32::try_from(v).ok()),
            user_agent: r.user_agent,
            call_id: r.call_id,
            cseq: u32::try_from(r.cseq).unwrap_or(0),
            updated_at: r.updated_at,
        }
    }
}

/// A call detail record.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct CallRecord {
    /// Row id.
    pub id: i64,
    /// SIP Call-ID.
    pub call_id: String,
    /// Caller (`user@host` of the From URI).
    pub caller: String,
    /// Callee (`user@host` of the Request-URI).
    pub callee: String,
    /// Where the call was sent (`udp:ip:port` of a PBX, or a browser's contact).
    pub destination: Option<String>,
    /// Unix milliseconds when the INVITE arrived.
    pub started_at_ms: i64,
    /// Unix milliseconds of the 2xx.
    pub answered_at_ms: Option<i64>,
    /// Unix milliseconds of BYE/CANCEL/final failure.
    pub ended_at_ms: Option<i64>,
    /// Final status code (200 answered, 486 busy, 487 cancelled, 408/5xx failed...).
    pub disposition: Option<i64>,
    /// Media statistics as JSON text.
    pub media_stats: Option<String>,
    /// `browser_to_pbx`, `pbx_to_browser`, `browser_to_browser` or `pbx_to_pbx`.
    pub direction: Option<String>,
    /// Why it ended: `bye_caller`, `bye_callee`, `ws_drop`, `max_duration`,
    /// `admin_hangup`, `no_ack`, `table_full`, `cancelled`, `busy`, `timeout`, `rejected`, `failed`...
    pub reason: Option<String>,
}

impl CallRecord {
    /// Talk time in milliseconds (answer to end), for answered and ended calls.
    pub fn duration_ms(&self) -> Option<i64> {
        Some(
            self.ended_at_ms?
                .saturating_sub(self.answered_at_ms?)
                .max(0),
        )
    }
}

/// Fields of a new call record (accounting writes finished calls in one go).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NewCallRecord {
    /// SIP Call-ID.
    pub call_id: String,
    /// Caller.
    pub caller: String,
    /// Callee.
    pub callee: String,
    /// Destination, if known.
    pub destination: Option<String>,
    /// Unix milliseconds when the call started.
    pub started_at_ms: i64,
    /// Answer time, unix milliseconds.
    pub answered_at_ms: Option<i64>,
    /// End time, unix milliseconds.
    pub ended_at_ms: Option<i64>,
    /// Final status code.
    pub disposition: Option<i64>,
    /// Media statistics JSON.
    pub media_stats: Option<String>,
    /// Direction label (see [`CallRecord::direction`]).
    pub direction: Option<String>,
    /// End reason label (see [`CallRecord::reason`]).
    pub reason: Option<String>,
}

/// Changes to a call record; `None` leaves a field untouched.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CallRecordUpdate {
    /// Destination.
    pub destination: Option<String>,
    /// Answer time, unix milliseconds.
    pub answered_at_ms: Option<i64>,
    /// End time, unix milliseconds.
    pub ended_at_ms: Option<i64>,
    /// Final status code.
    pub disposition: Option<i64>,
    /// Media statistics JSON.
    pub media_stats: Option<String>,
}
