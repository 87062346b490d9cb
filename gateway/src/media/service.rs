//! The async shell: an [`NgClient`] plus the [`MediaTracker`] behind a mutex that is never
//! held across an `.await`.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

use ngclient::{CallRef, CallStats, NgClient, NgError, Target};
use rtcgate_sdp::{FlagOptions, LegProfile, Limits, SdpKind, inspect, ng_flags};
use tokio::sync::mpsc;

use super::config::MediaConfig;
use super::error::MediaError;
use super::request::media_request;
use super::tracker::{EndReason, MediaTracker, MsgIds, NgPlan, TrackerConfig};

/// How often the timer task checks WebSocket graces and set-up timeouts.
const TICK: Duration = Duration::from_millis(100);

/// One SIP message carrying SDP, as the proxy sees it.
#[derive(Debug, Clone, Copy)]
pub struct SdpContext<'a> {
    /// Call-ID.
    pub call_id: &'a str,
    /// This message's From tag.
    pub from_tag: &'a str,
    /// This message's To tag (`None` out of dialog).
    pub to_tag: Option<&'a str>,
    /// The branch of the proxy's client transaction: for a request, the branch it is
    /// forwarded with (one per fork); for a response, the branch it matched. Unused for
    /// ACK/PRACK.
    pub via_branch: &'a str,
    /// The SDP body as received.
    pub sdp: &'a [u8],
    /// The profile of the leg the message is forwarded **to** (a browser: `WebRtc`; a PBX
    /// or UDP phone: `PlainRtp`).
    pub target: LegProfile,
    /// Named codec policy of the PBX set involved (`None`: the `default` policy).
    pub codec_policy: Option<&'a str>,
    /// Source address of the message, passed to rtpengine as `received-from`.
    pub received_from: Option<IpAddr>,
}

impl<'a> SdpContext<'a> {
    fn ids(&self) -> MsgIds<'a> {
        MsgIds {
            call_id: self.call_id,
            from_tag: self.from_tag,
            to_tag: self.to_tag,
            via_branch: self.via_branch,
        }
    }
}

/// Something the proxy must act on, sent on the channel returned by [`Media::start`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaEvent {
    /// The call's media is gone (its WebSocket grace or set-up time expired): tear down
    /// the SIP side (BYE toward the live side of a confirmed call, CANCEL/final response
    /// for a pending one).
    TearDown {
        /// Call-ID.
        call_id: String,
        /// Why.
        reason: EndReason,
    },
}

/// rtpengine's final statistics of a call, taken (ng `query`) right before its
/// whole-call `delete`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletedCall {
    /// Call-ID.
    pub call_id: String,
    /// What rtpengine counted (per tag, and totals).
    pub stats: CallStats,
}

struct Inner {
    client: NgClient,
    tracker: Mutex<MediaTracker>,
    config: MediaConfig,
    limits: Limits,
    events: mpsc::UnboundedSender<MediaEvent>,
    /// Where the statistics of deleted calls go (accounting), if anywhere.
    deleted: OnceLock<mpsc::Sender<DeletedCall>>,
}

/// The media service: one per node. Cheap to clone.
#[derive(Clone)]
pub struct Media {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Media {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Media")
            .field("ng", &self.inner.client.local_addr())
            .finish_non_exhaustive()
    }
}

impl Inner {
    fn tracker(&self) -> MutexGuard<'_, MediaTracker> {
        // A panic while holding the lock cannot leave the tracker half-updated in a way
        // worse than losing it; keep serving.
        self.tracker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn retry_after(&self) -> u32 {
        self.config.retry_after_secs
    }

    /// Sends a delete, bounded by the delete deadline; errors are logged (an unknown call
    /// in rtpengine is not a failure here).
    async fn delete(&self, call: CallRef) -> bool {
        let whole = call.via_branch.is_none() && call.to_tag.is_none();
        // rtpengine answers a delete without tags with a bare "ok": the call's
        // final statistics come from a `query` just before it, for accounting.
        if whole
            && let Some(tx) = self.deleted.get()
            && let Some(stats) = self.final_stats(&call.call_id).await
        {
            let report = DeletedCall {
                call_id: call.call_id.clone(),
                stats,
            };
            // Never wait here: a full receiver loses these statistics.
            if tx.try_send(report).is_err() {
                tracing::debug!(call_id = %call.call_id, "call statistics not taken");
            }
        }
        let res = tokio::time::timeout(
            self.config.delete_deadline(),
            self.client.delete(&call, Target::Auto),
        )
        .await;
        if whole {
            // Also when the reply was an error: the call is gone from our side.
            let _ = self.client.forget_call(&call.call_id);
        }
        match res {
            Ok(Ok(_)) => {
                tracing::debug!(call_id = %call.call_id, via_branch = ?call.via_branch, "rtpengine delete ok");
                true
            }
            Ok(Err(NgError::Rtpengine { reason })) => {
                tracing::debug!(call_id = %call.call_id, %reason, "rtpengine delete refused");
                false
            }
            Ok(Err(e)) => {
                tracing::warn!(call_id = %call.call_id, error = %e, "rtpengine delete failed");
                false
            }
            Err(_) => {
                tracing::warn!(call_id = %call.call_id, "rtpengine delete timed out");
                false
            }
        }
    }

    /// The call's statistics (ng `query`), within half the delete deadline so
    /// that the delete after it keeps most of its time.
    async fn final_stats(&self, call_id: &str) -> Option<CallStats> {
        let q = CallRef::new(call_id);
        let res = tokio::time::timeout(
            self.config.delete_deadline() / 2,
            self.client.query(&q, Target::Auto),
        )
        .await;
        match res {
            Ok(Ok(resp)) => Some(resp.reply.call_stats()),
            Ok(Err(e)) => {
                tracing::debug!(call_id, error = %e, "rtpengine query before delete failed");
                None
            }
            Err(_) => {
                tracing::debug!(call_id, "rtpengine query before delete timed out");
                None
            }
        }
    }
}

impl Media {
    /// Starts the ng client and the timer task. Returns the service and the channel of
    /// [`MediaEvent`]s the proxy must consume.
    pub async fn start(
        config: MediaConfig,
    ) -> Result<(Media, mpsc::UnboundedReceiver<MediaEvent>), MediaError> {
        config
            .validate()
            .map_err(|e| MediaError::Internal(e.to_string()))?;
        let client = NgClient::start(config.client_config())
            .await
            .map_err(|e| MediaError::from_ng(e, config.retry_after_secs))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            client,
            tracker: Mutex::new(MediaTracker::new(TrackerConfig::from(&config))),
            limits: config.sdp_limits.into(),
            config,
            events: tx,
            deleted: OnceLock::new(),
        });
        tokio::spawn(timer_task(Arc::downgrade(&inner)));
        Ok((Media { inner }, rx))
    }

    /// From now on, queries every call's statistics just before its whole-call
    /// delete and sends them to `tx` (without waiting: a full channel loses
    /// them). Only the first call takes effect; returns whether this one did.
    pub fn report_deleted_calls(&self, tx: mpsc::Sender<DeletedCall>) -> bool {
        self.inner.deleted.set(tx).is_ok()
    }

    /// The ng client (for health, metrics, `query`/`list`).
    pub fn client(&self) -> &NgClient {
        &self.inner.client
    }

    /// The configuration in force.
    pub fn config(&self) -> &MediaConfig {
        &self.inner.config
    }

    /// An INVITE, re-INVITE or UPDATE **with SDP** is forwarded: returns the SDP to put in
    /// its place (ng `offer`).
    pub async fn offer(&self, ctx: &SdpContext<'_>) -> Result<Vec<u8>, MediaError> {
        let flags_in = self.inspect(ctx)?;
        let plan = self
            .inner
            .tracker()
            .offer_in_request(Instant::now(), &ctx.ids())?;
        self.run(plan, ctx, flags_in).await
    }

    /// An INVITE or re-INVITE **without** SDP is forwarded (late offer). No ng request.
    pub fn invite_without_sdp(
        &self,
        call_id: &str,
        from_tag: &str,
        to_tag: Option<&str>,
        via_branch: &str,
    ) -> Result<(), MediaError> {
        let ids = MsgIds {
            call_id,
            from_tag,
            to_tag,
            via_branch,
        };
        self.inner
            .tracker()
            .invite_without_sdp(Instant::now(), &ids)
    }

    /// An 18x or 2xx **with SDP** (`status`) is forwarded: returns the SDP to put in its
    /// place. Usually the ng `answer`; for an INVITE that had no SDP, the ng `offer` (late
    /// offer). On error the proxy forwards the response without its body and, for a 2xx,
    /// tears the call down.
    pub async fn answer(&self, ctx: &SdpContext<'_>, status: u16) -> Result<Vec<u8>, MediaError> {
        let info = self.inspect(ctx)?;
        let plan = self
            .inner
            .tracker()
            .sdp_in_response(Instant::now(), &ctx.ids(), status)?;
        self.run(plan, ctx, info).await
    }

    /// An ACK or PRACK **with SDP** is forwarded: the answer to a late offer (ng `answer`).
    pub async fn answer_in_request(&self, ctx: &SdpContext<'_>) -> Result<Vec<u8>, MediaError> {
        let info = self.inspect(ctx)?;
        let plan = self
            .inner
            .tracker()
            .sdp_in_ack(Instant::now(), &ctx.ids())?;
        self.run(plan, ctx, info).await
    }

    /// A final response to an INVITE/re-INVITE client transaction (or its timeout, as 408),
    /// with or without SDP. Deletes a failed fork branch whose siblings live on.
    pub async fn invite_final(&self, call_id: &str, via_branch: &str, status: u16) {
        let del = self
            .inner
            .tracker()
            .invite_final(call_id, via_branch, status);
        if let Some(del) = del {
            self.inner.delete(del).await;
        }
    }

    /// The call ends (BYE, CANCEL, final failure, timeouts...): deletes it in rtpengine,
    /// once. Returns whether a delete was sent now (false: unknown or already ended, or
    /// deferred until an ng request in flight completes).
    pub async fn terminate(&self, call_id: &str, reason: EndReason) -> bool {
        let del = self
            .inner
            .tracker()
            .terminate(Instant::now(), call_id, reason);
        match del {
            Some(del) => {
                tracing::info!(call_id, %reason, "media: deleting call");
                self.inner.delete(del).await;
                true
            }
            None => false,
        }
    }

    /// The WebSocket of a browser in this call dropped: after the configured grace the call
    /// is deleted and a [`MediaEvent::TearDown`] sent, unless [`Media::ws_restored`].
    pub fn ws_dropped(&self, call_id: &str) {
        self.inner.tracker().ws_dropped(Instant::now(), call_id);
    }

    /// The browser came back for this call within the grace.
    pub fn ws_restored(&self, call_id: &str) {
        self.inner.tracker().ws_restored(call_id);
    }

    /// Calls live in rtpengine (for metrics).
    pub fn active_calls(&self) -> usize {
        self.inner.tracker().active_calls()
    }

    /// Deletes every call still held (node shutdown), concurrently, each bounded by the
    /// delete deadline. Returns how many deletes rtpengine confirmed.
    pub async fn shutdown(&self) -> usize {
        let dels = self.inner.tracker().drain_for_shutdown(Instant::now());
        let tasks: Vec<_> = dels
            .into_iter()
            .map(|d| {
                let inner = self.inner.clone();
                tokio::spawn(async move { inner.delete(d).await })
            })
            .collect();
        let mut ok = 0;
        for t in tasks {
            if matches!(t.await, Ok(true)) {
                ok += 1;
            }
        }
        ok
    }

    fn inspect(&self, ctx: &SdpContext<'_>) -> Result<rtcgate_sdp::SdpInfo, MediaError> {
        inspect(ctx.sdp, &self.inner.limits).map_err(|e| {
            tracing::info!(call_id = ctx.call_id, error = %e, "media: SDP refused");
            MediaError::BadSdp(e)
        })
    }

    /// Sends the planned ng request in its own task, so that the tracker learns its outcome
    /// even when the caller stops waiting at the deadline (no leak, no delete racing it).
    async fn run(
        &self,
        plan: NgPlan,
        ctx: &SdpContext<'_>,
        info: rtcgate_sdp::SdpInfo,
    ) -> Result<Vec<u8>, MediaError> {
        let cfg = &self.inner.config;
        let policy = match plan.kind {
            SdpKind::Offer => cfg.codec_policy(ctx.codec_policy),
            SdpKind::Answer => Default::default(),
        };
        let opts = FlagOptions {
            trust_address: cfg.trust_address,
            ..FlagOptions::default()
        };
        let flags = ng_flags(ctx.target, plan.kind, &info, &policy, &opts);
        let req = media_request(
            &flags,
            &plan.call_id,
            &plan.tags,
            plan.via_branch.as_deref(),
            ctx.sdp,
            ctx.received_from,
        );
        tracing::debug!(
            call_id = %plan.call_id, kind = ?plan.kind, from_tag = %plan.tags.from_tag,
            to_tag = ?plan.tags.to_tag, via_branch = ?plan.via_branch, target = ?ctx.target,
            "media: ng request"
        );
        let abandoned = Arc::new(AtomicBool::new(false));
        let inner = self.inner.clone();
        let gave_up = abandoned.clone();
        let handle = tokio::spawn(async move {
            let res = match plan.kind {
                SdpKind::Offer => inner.client.offer(&req, Target::Auto).await,
                SdpKind::Answer => inner.client.answer(&req, Target::Auto).await,
            };
            let res = res.and_then(|r| r.sdp().map(<[u8]>::to_vec));
            let ok = res.is_ok() && !gave_up.load(Ordering::SeqCst);
            let follow = inner.tracker().op_finished(Instant::now(), &plan, ok);
            if let Some(del) = follow {
                let inner2 = inner.clone();
                tokio::spawn(async move { inner2.delete(del).await });
            }
            res
        });
        match tokio::time::timeout(cfg.offer_deadline(), handle).await {
            Ok(Ok(Ok(sdp))) => Ok(sdp),
            Ok(Ok(Err(e))) => {
                let err = MediaError::from_ng(e, self.inner.retry_after());
                tracing::warn!(call_id = ctx.call_id, error = %err, "media: ng request failed");
                Err(err)
            }
            Ok(Err(join)) => Err(MediaError::Internal(join.to_string())),
            Err(_) => {
                abandoned.store(true, Ordering::SeqCst);
                tracing::warn!(call_id = ctx.call_id, "media: rtpengine deadline passed");
                Err(MediaError::Unavailable {
                    reason: format!("no rtpengine reply within {} ms", cfg.offer_deadline_ms),
                    retry_after: self.inner.retry_after(),
                })
            }
        }
    }
}

async fn timer_task(weak: Weak<Inner>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = weak.upgrade() else { return };
        let expired = inner.tracker().handle_timeout(Instant::now());
        for e in expired {
            tracing::info!(call_id = %e.call_id, reason = %e.reason, "media: call expired");
            if let Some(del) = e.delete {
                let inner2 = inner.clone();
                tokio::spawn(async move { inner2.delete(del).await });
            }
            let _ = inner.events.send(MediaEvent::TearDown {
                call_id: e.call_id,
                reason: e.reason,
            });
        }
    }
}
