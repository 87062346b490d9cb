//! The minimal SIP behaviour before the proxy core: answer OPTIONS addressed
//! to rtcgate itself with 200 (the keepalive/health answer that stays), and
//! every other request with 501.

use std::sync::Arc;

use bytes::Bytes;

use crate::config::Config;
use crate::rsip;
use crate::sip::{self, Checked};
use crate::transport::{Handler, Source, Transports};

/// Methods rtcgate understands, for `Allow`.
pub const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, INFO, UPDATE, MESSAGE, NOTIFY, SUBSCRIBE, REFER, PRACK";

/// Answers requests without proxying anything.
pub struct Responder {
    transports: Transports,
    config: Arc<Config>,
}

impl Responder {
    /// A responder sending through `transports`.
    pub fn new(transports: Transports, config: Arc<Config>) -> Self {
        Self { transports, config }
    }

    /// Whether a Request-URI names rtcgate itself (no user part, our host).
    pub fn addressed_to_us(config: &Config, uri: &rsip::Uri, local_hosts: &[String]) -> bool {
        if uri.auth.is_some() {
            return false;
        }
        let host = uri.host_with_port.host.to_string();
        let host = host.trim_start_matches('[').trim_end_matches(']');
        config
            .general
            .domains
            .iter()
            .chain(local_hosts.iter())
            .any(|d| {
                d.trim_start_matches('[')
                    .trim_end_matches(']')
                    .eq_ignore_ascii_case(host)
            })
    }
}

impl Handler for Responder {
    fn on_message(&self, source: Source, msg: Checked) {
        let rsip::SipMessage::Request(req) = msg.msg else {
            return;
        };
        let server = &self.config.general.server_header;
        let mut local_hosts = Vec::new();
        if let Source::Udp { local, .. } = source {
            local_hosts.push(local.ip().to_string());
        }
        let (code, reason) = match req.method {
            rsip::Method::Ack => return,
            rsip::Method::Options
                if Self::addressed_to_us(&self.config, &req.uri, &local_hosts) =>
            {
                (200, None)
            }
            _ => (501, Some("Not Implemented")),
        };
        let mut resp = sip::response_to(&req, code, Some(&sip::new_tag()), server);
        if code == 200 {
            resp.headers
                .push(rsip::Header::Allow(rsip::headers::Allow::new(ALLOW)));
            resp.headers
                .push(rsip::Header::Accept(rsip::headers::Accept::new(
                    "application/sdp",
                )));
            resp.headers
                .push(rsip::Header::Supported(rsip::headers::Supported::new(
                    "path, outbound",
                )));
        }
        let bytes = Bytes::from(sip::encode_response(&resp, reason));
        if let Err(e) = self.transports.send(source.reply_to(), bytes) {
            tracing::debug!(error = %e, "could not send response");
        }
    }
}
