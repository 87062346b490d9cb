//! The tokio shell around the sans-IO proxy: one task owns the [`Proxy`],
//! fed by the transports through a channel, waking for timers.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::Proxy;
use crate::sip::Checked;
use crate::transport::{FlowId, Handler, Source, Transports};

enum Event {
    Message(Source, Box<Checked>),
    FlowClosed(FlowId),
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
pub fn spawn(proxy: Proxy, transports: Transports) -> Arc<ProxyHandle> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(run(proxy, transports, rx));
    Arc::new(ProxyHandle { tx })
}

async fn run(mut proxy: Proxy, transports: Transports, mut rx: mpsc::UnboundedReceiver<Event>) {
    loop {
        let deadline = proxy.poll_timeout().map(Instant::from_std);
        tokio::select! {
            ev = rx.recv() => {
                let Some(ev) = ev else { break };
                let now = std::time::Instant::now();
                handle(&mut proxy, now, ev);
                // Take what is already queued before flushing.
                for _ in 0..64 {
                    match rx.try_recv() {
                        Ok(ev) => handle(&mut proxy, now, ev),
                        Err(_) => break,
                    }
                }
            }
            _ = sleep_until(deadline) => {
                proxy.handle_timeout(std::time::Instant::now());
            }
        }
        while let Some(send) = proxy.poll_send() {
            if let Err(e) = transports.send(send.dest, send.data) {
                tracing::debug!(error = %e, "send failed");
            }
        }
    }
}

fn handle(proxy: &mut Proxy, now: std::time::Instant, ev: Event) {
    match ev {
        Event::Message(source, msg) => proxy.handle_message(now, source, *msg),
        Event::FlowClosed(flow) => proxy.flow_closed(now, flow),
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
