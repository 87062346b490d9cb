//! The tokio shell around the sans-IO proxy: one task owns the [`Proxy`],
//! fed by the transports through a channel, waking for timers.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{MediaFailure, MediaMsg, MediaTask, Proxy, Task, TaskResult};
use crate::auth::DigestAuth;
use crate::media::{Media, MediaError, SdpContext};
use crate::registrar::{self, RegisterContext, RegistrarConfig};
use crate::sip::Checked;
use crate::store::LocationService;
use crate::transport::{FlowId, Handler, Source, Transports};

enum Event {
    Message(Source, Box<Checked>),
    FlowClosed(FlowId),
    TaskDone(TaskResult),
    MediaTearDown(String),
}

/// What the shell needs to run the proxy's tasks.
pub struct Services {
    /// Digest authentication (nonces, replay tracking).
    pub auth: std::sync::Mutex<DigestAuth>,
    /// Registrations, cached in memory, written through to the database.
    pub location: Arc<LocationService>,
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
            let result = media.offer(&ctx(&msg)).await.map_err(|e| {
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
            match media.answer(&ctx(&msg), status).await {
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
            media.terminate(&call_id, reason).await;
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

async fn run_task(services: &Services, task: Task) -> Option<TaskResult> {
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
            let result = registrar::authenticate_request_ordered(
                &services.auth,
                services.location.store(),
                &request,
                unix_now(),
                order,
            )
            .await
            .map(|ok| ok.username);
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
            Some(TaskResult::Registered { key, response })
        }
    }
}

/// The transports' handler: queues everything for the core task.
pub struct ProxyHandle {
    tx: mpsc::UnboundedSender<Event>,
}

impl Handler for ProxyHandle {
    fn on_message(&self, source: Source, msg: Checked) {
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
    tokio::spawn(run(proxy, transports, rx, tx.clone(), services));
    Arc::new(ProxyHandle { tx })
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
) {
    loop {
        let deadline = proxy.poll_timeout().map(Instant::from_std);
        tokio::select! {
            ev = rx.recv() => {
                let Some(ev) = ev else { break };
                let now = std::time::Instant::now();
                handle(&mut proxy, now, ev, &services);
                // Take what is already queued before flushing.
                for _ in 0..64 {
                    match rx.try_recv() {
                        Ok(ev) => handle(&mut proxy, now, ev, &services),
                        Err(_) => break,
                    }
                }
            }
            _ = sleep_until(deadline) => {
                proxy.handle_timeout(std::time::Instant::now());
            }
        }
        while let Some(task) = proxy.poll_task() {
            let (tx, services) = (tx.clone(), services.clone());
            tokio::spawn(async move {
                let Some(services) = services else { return };
                if let Some(result) = run_task(&services, task).await {
                    let _ = tx.send(Event::TaskDone(result));
                }
            });
        }
        let accounting = services.as_ref().and_then(|s| s.accounting.as_ref());
        while let Some(ev) = proxy.poll_dialog_event() {
            tracing::debug!(call_id = %ev.call_id, kind = ?ev.kind, "dialog");
            if let Some(a) = accounting {
                a.dialog_event(&ev);
            }
        }
        while let Some(send) = proxy.poll_send() {
            if let Err(e) = transports.send(send.dest, send.data) {
                tracing::debug!(error = %e, "send failed");
            }
        }
    }
}

fn handle(proxy: &mut Proxy, now: std::time::Instant, ev: Event, services: &Option<Arc<Services>>) {
    match ev {
        Event::Message(source, msg) => proxy.handle_message(now, source, *msg),
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
        Event::TaskDone(result) => proxy.task_done(now, result),
        Event::MediaTearDown(call_id) => proxy.media_teardown(now, &call_id),
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
