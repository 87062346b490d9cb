//! Error types of the ng client.

use std::net::SocketAddr;

/// Why a received datagram could not be turned into a reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The datagram is larger than [`crate::wire::MAX_DATAGRAM`].
    #[error("datagram of {0} bytes exceeds the size cap")]
    TooLarge(usize),
    /// No space separates the cookie from the dictionary, or the cookie is empty.
    #[error("no cookie before the dictionary")]
    MissingCookie,
    /// The cookie is longer than [`crate::wire::MAX_COOKIE`].
    #[error("cookie too long")]
    CookieTooLong,
    /// Lists/dictionaries are nested deeper than [`crate::wire::MAX_DEPTH`].
    #[error("bencode nested deeper than {0}")]
    TooDeep(usize),
    /// The bytes after the cookie are not valid bencode.
    #[error("malformed bencode: {0}")]
    Malformed(String),
    /// The message is valid bencode but not a dictionary.
    #[error("message is not a dictionary")]
    NotADict,
    /// The dictionary has no `result` byte string.
    #[error("reply has no result")]
    MissingResult,
}

/// Why an ng command did not produce a usable reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NgError {
    /// rtpengine answered `result: error`.
    #[error("rtpengine error: {reason}")]
    Rtpengine {
        /// The `error-reason` text (lossily decoded).
        reason: String,
    },
    /// rtpengine answered `result: load limit` (only sent when we announce `supports: ["load limit"]`).
    #[error("rtpengine load limit reached{}", .message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    LoadLimit {
        /// The optional `message` text.
        message: Option<String>,
    },
    /// No reply after every try on every candidate instance.
    #[error("no reply from {instance} after {tries} tries")]
    Timeout {
        /// The last instance tried.
        instance: SocketAddr,
        /// How many datagrams were sent to it.
        tries: u32,
    },
    /// A reply matched our cookie but could not be decoded.
    #[error("undecodable reply from {instance}: {source}")]
    Decode {
        /// The instance that sent it.
        instance: SocketAddr,
        /// What was wrong.
        source: DecodeError,
    },
    /// The request could not be encoded (e.g. a key in `extra` shadows nothing but the value is not encodable).
    #[error("cannot encode request: {0}")]
    Encode(String),
    /// The explicit instance given does not exist in the configured set.
    #[error("unknown instance {0}")]
    UnknownInstance(usize),
    /// The set has no instances configured.
    #[error("no rtpengine instance configured")]
    NoInstances,
    /// Too many requests are in flight.
    #[error("too many requests in flight ({0})")]
    Backpressure(usize),
    /// The reply had an unexpected shape for this command.
    #[error("unexpected reply: {0}")]
    UnexpectedReply(String),
    /// Socket or runtime failure of the tokio shell.
    #[error("I/O: {0}")]
    Io(String),
    /// The client task has stopped.
    #[error("ng client stopped")]
    Closed,
}
