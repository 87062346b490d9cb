//! Typed ng requests, each turned into the bencode dictionary rtpengine expects.

use std::collections::BTreeMap;
use std::fmt;

use bt_bencode::{ByteString, Value};

use crate::wire::Dict;

/// An ng command name. Unknown commands (rtpengine keeps adding them) go in [`Command::Other`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Command {
    /// `ping`
    Ping,
    /// `offer`
    Offer,
    /// `answer`
    Answer,
    /// `delete`
    Delete,
    /// `query`
    Query,
    /// `list`
    List,
    /// `statistics`
    Statistics,
    /// Any other command, spelled as on the wire (e.g. `start recording`).
    Other(String),
}

impl Command {
    /// The wire spelling.
    pub fn as_str(&self) -> &str {
        match self {
            Command::Ping => "ping",
            Command::Offer => "offer",
            Command::Answer => "answer",
            Command::Delete => "delete",
            Command::Query => "query",
            Command::List => "list",
            Command::Statistics => "statistics",
            Command::Other(s) => s,
        }
    }

    /// Parses a wire spelling.
    pub fn parse(s: &str) -> Self {
        match s {
            "ping" => Command::Ping,
            "offer" => Command::Offer,
            "answer" => Command::Answer,
            "delete" => Command::Delete,
            "query" => Command::Query,
            "list" => Command::List,
            "statistics" => Command::Statistics,
            other => Command::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A fully built request: the command, the call it belongs to (if any) and its dictionary.
///
/// Built from the typed requests below, or with [`Request::generic`] for anything else.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    command: Command,
    dict: Dict,
}

impl Request {
    /// A request for any command with arbitrary keys. `command` is added to `dict`.
    pub fn generic(command: Command, mut dict: Dict) -> Self {
        dict.insert("command".into(), bstr(command.as_str()));
        Self { command, dict }
    }

    /// Builds a request from a command name and key/value pairs.
    pub fn with_keys<I, K>(command: Command, keys: I) -> Self
    where
        I: IntoIterator<Item = (K, Value)>,
        K: Into<ByteString>,
    {
        Self::generic(
            command,
            keys.into_iter().map(|(k, v)| (k.into(), v)).collect(),
        )
    }

    /// The command.
    pub fn command(&self) -> &Command {
        &self.command
    }

    /// The dictionary as it will be encoded (including `command`).
    pub fn dict(&self) -> &Dict {
        &self.dict
    }

    /// A string value of the dictionary, if present and UTF-8.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.dict.get(key.as_bytes()).and_then(Value::as_str)
    }

    /// The `call-id`, if any.
    pub fn call_id(&self) -> Option<&str> {
        self.get_str("call-id")
    }

    /// Whether this request, if it succeeds, ends the whole call on the instance
    /// (a `delete` without `to-tag`/`via-branch`).
    pub(crate) fn ends_call(&self) -> bool {
        self.command == Command::Delete
            && self.get_str("to-tag").is_none()
            && self.get_str("via-branch").is_none()
    }

    /// Encodes the dictionary (without cookie).
    pub fn encode_body(&self) -> Result<Vec<u8>, bt_bencode::Error> {
        crate::wire::encode_body(&self.dict)
    }
}

/// `ping`.
pub fn ping() -> Request {
    Request::generic(Command::Ping, Dict::new())
}

/// `list` with an optional `limit` (rtpengine's default is 32).
pub fn list(limit: Option<u64>) -> Request {
    let mut d = Dict::new();
    if let Some(l) = limit {
        d.insert("limit".into(), Value::from(l));
    }
    Request::generic(Command::List, d)
}

/// `statistics`.
pub fn statistics() -> Request {
    Request::generic(Command::Statistics, Dict::new())
}

/// Byte-string value helper.
pub fn bstr(s: impl Into<ByteString>) -> Value {
    Value::ByteStr(s.into())
}

/// List-of-strings value helper.
pub fn str_list<S: AsRef<str>>(items: &[S]) -> Value {
    Value::List(items.iter().map(|s| bstr(s.as_ref())).collect())
}

/// Codec manipulation (`codec` dictionary); every field is a list of codec names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CodecOptions {
    /// `strip`: remove these codecs.
    pub strip: Vec<String>,
    /// `mask`: hide from the other side but still accept.
    pub mask: Vec<String>,
    /// `transcode`: add, transcoding when needed.
    pub transcode: Vec<String>,
    /// `offer`: re-add stripped codecs.
    pub offer: Vec<String>,
    /// `except`: exceptions to `all` in strip/mask.
    pub except: Vec<String>,
    /// `accept`: accept codecs from the answer when transcoding.
    pub accept: Vec<String>,
    /// `consume`: like mask, and consume the media.
    pub consume: Vec<String>,
}

impl CodecOptions {
    fn is_empty(&self) -> bool {
        self.strip.is_empty()
            && self.mask.is_empty()
            && self.transcode.is_empty()
            && self.offer.is_empty()
            && self.except.is_empty()
            && self.accept.is_empty()
            && self.consume.is_empty()
    }

    fn to_value(&self) -> Value {
        let mut d = Dict::new();
        for (k, v) in [
            ("strip", &self.strip),
            ("mask", &self.mask),
            ("transcode", &self.transcode),
            ("offer", &self.offer),
            ("except", &self.except),
            ("accept", &self.accept),
            ("consume", &self.consume),
        ] {
            if !v.is_empty() {
                d.insert(k.into(), str_list(v));
            }
        }
        Value::Dict(d)
    }
}

/// Operations for one section of `sdp-attr` (`global`, `audio`, `video`, ...).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SdpAttrOps {
    /// `add`: attribute lines to add (without `a=`).
    pub add: Vec<String>,
    /// `remove`: attribute names to remove.
    pub remove: Vec<String>,
    /// `substitute`: `(from, to)` pairs.
    pub substitute: Vec<(String, String)>,
}

impl SdpAttrOps {
    fn to_value(&self) -> Value {
        let mut d = Dict::new();
        if !self.add.is_empty() {
            d.insert("add".into(), str_list(&self.add));
        }
        if !self.remove.is_empty() {
            d.insert("remove".into(), str_list(&self.remove));
        }
        if !self.substitute.is_empty() {
            let pairs = self
                .substitute
                .iter()
                .map(|(a, b)| Value::List(vec![bstr(a.as_str()), bstr(b.as_str())]))
                .collect();
            d.insert("substitute".into(), Value::List(pairs));
        }
        Value::Dict(d)
    }
}

/// An `offer` or `answer`: every key the gateway sets, plus [`MediaRequest::extra`].
///
/// Always sends `supports: ["load limit"]`, so an overloaded instance says so instead of
/// failing the call, and the client can fail over.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MediaRequest {
    /// `sdp`: the SDP body (bytes, not necessarily UTF-8).
    pub sdp: Vec<u8>,
    /// `call-id`.
    pub call_id: String,
    /// `from-tag`.
    pub from_tag: String,
    /// `to-tag` (mandatory for `answer`).
    pub to_tag: Option<String>,
    /// `via-branch`.
    pub via_branch: Option<String>,
    /// `label`.
    pub label: Option<String>,
    /// `flags` (e.g. `trust-address`, `generate-mid`, `WebRTC`).
    pub flags: Vec<String>,
    /// `replace` (e.g. `origin`; never `session-connection`, dropped upstream).
    pub replace: Vec<String>,
    /// `ICE` (`remove`, `force`, ...).
    pub ice: Option<String>,
    /// `DTLS` (`off`, `passive`, `active`).
    pub dtls: Option<String>,
    /// `DTLS-reverse` (accepted by rtpengine although undocumented).
    pub dtls_reverse: Option<String>,
    /// `SDES` (e.g. `off`).
    pub sdes: Vec<String>,
    /// `rtcp-mux` (`offer`, `require`, `demux`, `accept`, `reject`).
    pub rtcp_mux: Vec<String>,
    /// `transport-protocol` (e.g. `RTP/AVP`, `UDP/TLS/RTP/SAVPF`).
    pub transport_protocol: Option<String>,
    /// `codec`.
    pub codec: CodecOptions,
    /// `sdp-attr`: section name (`global`, `audio`, ...) to operations.
    pub sdp_attr: BTreeMap<String, SdpAttrOps>,
    /// `received-from`: e.g. `["IP4", "203.0.113.5"]`.
    pub received_from: Vec<String>,
    /// `direction`: e.g. `["internal", "external"]`.
    pub direction: Vec<String>,
    /// `record call`: `yes`/`no`.
    pub record_call: Option<bool>,
    /// Any other key, encoded as given; a key here overrides the typed field of the same name.
    pub extra: BTreeMap<String, Value>,
}

impl MediaRequest {
    /// A request with the three mandatory keys set.
    pub fn new(
        sdp: impl Into<Vec<u8>>,
        call_id: impl Into<String>,
        from_tag: impl Into<String>,
    ) -> Self {
        Self {
            sdp: sdp.into(),
            call_id: call_id.into(),
            from_tag: from_tag.into(),
            ..Self::default()
        }
    }

    /// The dictionary without `command`.
    pub fn to_dict(&self) -> Dict {
        let mut d = Dict::new();
        d.insert("supports".into(), str_list(&["load limit"]));
        d.insert(
            "sdp".into(),
            Value::ByteStr(ByteString::from(self.sdp.clone())),
        );
        d.insert("call-id".into(), bstr(self.call_id.as_str()));
        d.insert("from-tag".into(), bstr(self.from_tag.as_str()));
        let opt_strs = [
            ("to-tag", &self.to_tag),
            ("via-branch", &self.via_branch),
            ("label", &self.label),
            ("ICE", &self.ice),
            ("DTLS", &self.dtls),
            ("DTLS-reverse", &self.dtls_reverse),
            ("transport-protocol", &self.transport_protocol),
        ];
        for (k, v) in opt_strs {
            if let Some(v) = v {
                d.insert(k.into(), bstr(v.as_str()));
            }
        }
        let lists = [
            ("flags", &self.flags),
            ("replace", &self.replace),
            ("SDES", &self.sdes),
            ("rtcp-mux", &self.rtcp_mux),
            ("received-from", &self.received_from),
            ("direction", &self.direction),
        ];
        for (k, v) in lists {
            if !v.is_empty() {
                d.insert(k.into(), str_list(v));
            }
        }
        if !self.codec.is_empty() {
            d.insert("codec".into(), self.codec.to_value());
        }
        if !self.sdp_attr.is_empty() {
            let attr = self
                .sdp_attr
                .iter()
                .map(|(k, v)| (ByteString::from(k.as_str()), v.to_value()))
                .collect();
            d.insert("sdp-attr".into(), Value::Dict(attr));
        }
        if let Some(rec) = self.record_call {
            d.insert("record call".into(), bstr(if rec { "yes" } else { "no" }));
        }
        for (k, v) in &self.extra {
            d.insert(k.as_str().into(), v.clone());
        }
        d
    }

    /// As an `offer`.
    pub fn offer(&self) -> Request {
        Request::generic(Command::Offer, self.to_dict())
    }

    /// As an `answer` (the caller sets `to_tag`).
    pub fn answer(&self) -> Request {
        Request::generic(Command::Answer, self.to_dict())
    }
}

/// Identifies a call (and optionally one side of it) for `delete` and `query`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallRef {
    /// `call-id`.
    pub call_id: String,
    /// `from-tag`.
    pub from_tag: Option<String>,
    /// `to-tag`.
    pub to_tag: Option<String>,
    /// `via-branch`.
    pub via_branch: Option<String>,
    /// `flags` (for delete: `fatal`, `fast`, ...).
    pub flags: Vec<String>,
    /// `delete delay` in seconds (delete only).
    pub delete_delay: Option<u64>,
    /// Any other key.
    pub extra: BTreeMap<String, Value>,
}

impl CallRef {
    /// A reference to a whole call.
    pub fn new(call_id: impl Into<String>) -> Self {
        Self {
            call_id: call_id.into(),
            ..Self::default()
        }
    }

    /// Sets `from-tag`.
    pub fn from_tag(mut self, tag: impl Into<String>) -> Self {
        self.from_tag = Some(tag.into());
        self
    }

    fn to_dict(&self) -> Dict {
        let mut d = Dict::new();
        d.insert("supports".into(), str_list(&["load limit"]));
        d.insert("call-id".into(), bstr(self.call_id.as_str()));
        for (k, v) in [
            ("from-tag", &self.from_tag),
            ("to-tag", &self.to_tag),
            ("via-branch", &self.via_branch),
        ] {
            if let Some(v) = v {
                d.insert(k.into(), bstr(v.as_str()));
            }
        }
        if !self.flags.is_empty() {
            d.insert("flags".into(), str_list(&self.flags));
        }
        if let Some(delay) = self.delete_delay {
            d.insert("delete delay".into(), Value::from(delay));
        }
        for (k, v) in &self.extra {
            d.insert(k.as_str().into(), v.clone());
        }
        d
    }

    /// As a `delete`.
    pub fn delete(&self) -> Request {
        Request::generic(Command::Delete, self.to_dict())
    }

    /// As a `query`.
    pub fn query(&self) -> Request {
        Request::generic(Command::Query, self.to_dict())
    }
}
