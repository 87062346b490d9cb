//! Dialogs the proxy saw established (RFC 3261 §12), kept only so far as
//! rtcgate must act on its own: when a browser's WebSocket dies mid-call,
//! the other side gets a BYE from rtcgate instead of a half-dead call.

use std::collections::HashMap;
use std::time::Instant;

use crate::rsip;
use crate::transport::{Destination, FlowId, Kind};

/// A change in a call's life, for accounting and metrics. Every call (an
/// initial INVITE that was routed) gives `Started`, then `Early` (maybe),
/// then either `Failed`, or `Confirmed` and later `Terminated`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialogEvent {
    /// Call-ID.
    pub call_id: String,
    /// When it happened (the proxy's `now`).
    pub at: Instant,
    /// What happened.
    pub kind: DialogEventKind,
}

/// What happened to a dialog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DialogEventKind {
    /// An initial INVITE was routed (forwarded, or rejected by routing).
    Started(CallStart),
    /// A provisional response with a To tag created an early dialog.
    Early,
    /// A 2xx confirmed it.
    Confirmed {
        /// Where the answering branch went (see [`describe_destination`]).
        destination: String,
    },
    /// A BYE or rtcgate's own teardown ended it.
    Terminated {
        /// Why.
        reason: EndCause,
    },
    /// The INVITE failed: a final non-2xx response went to the caller.
    Failed {
        /// The final status sent upstream.
        status: u16,
        /// Every destination it was sent to, in order (serial failover adds
        /// some after `Started`); empty when it went nowhere.
        destinations: Vec<String>,
    },
}

/// Who calls whom, as the proxy saw the initial INVITE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallStart {
    /// `user@host` of the From URI.
    pub caller: String,
    /// The From tag (names the caller's leg in rtpengine's statistics).
    pub caller_tag: String,
    /// `user@host` of the Request-URI as received.
    pub callee: String,
    /// Browser or SIP peer on each side (`None`: routing found no target).
    pub direction: Option<Direction>,
    /// Where the INVITE was forwarded, one entry per fork (empty when rejected).
    pub destinations: Vec<String>,
}

/// Which kinds of peer a call connects: browsers come over WebSocket, PBXes
/// and other SIP peers over UDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// A browser calls a PBX.
    BrowserToPbx,
    /// A PBX calls a browser.
    PbxToBrowser,
    /// A browser calls a browser.
    BrowserToBrowser,
    /// A SIP peer calls a SIP peer through rtcgate.
    PbxToPbx,
}

impl Direction {
    /// From the transports of the caller and of the callee.
    pub fn of(caller: Kind, callee: Kind) -> Self {
        let browser = |k: Kind| matches!(k, Kind::Ws | Kind::Wss);
        match (browser(caller), browser(callee)) {
            (true, true) => Self::BrowserToBrowser,
            (true, false) => Self::BrowserToPbx,
            (false, true) => Self::PbxToBrowser,
            (false, false) => Self::PbxToPbx,
        }
    }

    /// A stable label for records and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BrowserToPbx => "browser_to_pbx",
            Self::PbxToBrowser => "pbx_to_browser",
            Self::BrowserToBrowser => "browser_to_browser",
            Self::PbxToPbx => "pbx_to_pbx",
        }
    }
}

/// Why a confirmed call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndCause {
    /// The caller sent BYE.
    ByeFromCaller,
    /// The callee sent BYE.
    ByeFromCallee,
    /// A browser's WebSocket closed (and did not come back within the media grace).
    WsDropped,
    /// The maximum call duration passed.
    MaxDuration,
    /// An operator hung the call up.
    AdminHangup,
    /// The caller never acknowledged the 2xx (64·T1 passed without its ACK).
    NoAck,
    /// The dialog table was full and this dialog was the one given up.
    TableFull,
}

impl EndCause {
    /// A stable label for records and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ByeFromCaller => "bye_caller",
            Self::ByeFromCallee => "bye_callee",
            Self::WsDropped => "ws_drop",
            Self::MaxDuration => "max_duration",
            Self::AdminHangup => "admin_hangup",
            Self::NoAck => "no_ack",
            Self::TableFull => "table_full",
        }
    }

    /// Text for the `Reason` header of the BYEs rtcgate sends.
    pub fn text(self) -> &'static str {
        match self {
            Self::ByeFromCaller | Self::ByeFromCallee => "Call completed",
            Self::WsDropped => "WebSocket closed",
            Self::MaxDuration => "Maximum call duration",
            Self::AdminHangup => "Administrative hangup",
            Self::NoAck => "No ACK for the 2xx",
            Self::TableFull => "Dialog table full",
        }
    }
}

/// How a destination is written in events and call records: `udp:ip:port`
/// for SIP peers, the contact URI for browsers (their flows have no address).
pub fn describe_destination(dest: Destination, uri: &rsip::Uri) -> String {
    match dest {
        Destination::Udp(a) => format!("udp:{a}"),
        Destination::Flow(_) => crate::sip::user::uri_text(uri),
    }
}

/// One side of a dialog, as seen from rtcgate.
#[derive(Debug, Clone)]
pub struct Side {
    /// Where requests to this side go.
    pub dest: Destination,
    /// Its transport.
    pub kind: Kind,
    /// Its remote target (Contact URI).
    pub target: String,
    /// Its From/To header value, with its tag.
    pub identity: String,
    /// Its tag.
    pub tag: String,
    /// The route set toward it (beyond rtcgate), in order.
    pub route: Vec<String>,
    /// Highest CSeq it has sent in this dialog.
    pub cseq: u32,
}

/// A confirmed dialog.
#[derive(Debug, Clone)]
pub struct Dialog {
    /// Call-ID.
    pub call_id: String,
    /// The side that sent the INVITE.
    pub caller: Side,
    /// The side that answered it.
    pub callee: Side,
    /// The caller's ACK for the 2xx (or any later request in the dialog)
    /// passed: the dialog is known to be alive on both ends.
    pub acked: bool,
}

impl Dialog {
    /// The flows this dialog uses.
    pub fn flows(&self) -> impl Iterator<Item = FlowId> + '_ {
        [self.caller.dest, self.callee.dest]
            .into_iter()
            .filter_map(|d| match d {
                Destination::Flow(f) => Some(f),
                Destination::Udp(_) => None,
            })
    }
}

/// Dialogs by Call-ID (one per call: forked 2xx beyond the first are rare
/// enough that the first answer is the one tracked).
#[derive(Debug, Default)]
pub struct Dialogs {
    by_call: HashMap<String, Dialog>,
    /// Call-IDs per WebSocket flow, so a closing flow finds its calls
    /// without scanning every dialog.
    by_flow: HashMap<FlowId, Vec<String>>,
    /// Cap, so a flood of answered-but-never-ended calls stays bounded.
    max: usize,
}

impl Dialogs {
    /// An empty table holding at most `max` dialogs.
    pub fn new(max: usize) -> Self {
        Self {
            by_call: HashMap::new(),
            by_flow: HashMap::new(),
            max,
        }
    }

    /// Number of dialogs.
    pub fn len(&self) -> usize {
        self.by_call.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_call.is_empty()
    }

    /// Records a dialog (the first 2xx of an initial INVITE). When the table
    /// is full an arbitrary other dialog is given up and returned, so the
    /// caller can end it properly (BYE, rtpengine delete) instead of
    /// forgetting a live call.
    pub fn insert(&mut self, d: Dialog) -> Option<Dialog> {
        if self.by_call.contains_key(&d.call_id) {
            return None;
        }
        let evicted = if self.by_call.len() >= self.max {
            let k = self.by_call.keys().next().cloned();
            k.and_then(|k| self.remove(&k))
        } else {
            None
        };
        for f in d.flows() {
            self.by_flow.entry(f).or_default().push(d.call_id.clone());
        }
        self.by_call.insert(d.call_id.clone(), d);
        evicted
    }

    /// Notes the CSeq of an in-dialog request sent by the side with `from_tag`.
    pub fn saw_request(&mut self, call_id: &str, from_tag: &str, cseq: u32) {
        if let Some(d) = self.by_call.get_mut(call_id) {
            let mut known = false;
            for side in [&mut d.caller, &mut d.callee] {
                if side.tag == from_tag {
                    known = true;
                    if cseq > side.cseq {
                        side.cseq = cseq;
                    }
                }
            }
            // Either side speaking in the dialog proves the 2xx arrived.
            d.acked |= known;
        }
    }

    /// Notes an ACK from the caller (`from_tag`) to the callee (`to_tag`).
    pub fn saw_ack(&mut self, call_id: &str, from_tag: &str, to_tag: &str) {
        if let Some(d) = self.by_call.get_mut(call_id)
            && d.caller.tag == from_tag
            && d.callee.tag == to_tag
        {
            d.acked = true;
        }
    }

    /// Removes a dialog (BYE seen, or torn down).
    pub fn remove(&mut self, call_id: &str) -> Option<Dialog> {
        let d = self.by_call.remove(call_id)?;
        for f in d.flows() {
            if let Some(calls) = self.by_flow.get_mut(&f) {
                calls.retain(|c| c != call_id);
                if calls.is_empty() {
                    self.by_flow.remove(&f);
                }
            }
        }
        Some(d)
    }

    /// Call-IDs of the dialogs using a flow.
    pub fn on_flow(&self, flow: FlowId) -> Vec<String> {
        self.by_flow.get(&flow).cloned().unwrap_or_default()
    }

    /// Every dialog, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Dialog> {
        self.by_call.values()
    }

    /// A dialog by Call-ID.
    pub fn get(&self, call_id: &str) -> Option<&Dialog> {
        self.by_call.get(call_id)
    }
}

/// The BYE rtcgate sends to `to` on behalf of `from` (the side that is
/// gone), with `via` on top and a reason for the operator's logs.
pub fn bye(d: &Dialog, to_caller: bool, via: &str, reason: &str) -> Option<rsip::Request> {
    let (to, from) = if to_caller {
        (&d.caller, &d.callee)
    } else {
        (&d.callee, &d.caller)
    };
    let routes: String = to.route.iter().map(|r| format!("Route: {r}\r\n")).collect();
    let text = format!(
        "BYE {target} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\n{routes}From: {from_id}\r\nTo: {to_id}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} BYE\r\nReason: SIP;cause=480;text=\"{reason}\"\r\nContent-Length: 0\r\n\r\n",
        target = to.target,
        from_id = from.identity,
        to_id = to.identity,
        call_id = d.call_id,
        cseq = from.cseq.saturating_add(1),
    );
    rsip::Request::try_from(text.as_str()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dialog() -> Dialog {
        Dialog {
            call_id: "c1".into(),
            caller: Side {
                dest: Destination::Flow(7),
                kind: Kind::Wss,
                target: "sip:u@x.invalid;transport=ws".into(),
                identity: "<sip:2000@localhost>;tag=a".into(),
                tag: "a".into(),
                route: vec![],
                cseq: 1,
            },
            callee: Side {
                dest: Destination::Udp("127.0.0.1:5080".parse().unwrap()),
                kind: Kind::Udp,
                target: "sip:pbx@127.0.0.1:5080".into(),
                identity: "<sip:1001@localhost>;tag=b".into(),
                tag: "b".into(),
                route: vec![],
                cseq: 0,
            },
            acked: false,
        }
    }

    #[test]
    fn bye_toward_the_pbx_impersonates_the_caller() {
        let mut t = Dialogs::new(10);
        t.insert(dialog());
        t.saw_request("c1", "a", 5);
        assert_eq!(t.on_flow(7), vec!["c1".to_string()]);
        let d = t.get("c1").unwrap();
        let b = bye(
            d,
            false,
            "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx",
            "gone",
        )
        .unwrap();
        let s = b.to_string();
        assert!(s.starts_with("BYE sip:pbx@127.0.0.1:5080 SIP/2.0"), "{s}");
        assert!(s.contains("CSeq: 6 BYE"), "{s}");
        assert!(s.contains("From: <sip:2000@localhost>;tag=a"), "{s}");
        assert!(s.contains("To: <sip:1001@localhost>;tag=b"), "{s}");
    }

    #[test]
    fn labels_for_records() {
        use Kind::{Udp, Ws, Wss};
        assert_eq!(Direction::of(Wss, Udp).as_str(), "browser_to_pbx");
        assert_eq!(Direction::of(Udp, Ws).as_str(), "pbx_to_browser");
        assert_eq!(Direction::of(Ws, Wss).as_str(), "browser_to_browser");
        assert_eq!(Direction::of(Udp, Udp).as_str(), "pbx_to_pbx");
        assert_eq!(EndCause::ByeFromCaller.as_str(), "bye_caller");
        assert_eq!(EndCause::AdminHangup.as_str(), "admin_hangup");
        assert_eq!(EndCause::MaxDuration.text(), "Maximum call duration");
        let uri = rsip::Uri::try_from("sip:u1@br.invalid").unwrap();
        assert_eq!(
            describe_destination(Destination::Flow(3), &uri),
            "sip:u1@br.invalid"
        );
        assert_eq!(
            describe_destination(Destination::Udp("192.0.2.1:5060".parse().unwrap()), &uri),
            "udp:192.0.2.1:5060"
        );
    }

    #[test]
    fn ack_and_in_dialog_requests_mark_the_dialog_alive() {
        let mut t = Dialogs::new(10);
        t.insert(dialog());
        t.saw_ack("c1", "b", "a");
        t.saw_ack("c1", "a", "x");
        assert!(!t.get("c1").unwrap().acked, "wrong tags prove nothing");
        t.saw_ack("c1", "a", "b");
        assert!(t.get("c1").unwrap().acked);

        let mut d = dialog();
        d.call_id = "c2".into();
        t.insert(d);
        t.saw_request("c2", "zz", 9);
        assert!(!t.get("c2").unwrap().acked);
        t.saw_request("c2", "b", 1);
        assert!(t.get("c2").unwrap().acked, "the callee's re-INVITE or BYE");
    }

    #[test]
    fn bounded() {
        let mut t = Dialogs::new(2);
        let mut evicted = Vec::new();
        for i in 0..5 {
            let mut d = dialog();
            d.call_id = format!("c{i}");
            evicted.extend(t.insert(d).map(|d| d.call_id));
        }
        assert_eq!(t.len(), 2);
        assert_eq!(evicted.len(), 3, "every dialog given up is handed back");
        let mut again = dialog();
        again.call_id = "c4".into();
        assert!(t.insert(again).is_none(), "a known dialog evicts nothing");
        assert_eq!(t.len(), 2);
        // The flow index follows evictions and removals.
        let left: usize = (0..5)
            .map(|i| {
                t.on_flow(7)
                    .iter()
                    .filter(|c| **c == format!("c{i}"))
                    .count()
            })
            .sum();
        assert_eq!(left, 2);
        for i in 0..5 {
            t.remove(&format!("c{i}"));
        }
        assert!(t.on_flow(7).is_empty());
    }
}
