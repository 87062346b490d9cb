//! Why media handling failed, and the SIP answer each failure calls for.

use ngclient::NgError;
use rtcgate_sdp::SdpError;

/// A media failure. [`MediaError::sip_status`] says how the proxy answers the request
/// whose SDP could not be handled (for a response, the proxy answers the original request
/// the same way, or tears the call down).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MediaError {
    /// The SDP is malformed or over the limits: **488** with `Warning: 399 <host> "<text>"`
    /// ([`MediaError::warning_text`]).
    #[error("bad SDP: {0}")]
    BadSdp(#[from] SdpError),
    /// rtpengine did not answer in time, every instance is down or at its load limit, or the
    /// offer deadline passed: **503** with `Retry-After` ([`MediaError::retry_after`]).
    #[error("rtpengine unavailable: {reason}")]
    Unavailable {
        /// What happened (for logs).
        reason: String,
        /// Seconds for `Retry-After`.
        retry_after: u32,
    },
    /// rtpengine refused the SDP (`result: error`). rtpengine's refusals are about the
    /// media description (no usable codec, unsupported protocol, bad crypto): **488** with
    /// the reason as warning text.
    #[error("rtpengine refused the media: {reason}")]
    Refused {
        /// `error-reason`, sanitised for a Warning header.
        reason: String,
    },
    /// The call has already ended (BYE, CANCEL, failure): late messages must not re-create
    /// it in rtpengine. **481** for requests; drop the body of responses.
    #[error("call {call_id} has ended")]
    CallEnded {
        /// The Call-ID.
        call_id: String,
    },
    /// An SDP arrived where no offer/answer exchange allows it (an ACK with SDP when no
    /// offer was made in the 2xx, a response with SDP but no To tag): **488** (request)
    /// or drop the body (response).
    #[error("unexpected SDP: {0}")]
    Unexpected(String),
    /// Internal failure (ng client stopped, request could not be encoded): **500**.
    #[error("media internal error: {0}")]
    Internal(String),
}

impl MediaError {
    /// The SIP status code the proxy should answer with.
    pub fn sip_status(&self) -> u16 {
        match self {
            MediaError::BadSdp(_) | MediaError::Refused { .. } | MediaError::Unexpected(_) => 488,
            MediaError::Unavailable { .. } => 503,
            MediaError::CallEnded { .. } => 481,
            MediaError::Internal(_) => 500,
        }
    }

    /// Text for a `Warning: 399 <host> "<text>"` header (printable ASCII, no quotes), when
    /// the answer should carry one.
    pub fn warning_text(&self) -> Option<String> {
        match self {
            MediaError::BadSdp(e) => Some(e.warning_text()),
            MediaError::Refused { reason } => Some(sanitize(&format!("media refused: {reason}"))),
            MediaError::Unexpected(r) => Some(sanitize(r)),
            _ => None,
        }
    }

    /// Seconds for a `Retry-After` header, when the answer should carry one.
    pub fn retry_after(&self) -> Option<u32> {
        match self {
            MediaError::Unavailable { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// Maps an ng client error.
    pub(crate) fn from_ng(e: NgError, retry_after: u32) -> Self {
        match e {
            NgError::Rtpengine { reason } => MediaError::Refused {
                reason: sanitize(&reason),
            },
            NgError::LoadLimit { .. }
            | NgError::Timeout { .. }
            | NgError::NoInstances
            | NgError::Backpressure(_)
            | NgError::Decode { .. }
            | NgError::UnexpectedReply(_)
            | NgError::UnknownInstance(_)
            | NgError::Io(_) => MediaError::Unavailable {
                reason: e.to_string(),
                retry_after,
            },
            NgError::Encode(_) | NgError::Closed => MediaError::Internal(e.to_string()),
        }
    }
}

/// Printable ASCII without `"` and `\`, at most 120 characters.
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if (c.is_ascii_graphic() || c == ' ') && c != '"' && c != '\\' {
                c
            } else {
                '?'
            }
        })
        .take(120)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_to_sip() {
        let e = MediaError::BadSdp(SdpError::Empty);
        assert_eq!(e.sip_status(), 488);
        assert_eq!(e.warning_text().as_deref(), Some("empty SDP body"));
        let e = MediaError::from_ng(
            NgError::Timeout {
                instance: "127.0.0.1:1".parse().unwrap(),
                tries: 3,
            },
            7,
        );
        assert_eq!((e.sip_status(), e.retry_after()), (503, Some(7)));
        let e = MediaError::from_ng(
            NgError::Rtpengine {
                reason: "no \"codec\"\r\n".into(),
            },
            7,
        );
        assert_eq!(e.sip_status(), 488);
        assert_eq!(
            e.warning_text().as_deref(),
            Some("media refused: no ?codec???")
        );
        assert_eq!(MediaError::from_ng(NgError::Closed, 1).sip_status(), 500);
    }
}
