//! Why an SDP body was refused. Every variant renders as a short, ASCII-only reason fit
//! for a SIP `Warning: 399 <host> "<reason>"` header on the 488 the gateway answers.

/// An SDP body that the gateway refuses to process.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    /// The body is empty.
    #[error("empty SDP body")]
    Empty,
    /// The body exceeds the size limit.
    #[error("SDP too large: {size} bytes, limit {max}")]
    TooLarge {
        /// Body size in bytes.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The body is not valid UTF-8.
    #[error("SDP is not valid UTF-8 (byte offset {offset})")]
    NotUtf8 {
        /// Offset of the first invalid byte.
        offset: usize,
    },
    /// Too many lines.
    #[error("SDP has too many lines (limit {max})")]
    TooManyLines {
        /// The limit.
        max: usize,
    },
    /// One line is too long.
    #[error("SDP line {line} too long: {len} bytes, limit {max}")]
    LineTooLong {
        /// 1-based line number.
        line: usize,
        /// Length of that line.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Too many `m=` sections.
    #[error("SDP has {count} media sections, limit {max}")]
    TooManyMedia {
        /// Number of `m=` lines.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// The SDP parser rejected the body (missing `t=`, bad `o=`, ...).
    #[error("malformed SDP{}: {reason}", line.map(|l| format!(" at line {l}")).unwrap_or_default())]
    Malformed {
        /// 1-based line number, when the parser gave one.
        line: Option<usize>,
        /// Parser message, sanitised to printable ASCII and shortened.
        reason: String,
    },
}

impl SdpError {
    /// The reason as it may appear inside the quoted text of a SIP `Warning` header:
    /// printable ASCII, no quotes or backslashes, at most 120 characters.
    pub fn warning_text(&self) -> String {
        sanitize(&self.to_string(), 120)
    }
}

/// Keeps printable ASCII except `"` and `\`, replaces the rest with `?`, and truncates.
pub(crate) fn sanitize(s: &str, max: usize) -> String {
    s.chars()
        .map(|c| {
            if (c.is_ascii_graphic() || c == ' ') && c != '"' && c != '\\' {
                c
            } else {
                '?'
            }
        })
        .take(max)
        .collect()
}
