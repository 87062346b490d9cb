//! The tokio shell around the sans-IO proxy: one task owns the [`Proxy`],
//! fed by the transports through a channel, waking for timers.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::Instrument;

use super::ops::{CallView, HangupOutcome, ProxySnapshot};
use super::{MediaFailure, MediaMsg, MediaTask, Proxy, Task, TaskResult};
use crate::auth::DigestAuth;
use crate::media::{Media, MediaError, SdpContext};
use crate::registrar::{self, RegisterContext, RegistrarConfig};
use crate::sip::Checked;
use crate::store::LocationService;
use crate::telemetry::{CallTraces, SipCounters, TRACE_TARGET};
use crate::transport::{FlowId, Handler, Source, Transports};

enum Event {
    Message(Source, Box<Checked>),
    FlowClosed(FlowId),
    /// A task's outcome, with the span of the call it belongs to.
    TaskDone(Box<TaskResult>, Option<tracing::Span>),
    MediaTearDown(String),
    Admin(AdminRequest),
}

/// Requests from the admin API and the shutdown sequence.
enum AdminRequest {
    Snapshot(oneshot::Sender<ProxySnapshot>),
    Calls(oneshot::Sender<Vec<CallView>>),
    Hangup(String, oneshot::Sender<HangupOutcome>),
    Drain(Option<u32>),
    BusyFlows(oneshot::Sender<std::collections::HashSet<FlowId>>),
}

/// What the shell feeds besides the proxy: message counters and whether
/// call spans carry their OpenTelemetry trace id.
#[derive(Debug, Clone, Default)]
pub struct Ops {
    /// Requests, responses and REGISTER outcomes.
    pub counters: Arc<SipCounters>,
    /// Record the trace id in each call span (traces are exported).
    pub trace_ids: bool,
}

/// What the shell needs to run the proxy's tasks.
pub struct Services {
    /// Digest authentication (nonces, replay tracking).
    pub auth: std::sync::Mutex<DigestAuth>,
    /// Registrations, cached in memory, written through to the database.
    pub location: Arc<LocationService>,
    /// Flood limits; here for the failed-authentication bans.
    pub limiter: Arc<crate::limits::Limiter>,
    /// Registrar settings.
    pub registrar: RegistrarConfig,
    /// Challenge order for WebSocket clients.
    pub ws_algorithms: Vec<crate::auth::Algorithm>,
    /// Challenge order for UDP clients.
    pub udp_algorithms: Vec<crate::auth::Algorithm>,
    /// rtpengine, when media is bridged.
    pub media: Option<Media>,
    /// Call records, when accounting is on.
    pub accounting: Option<crate::accounting::Accounting>,
}

fn ctx(m: &MediaMsg) -> SdpContext<'_> {
    SdpContext {
        call_id: &m.call_id,
        from_tag: &m.from_tag,
        to_tag: m.to_tag.as_deref(),
        via_branch: &m.via_branch,
        sdp: &m.sdp,
        target: m.target,
        codec_policy: m.codec_policy.as_deref(),
        received_from: m.received_from,
    }
}

fn failure(e: &MediaError) -> MediaFailure {
    MediaFailure {
        status: e.sip_status(),
        warning: e.warning_text(),
        retry_after: e.retry_after(),
    }
}

async fn run_media(media: &Media, task: MediaTask) -> Option<TaskResult> {
    match task {
        MediaTask::Offer { key, branch, msg } => {
            let span = tracing::debug_span!(target: TRACE_TARGET, "ng.offer");
            let result = media.offer(&ctx(&msg)).instrument(span).await.map_err(|e| {
                tracing::warn!(call_id = %msg.call_id, error = %e, "media offer failed");
                failure(&e)
            });
            Some(TaskResult::Offered {
                key,
                branch,
                result,
            })
        }
        MediaTask::Answer {
            key,
            branch,
            mut response,
            msg,
        } => {
            let status = response.status_code.code();
            let span = tracing::debug_span!(target: TRACE_TARGET, "ng.answer", status);
            match media.answer(&ctx(&msg), status).instrument(span).await {
                Ok(sdp) => crate::sip::replace_body(&mut response.headers, &mut response.body, sdp),
                Err(e) => {
                    // The SDP cannot reach the other side unbridged.
                    tracing::warn!(call_id = %msg.call_id, error = %e, "media answer failed; body removed");
                    crate::sip::replace_body(&mut response.headers, &mut response.body, Vec::new());
                }
            }
            Some(TaskResult::Answered {
                key,
                branch,
                response,
            })
        }
        MediaTask::NoSdpInvite { msg } => {
            if let Err(e) = media.invite_without_sdp(
                &msg.call_id,
                &msg.from_tag,
                msg.to_tag.as_deref(),
                &msg.via_branch,
            ) {
                tracing::debug!(call_id = %msg.call_id, error = %e, "late offer not tracked");
            }
            None
        }
        MediaTask::Final {
            call_id,
            via_branch,
            status,
        } => {
            media.invite_final(&call_id, &via_branch, status).await;
            None
        }
        MediaTask::Terminate { call_id, reason } => {
            let span = tracing::debug_span!(target: TRACE_TARGET, "ng.delete", reason = %reason);
            media.terminate(&call_id, reason).instrument(span).await;
            None
        }
        MediaTask::WsDropped { call_id } => {
            media.ws_dropped(&call_id);
            None
        }
        MediaTask::AckAnswer {
            mut request,
            dest,
            msg,
        } => {
            match media.answer_in_request(&ctx(&msg)).await {
                Ok(sdp) => crate::sip::replace_body(&mut request.headers, &mut request.body, sdp),
                Err(e) => {
                    tracing::warn!(call_id = %msg.call_id, error = %e, "media answer in ACK failed");
                }
            }
            Some(TaskResult::AckReady { request, dest })
        }
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The Call-ID a task works for (to run it in the call's span).
fn task_call_id(task: &Task) -> Option<&str> {
    match task {
        Task::Media(
            MediaTask::Offer { msg, .. }
            | MediaTask::Answer { msg, .. }
            | MediaTask::NoSdpInvite { msg }
            | MediaTask::AckAnswer { msg, .. },
        ) => Some(&msg.call_id),
        Task::Media(
            MediaTask::Final { call_id, .. }
            | MediaTask::Terminate { call_id, .. }
            | MediaTask::WsDropped { call_id },
        ) => Some(call_id),
        Task::Authenticate { request, .. } => request.headers.iter().find_map(|h| match h {
            crate::rsip::Header::CallId(c) => Some(c.value().trim()),
            _ => None,
        }),
        Task::Register { .. } => None,
    }
}

async fn run_task(services: &Services, task: Task, counters: &SipCounters) -> Option<TaskResult> {
    match task {
        Task::Media(m) => match &services.media {
            Some(media) => run_media(media, m).await,
            None => None,
        },
        Task::Authenticate {
            key,
            request,
            source,
        } => {
            let order = match source {
                Source::Udp { .. } => &services.udp_algorithms,
                Source::Ws { .. } => &services.ws_algorithms,
            };
            let span = tracing::debug_span!(
                target: TRACE_TARGET, "auth",
                method = %request.method, outcome = tracing::field::Empty
            );
            let ip = source.peer().ip();
            let result = if let Some(left) = services.limiter.auth_banned(ip) {
                // Guessing: refused without a lookup or a hash.
                Err(registrar::banned_response(&request, left))
            } else {
                let result = registrar::authenticate_request_ordered(
                    &services.auth,
                    services.location.store(),
                    &request,
                    unix_now(),
                    order,
                )
                .instrument(span.clone())
                .await
                .map(|ok| ok.username);
                // 403 is the answer to a wrong password or an unknown user
                // only (`AuthFailure::action`).
                if matches!(&result, Err(r) if r.status_code.code() == 403) {
                    services.limiter.auth_failed(ip);
                }
                result
            };
            match &result {
                Ok(user) => span.record("outcome", tracing::field::display(user)),
                Err(resp) => span.record("outcome", resp.status_code.code()),
            };
            if let (crate::rsip::Method::Register, Err(resp)) = (request.method, &result) {
                counters.register.add(resp.status_code.code());
            }
            Some(TaskResult::Authenticated { key, result })
        }
        Task::Register {
            key,
            request,
            source,
            user,
        } => {
            let flow = match source {
                Source::Ws { flow, .. } => Some(flow.to_string()),
                Source::Udp { .. } => None,
            };
            let ctx = RegisterContext {
                now: unix_now(),
                flow_id: flow.as_deref(),
                source: Some(source.peer()),
                node_id: services.location.node_id(),
                authenticated_user: user.as_deref(),
            };
            let response =
                registrar::handle_register(&services.location, &services.registrar, &request, &ctx)
                    .await;
            counters.register.add(response.status_code.code());
            Some(TaskResult::Registered { key, response })
        }
    }
}

/// The transports' handler: queues everything for the core task. Also the
/// way in for the admin API (snapshots, calls, hangup, drain).
pub struct ProxyHandle {
    tx: mpsc::UnboundedSender<Event>,
    counters: Arc<SipCounters>,
}

impl ProxyHandle {
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> AdminRequest) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Event::Admin(make(tx))).ok()?;
        rx.await.ok()
    }

    /// The proxy's counters and gauges (`None`: the core task is gone).
    pub async fn snapshot(&self) -> Option<ProxySnapshot> {
        self.ask(AdminRequest::Snapshot).await
    }

    /// Ringing and established calls.
    pub async fn calls(&self) -> Option<Vec<CallView>> {
        self.ask(AdminRequest::Calls).await
    }

    /// Hangs a call up (BYE both sides, or CANCEL while ringing).
    pub async fn hangup(&self, call_id: &str) -> Option<HangupOutcome> {
        let id = call_id.to_owned();
        self.ask(|tx| AdminRequest::Hangup(id, tx)).await
    }

    /// Refuses new requests with 503 and this Retry-After (`None`: accept).
    pub fn set_draining(&self, retry_after: Option<u32>) {
        let _ = self.tx.send(Event::Admin(AdminRequest::Drain(retry_after)));
    }

    /// WebSocket flows still used by a call or a pending request.
    pub async fn busy_flows(&self) -> Option<std::collections::HashSet<FlowId>> {
        self.ask(AdminRequest::BusyFlows).await
    }

    /// The message counters.
    pub fn counters(&self) -> &Arc<SipCounters> {
        &self.counters
    }
}

impl Handler for ProxyHandle {
    fn on_message(&self, source: Source, msg: Checked) {
        if let crate::rsip::SipMessage::Request(r) = &msg.msg {
            self.counters.request(r.method);
        }
        let _ = self.tx.send(Event::Message(source, Box::new(msg)));
    }

    fn on_flow_closed(&self, flow: FlowId) {
        let _ = self.tx.send(Event::FlowClosed(flow));
    }
}

/// Starts the core task; returns the handler to give the transports.
pub fn spawn(
    proxy: Proxy,
    transports: Transports,
    services: Option<Arc<Services>>,
    media_events: Option<mpsc::UnboundedReceiver<crate::media::MediaEvent>>,
) -> Arc<ProxyHandle> {
    spawn_with(proxy, transports, services, media_events, Ops::default())
}

/// [`spawn`] with the operations hooks (counters, trace ids).
pub fn spawn_with(
    proxy: Proxy,
    transports: Transports,
    services: Option<Arc<Services>>,
    media_events: Option<mpsc::UnboundedReceiver<crate::media::MediaEvent>>,
    ops: Ops,
) -> Arc<ProxyHandle> {
    let (tx, rx) = mpsc::unbounded_channel();
    if let Some(mut events) = media_events {
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(ev) = events.recv().await {
                let crate::media::MediaEvent::TearDown { call_id, reason } = ev;
                tracing::info!(%call_id, %reason, "media teardown");
                if tx.send(Event::MediaTearDown(call_id)).is_err() {
                    break;
                }
            }
        });
    }
    if let Some(s) = &services {
        tokio::spawn(purge_loop(s.clone()));
    }
    let counters = ops.counters.clone();
    tokio::spawn(run(proxy, transports, rx, tx.clone(), services, ops));
    Arc::new(ProxyHandle { tx, counters })
}

/// Drops expired registrations from the cache and the database.
async fn purge_loop(services: Arc<Services>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(30));
    loop {
        tick.tick().await;
        if let Err(e) = services.location.purge_expired(unix_now()).await {
            tracing::warn!(error = %e, "expiry purge failed; will retry");
        }
    }
}

async fn run(
    mut proxy: Proxy,
    transports: Transports,
    mut rx: mpsc::UnboundedReceiver<Event>,
    tx: mpsc::UnboundedSender<Event>,
    services: Option<Arc<Services>>,
    ops: Ops,
) {
    let mut traces = CallTraces::new(ops.trace_ids);
    let counters = ops.counters;
    loop {
        let deadline = proxy.poll_timeout().map(Instant::from_std);
        tokio::select! {
            ev = rx.recv() => {
                let Some(ev) = ev else { break };
                let now = std::time::Instant::now();
                handle(&mut proxy, now, ev, &services, &mut traces);
                // Take what is already queued before flushing.
                for _ in 0..64 {
                    match rx.try_recv() {
                        Ok(ev) => handle(&mut proxy, now, ev, &services, &mut traces),
                        Err(_) => break,
                    }
                }
            }
            _ = sleep_until(deadline) => {
                proxy.handle_timeout(std::time::Instant::now());
            }
        }
        while let Some(task) = proxy.poll_task() {
            let (tx, services, counters) = (tx.clone(), services.clone(), counters.clone());
            let span = task_call_id(&task).and_then(|c| traces.span(c));
            let run = async move {
                let Some(services) = services else { return };
                if let Some(result) = run_task(&services, task, &counters).await {
                    let _ = tx.send(Event::TaskDone(
                        Box::new(result),
                        tracing::Span::current().into(),
                    ));
                }
            };
            match span {
                Some(s) => tokio::spawn(run.instrument(s)),
                None => tokio::spawn(run),
            };
        }
        let accounting = services.as_ref().and_then(|s| s.accounting.as_ref());
        while let Some(ev) = proxy.poll_dialog_event() {
            tracing::debug!(call_id = %ev.call_id, kind = ?ev.kind, "dialog");
            traces.on_event(&ev);
            if let Some(a) = accounting {
                a.dialog_event(&ev);
            }
        }
        while let Some(send) = proxy.poll_send() {
            counters.sent(&send.data);
            if let Err(e) = transports.send(send.dest, send.data) {
                tracing::debug!(error = %e, "send failed");
                if let Some(ck) = send.client {
                    proxy.send_failed(std::time::Instant::now(), ck);
                }
            }
        }
        let now = std::time::Instant::now();
        if traces.sweep_due(now) {
            traces.sweep(now, &proxy.live_call_ids());
        }
    }
}

fn handle(
    proxy: &mut Proxy,
    now: std::time::Instant,
    ev: Event,
    services: &Option<Arc<Services>>,
    traces: &mut CallTraces,
) {
    match ev {
        Event::Message(source, msg) => match traces.message_span(&msg, now) {
            Some(span) => span.in_scope(|| proxy.handle_message(now, source, *msg)),
            None => proxy.handle_message(now, source, *msg),
        },
        Event::FlowClosed(flow) => {
            proxy.flow_closed(now, flow);
            // A registration bound to a WebSocket flow ends with the flow.
            if let Some(s) = services.clone() {
                tokio::spawn(async move {
                    if let Err(e) = s.location.flow_closed(&flow.to_string()).await {
                        tracing::warn!(error = %e, flow, "could not remove the flow's registrations");
                    }
                });
            }
        }
        Event::TaskDone(result, span) => match span {
            Some(span) => span.in_scope(|| proxy.task_done(now, *result)),
            None => proxy.task_done(now, *result),
        },
        Event::MediaTearDown(call_id) => match traces.span(&call_id) {
            Some(span) => span.in_scope(|| proxy.media_teardown(now, &call_id)),
            None => proxy.media_teardown(now, &call_id),
        },
        Event::Admin(req) => admin(proxy, now, req, traces),
    }
}

fn admin(proxy: &mut Proxy, now: std::time::Instant, req: AdminRequest, traces: &CallTraces) {
    match req {
        AdminRequest::Snapshot(reply) => {
            let _ = reply.send(proxy.snapshot());
        }
        AdminRequest::Calls(reply) => {
            let mut calls = proxy.calls();
            for c in &mut calls {
                c.since_ms = traces.since_ms(&c.call_id);
            }
            let _ = reply.send(calls);
        }
        AdminRequest::Hangup(call_id, reply) => {
            let outcome = match traces.span(&call_id) {
                Some(span) => span.in_scope(|| proxy.hangup(now, &call_id)),
                None => proxy.hangup(now, &call_id),
            };
            tracing::info!(%call_id, ?outcome, "hangup requested by the admin API");
            let _ = reply.send(outcome);
        }
        AdminRequest::Drain(retry_after) => proxy.set_draining(retry_after),
        AdminRequest::BusyFlows(reply) => {
            let _ = reply.send(proxy.busy_flows());
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
