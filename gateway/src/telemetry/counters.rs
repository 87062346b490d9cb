//! Counters bumped on the message path: one relaxed atomic add each, read
//! at scrape time. Everything else is read from where it already lives.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::rsip;

/// Method names in [`SipCounters`] index order.
pub const METHODS: [&str; 14] = [
    "INVITE",
    "ACK",
    "BYE",
    "CANCEL",
    "OPTIONS",
    "REGISTER",
    "INFO",
    "UPDATE",
    "MESSAGE",
    "NOTIFY",
    "SUBSCRIBE",
    "REFER",
    "PRACK",
    "PUBLISH",
];

/// The index of a method in [`METHODS`].
pub fn method_index(m: rsip::Method) -> usize {
    use rsip::Method as M;
    match m {
        M::Invite => 0,
        M::Ack => 1,
        M::Bye => 2,
        M::Cancel => 3,
        M::Options => 4,
        M::Register => 5,
        M::Info => 6,
        M::Update => 7,
        M::Message => 8,
        M::Notify => 9,
        M::Subscribe => 10,
        M::Refer => 11,
        M::PRack => 12,
        M::Publish => 13,
    }
}

/// Status codes 100..=699, one slot each.
const CODES: usize = 600;

/// Per-code counters (100..=699).
pub struct CodeCounters(Box<[AtomicU64]>);

impl Default for CodeCounters {
    fn default() -> Self {
        Self((0..CODES).map(|_| AtomicU64::new(0)).collect())
    }
}

impl std::fmt::Debug for CodeCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.nonzero()).finish()
    }
}

impl CodeCounters {
    /// Counts one `code` (codes outside 100..=699 are ignored).
    pub fn add(&self, code: u16) {
        if let Some(c) = usize::from(code)
            .checked_sub(100)
            .and_then(|i| self.0.get(i))
        {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The count of one code.
    pub fn get(&self, code: u16) -> u64 {
        usize::from(code)
            .checked_sub(100)
            .and_then(|i| self.0.get(i))
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Every code seen so far with its count.
    pub fn nonzero(&self) -> Vec<(u16, u64)> {
        self.0
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let n = c.load(Ordering::Relaxed);
                (n > 0).then(|| (u16::try_from(i + 100).unwrap_or(0), n))
            })
            .collect()
    }
}

/// What the proxy shell counts as messages pass.
#[derive(Debug, Default)]
pub struct SipCounters {
    requests: [AtomicU64; METHODS.len()],
    /// Responses sent, by code (forwarded and local, retransmissions included).
    pub responses: CodeCounters,
    /// Final answers to REGISTER (registrar and authentication), by code.
    pub register: CodeCounters,
}

impl SipCounters {
    /// A request arrived (retransmissions included).
    pub fn request(&self, m: rsip::Method) {
        if let Some(c) = self.requests.get(method_index(m)) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Requests received per method, in [`METHODS`] order.
    pub fn requests(&self) -> [u64; METHODS.len()] {
        std::array::from_fn(|i| self.requests[i].load(Ordering::Relaxed))
    }

    /// Counts an outgoing message if it is a response (`SIP/2.0 NNN`); costs
    /// a prefix compare on requests.
    pub fn sent(&self, data: &[u8]) {
        if let Some(code) = response_code(data) {
            self.responses.add(code);
        }
    }
}

/// The status code of an encoded response, `None` for a request.
pub fn response_code(data: &[u8]) -> Option<u16> {
    let rest = data.strip_prefix(b"SIP/2.0 ")?;
    let d = rest.get(..3)?;
    if !d.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(d.iter().fold(0u16, |n, b| n * 10 + u16::from(b - b'0')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_counted_from_the_status_line() {
        let c = SipCounters::default();
        c.sent(b"SIP/2.0 200 OK\r\n");
        c.sent(b"SIP/2.0 486 Busy Here\r\n");
        c.sent(b"SIP/2.0 486 Busy Here\r\n");
        c.sent(b"INVITE sip:x SIP/2.0\r\n");
        c.sent(b"SIP/2.0 2");
        c.sent(b"SIP/2.0 999 Nope\r\n");
        assert_eq!(c.responses.nonzero(), vec![(200, 1), (486, 2)]);
        c.request(rsip::Method::Bye);
        assert_eq!(c.requests()[2], 1);
    }
}
