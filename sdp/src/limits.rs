//! Cheap checks on untrusted SDP before any parsing: size, encoding, line and section counts.

use crate::error::SdpError;

/// Bounds for untrusted SDP. The defaults fit any browser or PBX offer seen in practice
/// (a Chrome audio+video offer with candidates is about 5 KiB and 120 lines).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Maximum body size in bytes.
    pub max_bytes: usize,
    /// Maximum number of lines.
    pub max_lines: usize,
    /// Maximum length of one line in bytes (without its line ending).
    pub max_line_len: usize,
    /// Maximum number of `m=` sections.
    pub max_media: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_bytes: 16 * 1024,
            max_lines: 512,
            max_line_len: 1024,
            max_media: 16,
        }
    }
}

/// Applies `limits` and returns the body as text.
pub(crate) fn check<'a>(bytes: &'a [u8], limits: &Limits) -> Result<&'a str, SdpError> {
    if bytes.is_empty() {
        return Err(SdpError::Empty);
    }
    if bytes.len() > limits.max_bytes {
        return Err(SdpError::TooLarge {
            size: bytes.len(),
            max: limits.max_bytes,
        });
    }
    let text = std::str::from_utf8(bytes).map_err(|e| SdpError::NotUtf8 {
        offset: e.valid_up_to(),
    })?;
    let mut media = 0usize;
    for (i, line) in text.lines().enumerate() {
        if i >= limits.max_lines {
            return Err(SdpError::TooManyLines {
                max: limits.max_lines,
            });
        }
        if line.len() > limits.max_line_len {
            return Err(SdpError::LineTooLong {
                line: i + 1,
                len: line.len(),
                max: limits.max_line_len,
            });
        }
        if line.starts_with("m=") {
            media += 1;
        }
    }
    if media > limits.max_media {
        return Err(SdpError::TooManyMedia {
            count: media,
            max: limits.max_media,
        });
    }
    Ok(text)
}
