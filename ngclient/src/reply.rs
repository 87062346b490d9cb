//! Typed views of ng replies. The raw dictionary is always kept.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use bt_bencode::Value;

use crate::error::{DecodeError, NgError};
use crate::wire::Dict;

/// The `result` of a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyResult {
    /// `ok`
    Ok,
    /// `pong` (reply to `ping`)
    Pong,
    /// `error`, with its `error-reason`.
    Error {
        /// `error-reason` (lossily decoded; empty if missing).
        reason: String,
    },
    /// `load limit`, with its optional `message`.
    LoadLimit {
        /// `message`, if any.
        message: Option<String>,
    },
    /// Any other result string.
    Other(String),
}

/// A decoded ng reply.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// The `result`.
    pub result: ReplyResult,
    /// The `warning`, if any.
    pub warning: Option<String>,
    /// The rewritten `sdp`, if any (bytes as received).
    pub sdp: Option<Vec<u8>>,
    /// The whole dictionary as received.
    pub raw: Dict,
}

impl Reply {
    /// Interprets a decoded dictionary.
    pub fn from_dict(raw: Dict) -> Result<Self, DecodeError> {
        let result = raw
            .get(&b"result"[..])
            .and_then(Value::as_byte_str)
            .ok_or(DecodeError::MissingResult)?;
        let result = match result.as_slice() {
            b"ok" => ReplyResult::Ok,
            b"pong" => ReplyResult::Pong,
            b"error" => ReplyResult::Error {
                reason: get_string(&raw, "error-reason").unwrap_or_default(),
            },
            b"load limit" => ReplyResult::LoadLimit {
                message: get_string(&raw, "message"),
            },
            other => ReplyResult::Other(String::from_utf8_lossy(other).into_owned()),
        };
        let warning = get_string(&raw, "warning");
        let sdp = raw
            .get(&b"sdp"[..])
            .and_then(Value::as_byte_str)
            .map(|b| b.to_vec());
        Ok(Self {
            result,
            warning,
            sdp,
            raw,
        })
    }

    /// `Ok(self)` for `ok`/`pong`/other results; the typed error for `error` and `load limit`.
    pub fn into_result(self) -> Result<Self, NgError> {
        match self.result {
            ReplyResult::Error { reason } => Err(NgError::Rtpengine { reason }),
            ReplyResult::LoadLimit { message } => Err(NgError::LoadLimit { message }),
            _ => Ok(self),
        }
    }

    /// A raw value of the reply.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.raw.get(key.as_bytes())
    }

    /// The call statistics of a `query` or `delete` reply.
    pub fn call_stats(&self) -> CallStats {
        CallStats::from_dict(&self.raw)
    }

    /// The `calls` of a `list` reply (call-ids, lossily decoded).
    pub fn calls(&self) -> Vec<String> {
        self.get("calls")
            .and_then(Value::as_list)
            .map(|l| l.iter().filter_map(value_string).collect())
            .unwrap_or_default()
    }

    /// The `statistics` dictionary of a `statistics` reply.
    pub fn statistics(&self) -> Option<&Dict> {
        self.get("statistics").and_then(Value::as_dict)
    }

    /// A number from `statistics` → `section` → `key` (e.g. `currentstatistics`, `sessionsown`).
    pub fn statistic(&self, section: &str, key: &str) -> Option<u64> {
        self.statistics()
            .and_then(|s| s.get(section.as_bytes()))
            .and_then(|s| s.get(key))
            .and_then(value_u64)
    }
}

/// Packet/byte/error counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// `packets`
    pub packets: u64,
    /// `bytes`
    pub bytes: u64,
    /// `errors`
    pub errors: u64,
}

impl Counters {
    fn from_value(v: Option<&Value>) -> Self {
        let get = |k: &str| v.and_then(|v| v.get(k)).and_then(value_u64).unwrap_or(0);
        Self {
            packets: get("packets"),
            bytes: get("bytes"),
            errors: get("errors"),
        }
    }
}

/// One stream (RTP or RTCP) of a media section.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamStats {
    /// `local port` (0 for an rtcp-mux fallback stream).
    pub local_port: u16,
    /// `local address`.
    pub local_address: Option<String>,
    /// `endpoint` (the learned peer address).
    pub endpoint: Option<SocketAddr>,
    /// `advertised endpoint` (the address from the SDP).
    pub advertised_endpoint: Option<SocketAddr>,
    /// `crypto suite`.
    pub crypto_suite: Option<String>,
    /// `last packet` (Unix seconds).
    pub last_packet: Option<u64>,
    /// `flags`.
    pub flags: Vec<String>,
    /// `stats`.
    pub stats: Counters,
}

/// One media section (`m=` line) of a tag.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MediaStats {
    /// `index` (1-based).
    pub index: u64,
    /// `type` (e.g. `audio`).
    pub media_type: Option<String>,
    /// `protocol` (e.g. `RTP/AVP`).
    pub protocol: Option<String>,
    /// `codec`, if rtpengine reported one.
    pub codec: Option<String>,
    /// `streams`.
    pub streams: Vec<StreamStats>,
    /// `flags`.
    pub flags: Vec<String>,
}

/// One tag (monologue: one party of the call).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TagStats {
    /// `tag`.
    pub tag: String,
    /// `created` (Unix seconds).
    pub created: Option<u64>,
    /// `medias`.
    pub medias: Vec<MediaStats>,
}

/// RTP and RTCP `totals`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// `RTP`
    pub rtp: Counters,
    /// `RTCP`
    pub rtcp: Counters,
}

/// Statistics of one call as returned by `query` and `delete`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallStats {
    /// `created` (Unix seconds).
    pub created: Option<u64>,
    /// `last signal` (Unix seconds).
    pub last_signal: Option<u64>,
    /// `tags`, by tag name.
    pub tags: BTreeMap<String, TagStats>,
    /// `totals`.
    pub totals: Totals,
}

impl CallStats {
    /// Extracts what it can; missing or mistyped fields become defaults.
    pub fn from_dict(d: &Dict) -> Self {
        let tags = d
            .get(&b"tags"[..])
            .and_then(Value::as_dict)
            .map(|tags| {
                tags.iter()
                    .map(|(k, v)| {
                        let name = String::from_utf8_lossy(k).into_owned();
                        (name.clone(), tag_stats(name, v))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let totals = d.get(&b"totals"[..]);
        Self {
            created: d.get(&b"created"[..]).and_then(value_u64),
            last_signal: d.get(&b"last signal"[..]).and_then(value_u64),
            tags,
            totals: Totals {
                rtp: Counters::from_value(totals.and_then(|t| t.get("RTP"))),
                rtcp: Counters::from_value(totals.and_then(|t| t.get("RTCP"))),
            },
        }
    }

    /// Every stream of every tag, with its tag name.
    pub fn streams(&self) -> impl Iterator<Item = (&str, &StreamStats)> {
        self.tags.iter().flat_map(|(name, t)| {
            t.medias
                .iter()
                .flat_map(move |m| m.streams.iter().map(move |s| (name.as_str(), s)))
        })
    }
}

fn tag_stats(name: String, v: &Value) -> TagStats {
    TagStats {
        tag: v.get("tag").and_then(value_string).unwrap_or(name),
        created: v.get("created").and_then(value_u64),
        medias: list_of(v.get("medias"), media_stats),
    }
}

fn media_stats(v: &Value) -> MediaStats {
    MediaStats {
        index: v.get("index").and_then(value_u64).unwrap_or(0),
        media_type: v.get("type").and_then(value_string),
        protocol: v.get("protocol").and_then(value_string),
        codec: v.get("codec").and_then(value_string),
        streams: list_of(v.get("streams"), stream_stats),
        flags: list_of(v.get("flags"), |f| value_string(f).unwrap_or_default()),
    }
}

fn stream_stats(v: &Value) -> StreamStats {
    StreamStats {
        local_port: v
            .get("local port")
            .and_then(value_u64)
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or(0),
        local_address: v.get("local address").and_then(value_string),
        endpoint: v.get("endpoint").and_then(endpoint),
        advertised_endpoint: v.get("advertised endpoint").and_then(endpoint),
        crypto_suite: v.get("crypto suite").and_then(value_string),
        last_packet: v.get("last packet").and_then(value_u64),
        flags: list_of(v.get("flags"), |f| value_string(f).unwrap_or_default()),
        stats: Counters::from_value(v.get("stats")),
    }
}

fn endpoint(v: &Value) -> Option<SocketAddr> {
    let ip = v.get("address").and_then(Value::as_str)?.parse().ok()?;
    let port = u16::try_from(v.get("port").and_then(value_u64)?).ok()?;
    Some(SocketAddr::new(ip, port))
}

fn list_of<T>(v: Option<&Value>, f: impl Fn(&Value) -> T) -> Vec<T> {
    v.and_then(Value::as_list)
        .map(|l| l.iter().map(f).collect())
        .unwrap_or_default()
}

/// A non-negative integer value.
pub fn value_u64(v: &Value) -> Option<u64> {
    v.as_u64()
        .or_else(|| v.as_i64().and_then(|i| u64::try_from(i).ok()))
}

/// A byte-string value, lossily decoded as UTF-8.
pub fn value_string(v: &Value) -> Option<String> {
    v.as_byte_str()
        .map(|b| String::from_utf8_lossy(b).into_owned())
}

fn get_string(d: &Dict, key: &str) -> Option<String> {
    d.get(key.as_bytes()).and_then(value_string)
}
