//! The sans-IO record of which calls exist in rtpengine, and what to tell it when.
//!
//! One [`MediaTracker`] per node. The proxy reports plain facts (an SDP in this request, a
//! final response on that branch, a BYE, a WebSocket drop) and the tracker answers with the
//! ng action to take ([`NgPlan`] for offers/answers, [`CallRef`] for deletes). It never
//! reads a clock (callers pass `now`) and never does I/O.
//!
//! # Guarantees
//!
//! - **No ng call without SDP**: only the three SDP entry points produce an [`NgPlan`].
//! - **Exactly one whole-call delete** per call, whichever way it ends (BYE, CANCEL, final
//!   failure, transaction or dialog timeout, WebSocket drop, set-up timeout, media failure,
//!   shutdown). After it the Call-ID is remembered for a while, so a late 200 crossing a
//!   CANCEL or a re-INVITE after a BYE cannot re-create the call in rtpengine (and leak
//!   it). A new out-of-dialog INVITE with the same Call-ID (a retry after a PBX's 407)
//!   starts afresh.
//! - **No delete races an offer**: a termination reported while an ng request for the call
//!   is in flight is deferred until it completes ([`MediaTracker::op_finished`]).
//! - **Forks are kept apart** by the via-branch of the proxy's client transaction: each
//!   branch of the initial INVITE gets its own `via-branch`, a failed branch is deleted on
//!   its own while others live on.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use ngclient::CallRef;
use rtcgate_sdp::SdpKind;

use super::config::MediaConfig;
use super::error::MediaError;
use super::request::{Carrier, NgTags, delete_branch, delete_call, ng_tags};

/// How many transactions with SDP state are remembered per call (re-INVITEs add one each).
const MAX_TXNS: usize = 16;

/// Timing of the tracker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackerConfig {
    /// Grace after a browser's WebSocket dropped before its calls end.
    pub ws_drop_grace: Duration,
    /// A call not answered (2xx) within this time after its first SDP is deleted.
    pub setup_timeout: Duration,
    /// How long an ended Call-ID is remembered.
    pub ended_memory: Duration,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig::from(&MediaConfig::default())
    }
}

impl From<&MediaConfig> for TrackerConfig {
    fn from(c: &MediaConfig) -> Self {
        Self {
            ws_drop_grace: Duration::from_millis(c.ws_drop_grace_ms),
            setup_timeout: Duration::from_secs(c.setup_timeout_secs),
            ended_memory: Duration::from_secs(c.ended_call_memory_secs),
        }
    }
}

/// The SIP identity of one message, as the proxy sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsgIds<'a> {
    /// Call-ID.
    pub call_id: &'a str,
    /// The tag of this message's From header.
    pub from_tag: &'a str,
    /// The tag of this message's To header (`None` or empty: out of dialog).
    pub to_tag: Option<&'a str>,
    /// The branch of the proxy's **client** transaction this message belongs to (the
    /// request's outgoing branch; for a response, the branch it matched). One per fork.
    /// For ACK/PRACK it is not used.
    pub via_branch: &'a str,
}

/// Why a call ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndReason {
    /// A BYE passed.
    Bye,
    /// The caller cancelled.
    Cancel,
    /// Every branch failed; the final failure went upstream.
    Failed,
    /// The INVITE client transaction timed out on every branch.
    TransactionTimeout,
    /// The dialog layer's session timer or idle timeout fired.
    DialogTimeout,
    /// A browser's WebSocket dropped and did not come back within the grace.
    WsDropped,
    /// The call was never answered within [`TrackerConfig::setup_timeout`].
    SetupTimeout,
    /// rtpengine failed on the call's only offer.
    MediaFailure,
    /// The node is shutting down.
    Shutdown,
}

impl EndReason {
    /// A short label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Bye => "bye",
            EndReason::Cancel => "cancel",
            EndReason::Failed => "failed",
            EndReason::TransactionTimeout => "transaction_timeout",
            EndReason::DialogTimeout => "dialog_timeout",
            EndReason::WsDropped => "ws_dropped",
            EndReason::SetupTimeout => "setup_timeout",
            EndReason::MediaFailure => "media_failure",
            EndReason::Shutdown => "shutdown",
        }
    }
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One ng `offer` or `answer` to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NgPlan {
    /// Call-ID.
    pub call_id: String,
    /// `offer` or `answer`.
    pub kind: SdpKind,
    /// The ng tags (see the tag rule in [`super::request`]).
    pub tags: NgTags,
    /// `via-branch`, set for exchanges of the initial INVITE (keeps forks apart).
    pub via_branch: Option<String>,
}

/// A call whose timer expired (see [`MediaTracker::handle_timeout`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Expired {
    /// Call-ID: the proxy tears the SIP side down (BYE/CANCEL toward the live side).
    pub call_id: String,
    /// Why.
    pub reason: EndReason,
    /// The delete to send now (`None` while an ng request is still in flight; it follows
    /// from [`MediaTracker::op_finished`]).
    pub delete: Option<CallRef>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BranchState {
    /// INVITE without SDP sent on it.
    LateOffer,
    /// Offer sent on it.
    Offered,
    /// An 18x with SDP came back.
    Early,
    /// The 2xx came back.
    Confirmed,
    /// Final failure.
    Failed,
}

#[derive(Debug, Clone)]
struct Branch {
    id: String,
    state: BranchState,
    /// rtpengine accepted an offer or answer for it. Only then may it be deleted on its
    /// own: rtpengine 10.5 resolves a `delete` whose via-branch it does not know to the
    /// from-tag's monologue, which ends the **whole** call (checked).
    ng: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TxnMedia {
    /// The request carried the offer: SDP in responses are answers.
    OfferInRequest,
    /// The request had no SDP: the first SDP in a response is the offer.
    AwaitingLateOffer,
    /// The response's offer was sent (a repeated one is re-offered).
    LateOfferMade,
}

#[derive(Debug, Clone)]
struct Txn {
    branch: String,
    media: TxnMedia,
    initial: bool,
}

#[derive(Debug, Clone)]
struct PendingLate {
    txn: String,
    offerer: String,
    via_branch: Option<String>,
}

#[derive(Debug, Clone)]
struct Call {
    caller_tag: String,
    created: Instant,
    confirmed: bool,
    branches: Vec<Branch>,
    txns: VecDeque<Txn>,
    pending_late: Option<PendingLate>,
    in_flight: u32,
    ending: Option<EndReason>,
    ws_deadline: Option<Instant>,
}

impl Call {
    fn new(caller_tag: &str, now: Instant) -> Self {
        Self {
            caller_tag: caller_tag.to_owned(),
            created: now,
            confirmed: false,
            branches: Vec::new(),
            txns: VecDeque::new(),
            pending_late: None,
            in_flight: 0,
            ending: None,
            ws_deadline: None,
        }
    }

    fn branch_mut(&mut self, id: &str) -> Option<&mut Branch> {
        self.branches.iter_mut().find(|b| b.id == id)
    }

    fn set_branch(&mut self, id: &str, state: BranchState, ng: bool) {
        match self.branch_mut(id) {
            Some(b) => {
                b.state = state;
                b.ng |= ng;
            }
            None => self.branches.push(Branch {
                id: id.to_owned(),
                state,
                ng,
            }),
        }
    }

    fn txn_mut(&mut self, branch: &str) -> Option<&mut Txn> {
        self.txns.iter_mut().find(|t| t.branch == branch)
    }

    fn set_txn(&mut self, branch: &str, media: TxnMedia, initial: bool) {
        if let Some(t) = self.txn_mut(branch) {
            t.media = media;
            return;
        }
        if self.txns.len() >= MAX_TXNS {
            self.txns.pop_front();
        }
        self.txns.push_back(Txn {
            branch: branch.to_owned(),
            media,
            initial,
        });
    }

    fn others_live(&self, id: &str) -> bool {
        self.branches
            .iter()
            .any(|b| b.id != id && b.state != BranchState::Failed)
    }
}

/// Per-node record of the calls held in rtpengine. See the module docs.
#[derive(Debug, Default)]
pub struct MediaTracker {
    config: TrackerConfig,
    calls: HashMap<String, Call>,
    /// Ended Call-IDs and when they may be forgotten.
    ended: HashMap<String, Instant>,
}

fn is_out_of_dialog(to_tag: Option<&str>) -> bool {
    to_tag.is_none_or(str::is_empty)
}

impl MediaTracker {
    /// An empty tracker.
    pub fn new(config: TrackerConfig) -> Self {
        Self {
            config,
            calls: HashMap::new(),
            ended: HashMap::new(),
        }
    }

    /// The call for a new exchange started by a request; an out-of-dialog request may
    /// re-open an ended Call-ID.
    fn call_for_request(&mut self, now: Instant, m: &MsgIds<'_>) -> Result<&mut Call, MediaError> {
        let initial = is_out_of_dialog(m.to_tag);
        if self.ended.contains_key(m.call_id) {
            if !initial {
                return Err(ended(m.call_id));
            }
            self.ended.remove(m.call_id);
        }
        let call = self
            .calls
            .entry(m.call_id.to_owned())
            .or_insert_with(|| Call::new(m.from_tag, now));
        if call.ending.is_some() {
            return Err(ended(m.call_id));
        }
        Ok(call)
    }

    /// A live call for a response or an ACK/PRACK.
    fn live_call(&mut self, call_id: &str) -> Result<&mut Call, MediaError> {
        if self.ended.contains_key(call_id) {
            return Err(ended(call_id));
        }
        match self.calls.get_mut(call_id) {
            None => Err(MediaError::Unexpected(
                "SDP for a call with no offer seen".into(),
            )),
            Some(c) if c.ending.is_some() => Err(ended(call_id)),
            Some(c) => Ok(c),
        }
    }

    /// An INVITE, re-INVITE or UPDATE **with SDP** (an offer) is being forwarded. Never
    /// call it for a request without SDP (see [`MediaTracker::invite_without_sdp`]).
    ///
    /// Follow with the ng `offer` and then [`MediaTracker::op_finished`].
    pub fn offer_in_request(&mut self, now: Instant, m: &MsgIds<'_>) -> Result<NgPlan, MediaError> {
        let tags = ng_tags(Carrier::Request, SdpKind::Offer, m.from_tag, m.to_tag)?;
        let initial = is_out_of_dialog(m.to_tag);
        let call = self.call_for_request(now, m)?;
        let via_branch = if initial {
            call.set_branch(m.via_branch, BranchState::Offered, false);
            Some(m.via_branch.to_owned())
        } else {
            None
        };
        call.set_txn(m.via_branch, TxnMedia::OfferInRequest, initial);
        call.in_flight += 1;
        Ok(NgPlan {
            call_id: m.call_id.to_owned(),
            kind: SdpKind::Offer,
            tags,
            via_branch,
        })
    }

    /// An INVITE or re-INVITE **without** SDP is being forwarded (late offer): no ng call
    /// now; the offer will come in the response, the answer in the ACK.
    pub fn invite_without_sdp(&mut self, now: Instant, m: &MsgIds<'_>) -> Result<(), MediaError> {
        let initial = is_out_of_dialog(m.to_tag);
        let call = self.call_for_request(now, m)?;
        if initial {
            call.set_branch(m.via_branch, BranchState::LateOffer, false);
        }
        call.set_txn(m.via_branch, TxnMedia::AwaitingLateOffer, initial);
        Ok(())
    }

    /// A response (18x or 2xx, `status`) **with SDP** is being forwarded. Usually the answer
    /// to the request's offer; for an INVITE that had no SDP, the offer (late offer).
    ///
    /// Follow with the ng request and then [`MediaTracker::op_finished`].
    pub fn sdp_in_response(
        &mut self,
        _now: Instant,
        m: &MsgIds<'_>,
        status: u16,
    ) -> Result<NgPlan, MediaError> {
        let call = self.live_call(m.call_id)?;
        let Some(txn) = call.txn_mut(m.via_branch) else {
            return Err(MediaError::Unexpected(
                "SDP in a response to a transaction with no media state".into(),
            ));
        };
        let kind = match txn.media {
            TxnMedia::OfferInRequest => SdpKind::Answer,
            TxnMedia::AwaitingLateOffer | TxnMedia::LateOfferMade => SdpKind::Offer,
        };
        let initial = txn.initial;
        let tags = ng_tags(Carrier::Response, kind, m.from_tag, m.to_tag)?;
        if kind == SdpKind::Offer {
            txn.media = TxnMedia::LateOfferMade;
        }
        let via_branch = initial.then(|| m.via_branch.to_owned());
        if kind == SdpKind::Offer {
            call.pending_late = Some(PendingLate {
                txn: m.via_branch.to_owned(),
                offerer: tags.from_tag.clone(),
                via_branch: via_branch.clone(),
            });
        }
        let success = (200..300).contains(&status);
        if initial {
            let state = if success {
                BranchState::Confirmed
            } else {
                BranchState::Early
            };
            call.set_branch(m.via_branch, state, false);
            call.confirmed |= success;
        }
        call.in_flight += 1;
        Ok(NgPlan {
            call_id: m.call_id.to_owned(),
            kind,
            tags,
            via_branch,
        })
    }

    /// An ACK or PRACK **with SDP** is being forwarded: the answer to a late offer made in
    /// a response.
    ///
    /// Follow with the ng `answer` and then [`MediaTracker::op_finished`].
    pub fn sdp_in_ack(&mut self, _now: Instant, m: &MsgIds<'_>) -> Result<NgPlan, MediaError> {
        let tags = ng_tags(Carrier::Request, SdpKind::Answer, m.from_tag, m.to_tag)?;
        let call = self.live_call(m.call_id)?;
        let Some(pending) = call.pending_late.take_if(|p| p.offerer == tags.from_tag) else {
            return Err(MediaError::Unexpected(
                "SDP answer in a request with no offer pending".into(),
            ));
        };
        call.in_flight += 1;
        Ok(NgPlan {
            call_id: m.call_id.to_owned(),
            kind: SdpKind::Answer,
            tags,
            via_branch: pending.via_branch,
        })
    }

    /// A final response to an INVITE or re-INVITE client transaction (`via_branch`), with
    /// or without SDP; a transaction timeout counts as 408. A 2xx confirms the call; a
    /// failure of one fork branch while others live (or after another branch answered)
    /// returns that branch's delete. A failed re-INVITE leaves the call as it is. The last
    /// branch failing returns nothing: the proxy either tries the next destination or
    /// reports [`EndReason::Failed`] through [`MediaTracker::terminate`].
    pub fn invite_final(
        &mut self,
        call_id: &str,
        via_branch: &str,
        status: u16,
    ) -> Option<CallRef> {
        let call = self.calls.get_mut(call_id)?;
        if status < 200 {
            return None;
        }
        if (200..300).contains(&status) {
            if let Some(b) = call.branch_mut(via_branch) {
                b.state = BranchState::Confirmed;
                call.confirmed = true;
            }
            return None;
        }
        call.pending_late.take_if(|p| p.txn == via_branch);
        let b = call.branch_mut(via_branch)?;
        if matches!(b.state, BranchState::Confirmed | BranchState::Failed) {
            return None;
        }
        b.state = BranchState::Failed;
        let had_ng = b.ng;
        let keep = call.others_live(via_branch) || call.confirmed;
        if had_ng && keep && call.ending.is_none() {
            tracing::debug!(call_id, via_branch, status, "media: fork branch failed");
            Some(delete_branch(call_id, &call.caller_tag, via_branch))
        } else {
            None
        }
    }

    /// The call ends: returns the whole-call delete, exactly once per call. `None` when the
    /// call is unknown, already ended, or an ng request is in flight (the delete then comes
    /// from [`MediaTracker::op_finished`]).
    pub fn terminate(&mut self, now: Instant, call_id: &str, reason: EndReason) -> Option<CallRef> {
        let call = self.calls.get_mut(call_id)?;
        if call.ending.is_some() {
            return None;
        }
        call.ending = Some(reason);
        if call.in_flight > 0 {
            tracing::debug!(call_id, %reason, "media: delete deferred until ng reply");
            return None;
        }
        self.end(now, call_id, reason)
    }

    /// Removes the call, remembers its id, and returns its delete.
    fn end(&mut self, now: Instant, call_id: &str, reason: EndReason) -> Option<CallRef> {
        self.calls.remove(call_id)?;
        self.ended
            .insert(call_id.to_owned(), now + self.config.ended_memory);
        tracing::debug!(call_id, %reason, "media: call ends");
        Some(delete_call(call_id))
    }

    /// The ng request of `plan` completed (`ok`: rtpengine accepted it). Returns a delete
    /// to send: the deferred one of a call that ended meanwhile, or the whole call's after
    /// a failed offer that was its only hope (a failed fork branch among live ones is just
    /// marked failed).
    pub fn op_finished(&mut self, now: Instant, plan: &NgPlan, ok: bool) -> Option<CallRef> {
        let call = self.calls.get_mut(&plan.call_id)?;
        call.in_flight = call.in_flight.saturating_sub(1);
        if ok && let Some(b) = plan.via_branch.as_deref().and_then(|v| call.branch_mut(v)) {
            b.ng = true;
        }
        if let Some(reason) = call.ending {
            if call.in_flight == 0 {
                return self.end(now, &plan.call_id, reason);
            }
            return None;
        }
        if ok || plan.kind != SdpKind::Offer {
            return None;
        }
        let via = plan.via_branch.as_deref()?;
        let b = call.branch_mut(via)?;
        b.state = BranchState::Failed;
        if call.others_live(via) || call.confirmed {
            // Nothing of this branch is known to exist in rtpengine (a late-created
            // leftover goes with the whole-call delete); a branch delete could end the call.
            return None;
        }
        call.ending = Some(EndReason::MediaFailure);
        if call.in_flight > 0 {
            return None;
        }
        self.end(now, &plan.call_id, EndReason::MediaFailure)
    }

    /// A browser's WebSocket carrying this call dropped: the call ends after the grace
    /// unless [`MediaTracker::ws_restored`] is called first.
    pub fn ws_dropped(&mut self, now: Instant, call_id: &str) {
        if let Some(c) = self.calls.get_mut(call_id) {
            c.ws_deadline.get_or_insert(now + self.config.ws_drop_grace);
        }
    }

    /// The browser is back for this call (e.g. it re-INVITEd over a new connection).
    pub fn ws_restored(&mut self, call_id: &str) {
        if let Some(c) = self.calls.get_mut(call_id) {
            c.ws_deadline = None;
        }
    }

    /// The next instant [`MediaTracker::handle_timeout`] has work to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        let calls = self
            .calls
            .values()
            .filter(|c| c.ending.is_none())
            .flat_map(|c| {
                let setup = (!c.confirmed).then(|| c.created + self.config.setup_timeout);
                [c.ws_deadline, setup].into_iter().flatten()
            });
        calls.chain(self.ended.values().copied()).min()
    }

    /// Ends the calls whose WebSocket grace or set-up time expired at `now`, and forgets
    /// old ended Call-IDs. The proxy tears down the SIP side of every [`Expired`] call.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<Expired> {
        self.ended.retain(|_, until| *until > now);
        let due: Vec<(String, EndReason)> = self
            .calls
            .iter()
            .filter(|(_, c)| c.ending.is_none())
            .filter_map(|(id, c)| {
                if c.ws_deadline.is_some_and(|d| d <= now) {
                    Some((id.clone(), EndReason::WsDropped))
                } else if !c.confirmed && c.created + self.config.setup_timeout <= now {
                    Some((id.clone(), EndReason::SetupTimeout))
                } else {
                    None
                }
            })
            .collect();
        due.into_iter()
            .map(|(call_id, reason)| {
                let delete = self.terminate(now, &call_id, reason);
                Expired {
                    call_id,
                    reason,
                    delete,
                }
            })
            .collect()
    }

    /// Calls live in rtpengine and not ending (for metrics).
    pub fn active_calls(&self) -> usize {
        self.calls.values().filter(|c| c.ending.is_none()).count()
    }

    /// Whether the tracker holds state for this Call-ID (live or awaiting its delete).
    pub fn contains(&self, call_id: &str) -> bool {
        self.calls.contains_key(call_id)
    }

    /// Shutdown: every call still held (live, or ending with an ng request in flight) as a
    /// whole-call delete; the tracker is empty afterwards.
    pub fn drain_for_shutdown(&mut self, now: Instant) -> Vec<CallRef> {
        let ids: Vec<String> = self.calls.keys().cloned().collect();
        ids.iter()
            .filter_map(|id| self.end(now, id, EndReason::Shutdown))
            .collect()
    }
}

fn ended(call_id: &str) -> MediaError {
    MediaError::CallEnded {
        call_id: call_id.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids<'a>(call: &'a str, from: &'a str, to: Option<&'a str>, br: &'a str) -> MsgIds<'a> {
        MsgIds {
            call_id: call,
            from_tag: from,
            to_tag: to,
            via_branch: br,
        }
    }

    /// A tracker plus a ledger of every ng action, to count deletes.
    struct Harness {
        t: MediaTracker,
        now: Instant,
        deletes: Vec<CallRef>,
        ng_ops: Vec<NgPlan>,
    }

    impl Harness {
        fn new() -> Self {
            Self {
                t: MediaTracker::new(TrackerConfig::default()),
                now: Instant::now(),
                deletes: Vec::new(),
                ng_ops: Vec::new(),
            }
        }
        fn done(&mut self, plan: NgPlan, ok: bool) {
            let d = self.t.op_finished(self.now, &plan, ok);
            self.ng_ops.push(plan);
            self.deletes.extend(d);
        }
        fn offer(&mut self, m: MsgIds<'_>) -> NgPlan {
            let p = self.t.offer_in_request(self.now, &m).unwrap();
            self.done(p.clone(), true);
            p
        }
        fn resp(&mut self, m: MsgIds<'_>, status: u16) -> NgPlan {
            let p = self.t.sdp_in_response(self.now, &m, status).unwrap();
            self.done(p.clone(), true);
            self.final_(m.call_id, m.via_branch, status);
            p
        }
        fn final_(&mut self, call: &str, br: &str, status: u16) {
            let d = self.t.invite_final(call, br, status);
            self.deletes.extend(d);
        }
        fn term(&mut self, call: &str, r: EndReason) {
            let d = self.t.terminate(self.now, call, r);
            self.deletes.extend(d);
        }
        fn whole_deletes(&self, call: &str) -> usize {
            self.deletes
                .iter()
                .filter(|d| d.call_id == call && d.via_branch.is_none() && d.to_tag.is_none())
                .count()
        }
        /// A confirmed call c: A offers on branch b1, B answers 200.
        fn confirmed(&mut self, c: &str) {
            self.offer(ids(c, "A", None, "b1"));
            self.resp(ids(c, "A", Some("B"), "b1"), 200);
        }
    }

    #[test]
    fn every_termination_path_deletes_exactly_once() {
        let reasons = [
            EndReason::Bye,
            EndReason::Cancel,
            EndReason::Failed,
            EndReason::TransactionTimeout,
            EndReason::DialogTimeout,
            EndReason::WsDropped,
            EndReason::MediaFailure,
        ];
        for r in reasons {
            let mut h = Harness::new();
            h.confirmed("c");
            assert_eq!(h.t.active_calls(), 1);
            h.term("c", r);
            // Every other path reported afterwards too: still one delete.
            for again in reasons {
                h.term("c", again);
            }
            h.final_("c", "b1", 487);
            assert_eq!(h.whole_deletes("c"), 1, "{r}");
            assert_eq!(h.deletes.len(), 1, "{r}");
            assert_eq!(h.t.active_calls(), 0);
            assert!(h.t.drain_for_shutdown(h.now).is_empty());
        }
    }

    #[test]
    fn unanswered_call_ending_paths() {
        // CANCEL before any answer; the 487 that follows changes nothing.
        let mut h = Harness::new();
        h.offer(ids("c", "A", None, "b1"));
        h.term("c", EndReason::Cancel);
        h.final_("c", "b1", 487);
        h.term("c", EndReason::Failed);
        assert_eq!(h.whole_deletes("c"), 1);
        // A 200 crossing the CANCEL must not re-create the call.
        let e =
            h.t.sdp_in_response(h.now, &ids("c", "A", Some("B"), "b1"), 200);
        assert!(matches!(e, Err(MediaError::CallEnded { .. })), "{e:?}");

        // Final failure: the branch failure alone deletes nothing (serial failover may
        // follow), the call failure deletes once.
        let mut h = Harness::new();
        h.offer(ids("c", "A", None, "b1"));
        h.final_("c", "b1", 503);
        assert!(h.deletes.is_empty());
        h.offer(ids("c", "A", None, "b2")); // next PBX of the set
        h.final_("c", "b2", 408); // transaction timeout
        h.term("c", EndReason::TransactionTimeout);
        assert_eq!(h.whole_deletes("c"), 1);
        assert_eq!(h.deletes.len(), 1);
    }

    #[test]
    fn termination_during_an_ng_request_is_deferred_not_lost() {
        let mut h = Harness::new();
        let p =
            h.t.offer_in_request(h.now, &ids("c", "A", None, "b1"))
                .unwrap();
        h.term("c", EndReason::Cancel);
        assert!(h.deletes.is_empty(), "no delete racing the offer");
        assert_eq!(h.t.active_calls(), 0);
        h.done(p, true);
        assert_eq!(h.whole_deletes("c"), 1);
        h.term("c", EndReason::Bye);
        assert_eq!(h.deletes.len(), 1);
    }

    #[test]
    fn failed_only_offer_deletes_the_call_and_a_retry_reopens_it() {
        let mut h = Harness::new();
        let p =
            h.t.offer_in_request(h.now, &ids("c", "A", None, "b1"))
                .unwrap();
        h.done(p, false);
        assert_eq!(h.whole_deletes("c"), 1);
        h.term("c", EndReason::Failed);
        assert_eq!(h.deletes.len(), 1);
        // The caller retries out of dialog with the same Call-ID (e.g. after a 407).
        h.offer(ids("c", "A", None, "b9"));
        assert_eq!(h.t.active_calls(), 1);
        // But in-dialog requests for an ended call are refused.
        let mut h2 = Harness::new();
        h2.confirmed("d");
        h2.term("d", EndReason::Bye);
        let e =
            h2.t.offer_in_request(h2.now, &ids("d", "B", Some("A"), "r1"));
        assert!(matches!(e, Err(MediaError::CallEnded { .. })));
    }

    #[test]
    fn forks_are_kept_apart_and_failed_branches_deleted_alone() {
        let mut h = Harness::new();
        let p1 = h.offer(ids("c", "PBX", None, "f1"));
        let p2 = h.offer(ids("c", "PBX", None, "f2"));
        let p3 = h.offer(ids("c", "PBX", None, "f3"));
        assert_eq!(p1.via_branch.as_deref(), Some("f1"));
        assert_eq!(p2.via_branch.as_deref(), Some("f2"));
        assert_eq!(p3.via_branch.as_deref(), Some("f3"));
        // f3 fails while others ring: its own delete.
        h.final_("c", "f3", 480);
        assert_eq!(h.deletes.len(), 1);
        let d = h.deletes.first().cloned().unwrap();
        assert_eq!(
            (d.via_branch.as_deref(), d.from_tag.as_deref()),
            (Some("f3"), Some("PBX"))
        );
        // Early media on f1, 200 on f2: answers carry each branch and its to-tag.
        let e1 = h.resp(ids("c", "PBX", Some("U1"), "f1"), 183);
        assert_eq!(e1.kind, SdpKind::Answer);
        assert_eq!(e1.via_branch.as_deref(), Some("f1"));
        assert_eq!(e1.tags.to_tag.as_deref(), Some("U1"));
        let a2 = h.resp(ids("c", "PBX", Some("U2"), "f2"), 200);
        assert_eq!(a2.via_branch.as_deref(), Some("f2"));
        // The proxy cancels f1: 487 → f1's delete, the call lives on.
        h.final_("c", "f1", 487);
        assert_eq!(h.deletes.len(), 2);
        assert_eq!(h.t.active_calls(), 1);
        h.term("c", EndReason::Bye);
        assert_eq!(h.whole_deletes("c"), 1);
        assert_eq!(h.deletes.len(), 3);
    }

    #[test]
    fn failed_offer_on_one_fork_branch_sends_no_branch_delete() {
        let mut h = Harness::new();
        h.offer(ids("c", "PBX", None, "f1"));
        let p2 =
            h.t.offer_in_request(h.now, &ids("c", "PBX", None, "f2"))
                .unwrap();
        h.done(p2, false);
        assert!(h.deletes.is_empty(), "f2 unknown to rtpengine: no delete");
        h.final_("c", "f2", 503);
        assert!(h.deletes.is_empty());
        // A branch is deleted alone at most once.
        h.final_("c", "f1", 487);
        h.final_("c", "f1", 487);
        assert!(h.deletes.is_empty(), "last live branch: wait for terminate");
        h.term("c", EndReason::Failed);
        assert_eq!(h.deletes.len(), 1);
    }

    #[test]
    fn late_offer_offer_in_2xx_answer_in_ack() {
        let mut h = Harness::new();
        h.t.invite_without_sdp(h.now, &ids("c", "A", None, "b1"))
            .unwrap();
        assert!(h.ng_ops.is_empty(), "no ng call without SDP");
        let o = h.resp(ids("c", "A", Some("B"), "b1"), 200);
        assert_eq!(o.kind, SdpKind::Offer);
        assert_eq!(o.tags.from_tag, "B");
        assert_eq!(o.tags.to_tag.as_deref(), Some("A"));
        // A retransmitted 200 with the same SDP is re-offered, not misread as an answer.
        let o2 = h.resp(ids("c", "A", Some("B"), "b1"), 200);
        assert_eq!(o2.kind, SdpKind::Offer);
        // ACK (From=A, To=B) carries A's answer.
        let a =
            h.t.sdp_in_ack(h.now, &ids("c", "A", Some("B"), "ack"))
                .unwrap();
        assert_eq!(a.kind, SdpKind::Answer);
        assert_eq!(
            (a.tags.from_tag.as_str(), a.tags.to_tag.as_deref()),
            ("B", Some("A"))
        );
        assert_eq!(a.via_branch.as_deref(), Some("b1"));
        h.done(a, true);
        // A second ACK with SDP has nothing to answer.
        assert!(
            h.t.sdp_in_ack(h.now, &ids("c", "A", Some("B"), "ack"))
                .is_err()
        );
        h.term("c", EndReason::Bye);
        assert_eq!(h.deletes.len(), 1);
    }

    #[test]
    fn reinvite_from_callee_uses_its_own_tags() {
        let mut h = Harness::new();
        h.confirmed("c");
        // Callee B puts A on hold: re-INVITE From=B To=A.
        let o = h.offer(ids("c", "B", Some("A"), "r1"));
        assert_eq!(
            (o.tags.from_tag.as_str(), o.tags.to_tag.as_deref()),
            ("B", Some("A"))
        );
        assert_eq!(o.via_branch, None, "in-dialog: no via-branch");
        let a = h.resp(ids("c", "B", Some("A"), "r1"), 200);
        assert_eq!(a.kind, SdpKind::Answer);
        assert_eq!(
            (a.tags.from_tag.as_str(), a.tags.to_tag.as_deref()),
            ("B", Some("A"))
        );
        // Caller A re-INVITEs too.
        let o = h.offer(ids("c", "A", Some("B"), "r2"));
        assert_eq!(
            (o.tags.from_tag.as_str(), o.tags.to_tag.as_deref()),
            ("A", Some("B"))
        );
        // A failed re-INVITE does not end the call.
        h.final_("c", "r2", 491);
        assert!(h.deletes.is_empty());
        assert_eq!(h.t.active_calls(), 1);
    }

    #[test]
    fn no_ng_without_sdp_and_no_answer_without_offer() {
        let mut h = Harness::new();
        // A response with SDP for a call nobody offered.
        assert!(
            h.t.sdp_in_response(h.now, &ids("x", "A", Some("B"), "b"), 200)
                .is_err()
        );
        // An ACK with SDP without a late offer.
        h.confirmed("c");
        assert!(
            h.t.sdp_in_ack(h.now, &ids("c", "A", Some("B"), "a"))
                .is_err()
        );
        // A 2xx without SDP changes nothing in rtpengine.
        h.final_("c", "b1", 200);
        assert!(h.deletes.is_empty());
        // A response with SDP on an unknown transaction is refused, not guessed.
        assert!(
            h.t.sdp_in_response(h.now, &ids("c", "A", Some("B"), "zz"), 200)
                .is_err()
        );
    }

    #[test]
    fn ws_drop_grace_and_setup_timeout() {
        let mut h = Harness::new();
        h.confirmed("c");
        h.confirmed("d");
        let t0 = h.now;
        h.t.ws_dropped(t0, "c");
        h.t.ws_dropped(t0, "d");
        h.t.ws_restored("d");
        let grace = TrackerConfig::default().ws_drop_grace;
        assert_eq!(h.t.next_deadline(), Some(t0 + grace));
        assert!(h.t.handle_timeout(t0 + grace / 2).is_empty());
        let exp = h.t.handle_timeout(t0 + grace);
        assert_eq!(exp.len(), 1);
        let e = exp.first().unwrap();
        assert_eq!((e.call_id.as_str(), e.reason), ("c", EndReason::WsDropped));
        assert!(e.delete.is_some());
        assert!(h.t.handle_timeout(t0 + grace * 2).is_empty());
        assert_eq!(h.t.active_calls(), 1);

        // An unanswered call is swept after the set-up timeout.
        let mut h = Harness::new();
        h.offer(ids("u", "A", None, "b1"));
        let setup = TrackerConfig::default().setup_timeout;
        let exp = h.t.handle_timeout(h.now + setup);
        assert_eq!(exp.len(), 1);
        assert_eq!(exp.first().map(|e| e.reason), Some(EndReason::SetupTimeout));
        // Ended ids are forgotten later.
        let later = h.now + setup + TrackerConfig::default().ended_memory;
        assert!(h.t.handle_timeout(later).is_empty());
        assert_eq!(h.t.next_deadline(), None);
    }

    #[test]
    fn shutdown_lists_every_held_call() {
        let mut h = Harness::new();
        h.confirmed("a");
        h.offer(ids("b", "X", None, "b1"));
        let _inflight =
            h.t.offer_in_request(h.now, &ids("c", "Y", None, "b1"))
                .unwrap();
        h.term("c", EndReason::Bye); // deferred
        let mut all: Vec<String> =
            h.t.drain_for_shutdown(h.now)
                .into_iter()
                .map(|d| d.call_id)
                .collect();
        all.sort();
        assert_eq!(all, ["a", "b", "c"]);
        assert_eq!(h.t.active_calls(), 0);
        assert!(!h.t.contains("c"));
    }
}
