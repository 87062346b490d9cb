//! A routing span around any [`Router`]: the decision shows up as a child
//! of the call's span (and its log line carries the call's id).

use std::sync::Arc;

use super::TRACE_TARGET;
use crate::proxy::route::UriFacts;
use crate::proxy::routing::{Decision, Router};
use crate::rsip;
use crate::transport::{Destination, Source};

/// Wraps a router; each decision runs in a `route` span.
pub struct TracedRouter(pub Arc<dyn Router>);

impl Router for TracedRouter {
    fn route(&self, req: &rsip::Request, uri: &UriFacts, source: &Source) -> Decision {
        let span = tracing::debug_span!(
            target: TRACE_TARGET, "route",
            user = uri.user.as_deref().unwrap_or(""), decision = tracing::field::Empty
        );
        let _in = span.enter();
        let decision = self.0.route(req, uri, source);
        if !span.is_disabled() {
            let text = match &decision {
                Decision::Forward(targets) => targets
                    .iter()
                    .map(|t| match t.dest {
                        Destination::Udp(a) => a.to_string(),
                        Destination::Flow(f) => format!("flow {f}"),
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
                Decision::Serial(serial) => match serial.first.dest {
                    Destination::Udp(a) => format!("{a} (serial)"),
                    Destination::Flow(f) => format!("flow {f} (serial)"),
                },
                Decision::Reject(code, reason) => format!("{code} {reason}"),
            };
            span.record("decision", tracing::field::display(text));
        }
        decision
    }

    fn is_trusted(&self, ip: std::net::IpAddr) -> bool {
        self.0.is_trusted(ip)
    }
}
