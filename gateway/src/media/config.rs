//! The `[rtpengine]` section: instances, timing, SDP limits, codec policies.
//!
//! One section holds everything the media glue needs; the defaults work with one local
//! rtpengine listening for ng on `127.0.0.1:2223`.
//!
//! ```toml
//! [rtpengine]
//! instances = [{ address = "127.0.0.1:2223", weight = 1 }]
//! try_timeout_ms = 150
//! tries = 3
//! offer_deadline_ms = 1000
//! retry_after_secs = 5
//! ws_drop_grace_ms = 5000
//! trust_address = false
//!
//! [rtpengine.codec_policies.asterisk]
//! preference = ["PCMA", "PCMU"]
//! strip_video = true
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use ngclient::{ClientConfig, CoreConfig, InstanceConfig};
use rtcgate_sdp::{CodecPolicy, Limits};
use serde::Deserialize;

/// Name of the codec policy used when a leg names none.
pub const DEFAULT_POLICY: &str = "default";

/// The media section (mounted as `[rtpengine]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaConfig {
    /// Bridge media through rtpengine. Off: SDP passes untouched (only for
    /// tests of signalling alone; browsers and PBXes cannot talk then).
    pub enabled: bool,
    /// rtpengine instances (ng over UDP). New calls are spread by weight (rendezvous hashing
    /// on the Call-ID); a call stays on its instance.
    pub instances: Vec<RtpengineInstance>,
    /// Wait this long for an ng reply before resending, in milliseconds.
    pub try_timeout_ms: u64,
    /// Datagrams sent to one instance (first send + retransmissions) before failing over.
    pub tries: u32,
    /// Overall time allowed for one offer or answer (all tries, all instances), in
    /// milliseconds. Past it the SIP request is answered 503 with `Retry-After`.
    pub offer_deadline_ms: u64,
    /// Time allowed for one `delete`, in milliseconds (bounds shutdown and teardown).
    pub delete_deadline_ms: u64,
    /// Interval of health pings to every instance, in milliseconds (0: no pings).
    pub ping_interval_ms: u64,
    /// Consecutive timeouts after which an instance takes no new calls.
    pub down_after: u32,
    /// `Retry-After` value (seconds) on the 503 sent when rtpengine is unavailable.
    pub retry_after_secs: u32,
    /// How long after a browser's WebSocket drops mid-call before the call is torn down,
    /// in milliseconds (a reconnecting browser may re-INVITE within it).
    pub ws_drop_grace_ms: u64,
    /// A call still not answered this long after its first offer is deleted from
    /// rtpengine (safety net; INVITE transactions end long before), in seconds.
    pub setup_timeout_secs: u64,
    /// How long an ended Call-ID is remembered so that late messages (a 200 crossing a
    /// CANCEL, a re-INVITE after BYE) cannot re-create it in rtpengine, in seconds.
    pub ended_call_memory_secs: u64,
    /// Add the `trust-address` flag (use SDP addresses, not packet sources). Only for
    /// deployments where no peer is behind NAT.
    pub trust_address: bool,
    /// Bounds for untrusted SDP.
    pub sdp_limits: SdpLimits,
    /// Named codec policies (the routing configuration refers to them by name). The policy
    /// named `default` applies when a leg names none; it keeps every codec unless set.
    pub codec_policies: BTreeMap<String, CodecPolicyConfig>,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            instances: vec![RtpengineInstance::default()],
            try_timeout_ms: 150,
            tries: 3,
            offer_deadline_ms: 1000,
            delete_deadline_ms: 1000,
            ping_interval_ms: 1000,
            down_after: 1,
            retry_after_secs: 5,
            ws_drop_grace_ms: 5000,
            setup_timeout_secs: 300,
            ended_call_memory_secs: 32,
            trust_address: false,
            sdp_limits: SdpLimits::default(),
            codec_policies: BTreeMap::new(),
        }
    }
}

/// One rtpengine instance.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RtpengineInstance {
    /// Its ng control address (`--listen-ng`).
    pub address: SocketAddr,
    /// Relative share of new calls; 0 drains it (existing calls stay).
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

impl Default for RtpengineInstance {
    fn default() -> Self {
        Self {
            address: SocketAddr::from(([127, 0, 0, 1], 2223)),
            weight: 1,
        }
    }
}

/// Bounds for untrusted SDP (see [`rtcgate_sdp::Limits`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SdpLimits {
    /// Largest body in bytes.
    pub max_bytes: usize,
    /// Most lines.
    pub max_lines: usize,
    /// Longest line in bytes.
    pub max_line_len: usize,
    /// Most `m=` sections.
    pub max_media: usize,
}

impl Default for SdpLimits {
    fn default() -> Self {
        let l = Limits::default();
        Self {
            max_bytes: l.max_bytes,
            max_lines: l.max_lines,
            max_line_len: l.max_line_len,
            max_media: l.max_media,
        }
    }
}

impl From<SdpLimits> for Limits {
    fn from(l: SdpLimits) -> Self {
        Limits {
            max_bytes: l.max_bytes,
            max_lines: l.max_lines,
            max_line_len: l.max_line_len,
            max_media: l.max_media,
        }
    }
}

/// Codec handling for the legs toward one PBX set (see [`rtcgate_sdp::CodecPolicy`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CodecPolicyConfig {
    /// Remove video from offers sent to this leg.
    pub strip_video: bool,
    /// Keep RFC 4733 `telephone-event` (DTMF).
    pub keep_telephone_event: bool,
    /// Codecs to keep, in this order (e.g. `["PCMA", "PCMU"]`); empty keeps the offer's.
    pub preference: Vec<String>,
    /// Codecs hidden from this leg but usable for transcoding.
    pub mask: Vec<String>,
    /// Codecs removed outright.
    pub strip: Vec<String>,
    /// Codecs rtpengine adds by transcoding.
    pub transcode: Vec<String>,
}

impl Default for CodecPolicyConfig {
    fn default() -> Self {
        let p = CodecPolicy::default();
        Self {
            strip_video: p.strip_video,
            keep_telephone_event: p.keep_telephone_event,
            preference: p.preference,
            mask: p.mask,
            strip: p.strip,
            transcode: p.transcode,
        }
    }
}

impl From<&CodecPolicyConfig> for CodecPolicy {
    fn from(c: &CodecPolicyConfig) -> Self {
        CodecPolicy {
            strip_video: c.strip_video,
            keep_telephone_event: c.keep_telephone_event,
            preference: c.preference.clone(),
            mask: c.mask.clone(),
            strip: c.strip.clone(),
            transcode: c.transcode.clone(),
        }
    }
}

/// A refused value; `key` is relative to the section (prefix it with `rtpengine.`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid value for `{key}`: {message}")]
pub struct MediaConfigError {
    /// The key, e.g. `instances` or `codec_policies.asterisk.preference`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl MediaConfig {
    /// Checks values that deserialise but cannot work.
    pub fn validate(&self) -> Result<(), MediaConfigError> {
        let bad = |key: &str, message: &str| {
            Err(MediaConfigError {
                key: key.to_owned(),
                message: message.to_owned(),
            })
        };
        if self.instances.is_empty() {
            return bad("instances", "at least one rtpengine instance is needed");
        }
        if self.instances.iter().all(|i| i.weight == 0) {
            return bad("instances", "every instance has weight 0");
        }
        for (i, a) in self.instances.iter().enumerate() {
            if self
                .instances
                .iter()
                .skip(i + 1)
                .any(|b| b.address == a.address)
            {
                return bad("instances", &format!("{} listed twice", a.address));
            }
        }
        if self.tries == 0 {
            return bad("tries", "must be at least 1");
        }
        if self.try_timeout_ms == 0 {
            return bad("try_timeout_ms", "must be positive");
        }
        if self.offer_deadline_ms == 0 {
            return bad("offer_deadline_ms", "must be positive");
        }
        if self.delete_deadline_ms == 0 {
            return bad("delete_deadline_ms", "must be positive");
        }
        if self.sdp_limits.max_bytes == 0 || self.sdp_limits.max_media == 0 {
            return bad("sdp_limits", "limits must be positive");
        }
        for (name, p) in &self.codec_policies {
            if name.is_empty() {
                return bad("codec_policies", "empty policy name");
            }
            let lists = [
                ("preference", &p.preference),
                ("mask", &p.mask),
                ("strip", &p.strip),
                ("transcode", &p.transcode),
            ];
            for (k, list) in lists {
                if list.iter().any(|c| c.trim().is_empty() || c.contains(' ')) {
                    return bad(
                        &format!("codec_policies.{name}.{k}"),
                        "codec names must be non-empty and without spaces",
                    );
                }
            }
        }
        Ok(())
    }

    /// The ng client configuration.
    pub fn client_config(&self) -> ClientConfig {
        ClientConfig {
            core: CoreConfig {
                instances: self
                    .instances
                    .iter()
                    .map(|i| InstanceConfig {
                        addr: i.address,
                        weight: i.weight,
                    })
                    .collect(),
                try_timeout: Duration::from_millis(self.try_timeout_ms),
                tries: self.tries,
                ping_interval: (self.ping_interval_ms > 0)
                    .then(|| Duration::from_millis(self.ping_interval_ms)),
                down_after: self.down_after.max(1),
                ..CoreConfig::default()
            },
            bind: None,
        }
    }

    /// The codec policy of that name; `None` (or an unknown name, which validation of the
    /// routing section should have refused) gives the `default` entry or the built-in
    /// default.
    pub fn codec_policy(&self, name: Option<&str>) -> CodecPolicy {
        name.and_then(|n| self.codec_policies.get(n))
            .or_else(|| self.codec_policies.get(DEFAULT_POLICY))
            .map(CodecPolicy::from)
            .unwrap_or_default()
    }

    /// Whether a codec policy of that name is configured (for validating references).
    pub fn has_codec_policy(&self, name: &str) -> bool {
        name == DEFAULT_POLICY || self.codec_policies.contains_key(name)
    }

    /// [`MediaConfig::offer_deadline_ms`] as a duration.
    pub fn offer_deadline(&self) -> Duration {
        Duration::from_millis(self.offer_deadline_ms)
    }

    /// [`MediaConfig::delete_deadline_ms`] as a duration.
    pub fn delete_deadline(&self) -> Duration {
        Duration::from_millis(self.delete_deadline_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_point_at_local_rtpengine() {
        let c = MediaConfig::default();
        assert!(c.validate().is_ok());
        let cc = c.client_config();
        assert_eq!(
            cc.core.instances.first().map(|i| i.addr),
            Some(SocketAddr::from(([127, 0, 0, 1], 2223)))
        );
        assert!(c.offer_deadline() < Duration::from_secs(2));
    }

    #[test]
    fn parses_toml_and_refuses_unknown_keys() {
        let c: MediaConfig = toml::from_str(
            r#"
            instances = [{ address = "127.0.0.1:2300" }, { address = "127.0.0.2:2300", weight = 3 }]
            offer_deadline_ms = 800
            [codec_policies.asterisk]
            preference = ["PCMA", "PCMU"]
            "#,
        )
        .map_err(|e| e.to_string())
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.instances.len(), 2);
        assert_eq!(c.instances.get(1).map(|i| i.weight), Some(3));
        assert_eq!(c.offer_deadline_ms, 800);
        assert_eq!(
            c.codec_policy(Some("asterisk")).preference,
            vec!["PCMA".to_owned(), "PCMU".to_owned()]
        );
        assert!(c.codec_policy(None).preference.is_empty());
        assert!(toml::from_str::<MediaConfig>("instance = []").is_err());
        assert!(toml::from_str::<MediaConfig>("[codec_policies.x]\nfoo = 1").is_err());
    }

    #[test]
    fn validation_names_the_key() {
        let c = MediaConfig {
            instances: vec![],
            ..MediaConfig::default()
        };
        assert_eq!(c.validate().map_err(|e| e.key), Err("instances".into()));
        let mut c = MediaConfig::default();
        c.codec_policies.insert(
            "p".into(),
            CodecPolicyConfig {
                preference: vec![" ".into()],
                ..CodecPolicyConfig::default()
            },
        );
        assert_eq!(
            c.validate().map_err(|e| e.key),
            Err("codec_policies.p.preference".into())
        );
    }
}
