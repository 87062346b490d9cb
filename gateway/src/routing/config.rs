//! The `[routing]` part of the configuration: destination sets (PBXes and
//! trunks with their algorithm, failover and health-probe settings) and the
//! ordered rules that send a call's Request-URI user to a set or to the
//! location service.
//!
//! ```toml
//! [routing]
//! local = "first"            # registered users before the rules ("last", "rules")
//!
//! [[routing.sets]]
//! name = "freepbx"
//! algorithm = "priority"     # round_robin | weighted | hash_call_id
//! trusted_sources = ["127.0.0.1", "10.0.0.0/8"]
//! failover_timeout_ms = 4000
//! failover_codes = [408, "5xx"]
//! probe = { interval_ms = 5000, timeout_ms = 2000, down_after = 3, up_after = 2 }
//! destinations = [
//!   { address = "127.0.0.1:5080", priority = 0 },
//!   { address = "127.0.0.1:5082", priority = 1, codec_policy = "g711" },
//! ]
//!
//! [[routing.rules]]
//! range = "1000-1999"
//! set = "freepbx"
//!
//! [[routing.rules]]
//! e164 = true
//! set = "trunk"
//! strip = 1
//! add_prefix = "00"
//! ```

use std::net::SocketAddr;

use serde::Deserialize;

use super::cidr::Cidr;
use super::codes::CodeSet;

/// Why a routing configuration was refused: the dotted key and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid value for `{key}`: {message}")]
pub struct RoutingConfigError {
    /// The dotted key path, e.g. `routing.rules[2].set`.
    pub key: String,
    /// What is wrong with it.
    pub message: String,
}

impl RoutingConfigError {
    fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Where registered users (the location service) are consulted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LocalPosition {
    /// Before every rule: a registered user always wins (the default).
    #[default]
    First,
    /// After every rule, before the 404.
    Last,
    /// Only where a rule with `local = true` stands.
    Rules,
}

/// `[routing]`: sets and rules.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingConfig {
    /// Where the location lookup happens relative to the rules.
    pub local: LocalPosition,
    /// Named destination sets (`[[routing.sets]]`).
    pub sets: Vec<SetConfig>,
    /// Rules, first match wins (`[[routing.rules]]`).
    pub rules: Vec<RuleConfig>,
}

/// How a set orders its destinations for a call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// Ordered failover: lowest `priority` first, then the next.
    #[default]
    Priority,
    /// Each call starts at the next destination.
    RoundRobin,
    /// Smooth weighted round robin: calls spread in proportion to `weight`.
    Weighted,
    /// The Call-ID picks the first destination, stable across restarts.
    HashCallId,
}

/// The transport toward a destination (UDP only today).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// SIP over UDP.
    #[default]
    Udp,
}

/// One PBX or trunk address in a set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationConfig {
    /// IP address and port.
    pub address: SocketAddr,
    /// Share for `weighted` (positive).
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Order for `priority`: lower first; ties keep the file's order.
    #[serde(default)]
    pub priority: u32,
    /// Transport toward it.
    #[serde(default)]
    pub transport: Transport,
    /// A media profile name the media layer resolves (e.g. "g711").
    #[serde(default)]
    pub codec_policy: Option<String>,
}

fn default_weight() -> u32 {
    1
}

/// OPTIONS health probing of a set's destinations.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProbeConfig {
    /// Time between probes of one destination; 0 turns probing off (every
    /// destination then stays `unknown` and is always tried).
    pub interval_ms: u64,
    /// How long to wait for a probe's reply.
    pub timeout_ms: u64,
    /// Consecutive failures (probe or call timeouts) that mark it down.
    pub down_after: u32,
    /// Consecutive good probes that bring a down destination back up.
    pub up_after: u32,
    /// Reply codes that count as alive, numbers or classes like "2xx".
    /// The default also accepts the answers a PBX gives to an unknown,
    /// unauthenticated OPTIONS (401, 403, 404, 405, 407): it is alive.
    pub reply_codes: Vec<CodeSpec>,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            interval_ms: 5_000,
            timeout_ms: 2_000,
            down_after: 3,
            up_after: 2,
            reply_codes: ["2xx", "401", "403", "404", "405", "407"]
                .into_iter()
                .map(|s| CodeSpec::Text(s.to_owned()))
                .collect(),
        }
    }
}

/// A status code or class in the file: `503`, `"503"` or `"5xx"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum CodeSpec {
    /// A bare number.
    Number(u16),
    /// A number or class as a string.
    Text(String),
}

/// `[[routing.sets]]`: a named group of PBXes or trunks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetConfig {
    /// The name rules refer to.
    pub name: String,
    /// How calls are spread over the destinations.
    #[serde(default)]
    pub algorithm: Algorithm,
    /// The addresses (at least one).
    pub destinations: Vec<DestinationConfig>,
    /// Addresses or CIDRs whose requests are accepted without digest auth.
    #[serde(default)]
    pub trusted_sources: Vec<String>,
    /// No final answer within this → try the next destination. Must be
    /// shorter than timer B (64·T1, 32 s by default).
    #[serde(default = "default_failover_timeout")]
    pub failover_timeout_ms: u64,
    /// Final answers that move the call to the next destination.
    #[serde(default = "default_failover_codes")]
    pub failover_codes: Vec<CodeSpec>,
    /// Health probing.
    #[serde(default)]
    pub probe: ProbeConfig,
}

fn default_failover_timeout() -> u64 {
    4_000
}

fn default_failover_codes() -> Vec<CodeSpec> {
    vec![CodeSpec::Number(408), CodeSpec::Text("5xx".into())]
}

/// `[[routing.rules]]`: exactly one of `range`, `prefix`, `regex`, `e164`,
/// `local`, `default` says what it matches; `set` says where it goes.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuleConfig {
    /// A label for logs and the admin view.
    pub name: Option<String>,
    /// Only for this Request-URI domain (any when absent).
    pub domain: Option<String>,
    /// Numeric user in an inclusive range, e.g. "1000-1999".
    pub range: Option<String>,
    /// User starting with this.
    pub prefix: Option<String>,
    /// User matching this regular expression (anchor it yourself).
    pub regex: Option<String>,
    /// International numbers: `+` or `00` followed by 6 to 15 digits.
    pub e164: bool,
    /// Registered users (only with `routing.local = "rules"`).
    pub local: bool,
    /// Everything (a catch-all, normally last).
    pub default: bool,
    /// Destination set for a match (not with `local`).
    pub set: Option<String>,
    /// Remove this many leading characters from the user.
    pub strip: usize,
    /// Then put this in front of it.
    pub add_prefix: String,
}

/// Largest acceptable `failover_timeout_ms` (timer B with the default T1).
pub const MAX_FAILOVER_TIMEOUT_MS: u64 = 32_000;

impl RoutingConfig {
    /// Checks what serde cannot; the error names the key path
    /// (`routing.sets[1].destinations[0].weight`, `routing.rules[2].set`).
    pub fn validate(&self) -> Result<(), RoutingConfigError> {
        let mut names = std::collections::HashSet::new();
        for (i, set) in self.sets.iter().enumerate() {
            let key = format!("routing.sets[{i}]");
            validate_set(&key, set)?;
            if !names.insert(set.name.as_str()) {
                return Err(RoutingConfigError::new(
                    format!("{key}.name"),
                    format!("set {:?} is defined twice", set.name),
                ));
            }
        }
        for (i, rule) in self.rules.iter().enumerate() {
            let key = format!("routing.rules[{i}]");
            validate_rule(&key, rule, self.local, &names)?;
        }
        Ok(())
    }
}

fn validate_set(key: &str, set: &SetConfig) -> Result<(), RoutingConfigError> {
    if set.name.is_empty()
        || !set
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(RoutingConfigError::new(
            format!("{key}.name"),
            "must be non-empty and use only letters, digits, '-', '_' and '.'",
        ));
    }
    if set.destinations.is_empty() {
        return Err(RoutingConfigError::new(
            format!("{key}.destinations"),
            "a set needs at least one destination",
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for (j, d) in set.destinations.iter().enumerate() {
        let dkey = format!("{key}.destinations[{j}]");
        if d.address.ip().is_unspecified() || d.address.port() == 0 {
            return Err(RoutingConfigError::new(
                format!("{dkey}.address"),
                "needs a concrete IP address and a non-zero port",
            ));
        }
        if !seen.insert(d.address) {
            return Err(RoutingConfigError::new(
                format!("{dkey}.address"),
                format!("{} is listed twice in this set", d.address),
            ));
        }
        if d.weight == 0 {
            return Err(RoutingConfigError::new(
                format!("{dkey}.weight"),
                "must be positive",
            ));
        }
        if let Some(p) = &d.codec_policy
            && p.trim().is_empty()
        {
            return Err(RoutingConfigError::new(
                format!("{dkey}.codec_policy"),
                "must not be empty (leave it out for the default)",
            ));
        }
    }
    for (j, s) in set.trusted_sources.iter().enumerate() {
        if let Err(e) = s.parse::<Cidr>() {
            return Err(RoutingConfigError::new(
                format!("{key}.trusted_sources[{j}]"),
                e.to_string(),
            ));
        }
    }
    if set.failover_timeout_ms == 0 || set.failover_timeout_ms >= MAX_FAILOVER_TIMEOUT_MS {
        return Err(RoutingConfigError::new(
            format!("{key}.failover_timeout_ms"),
            format!(
                "must be between 1 and {} (below timer B)",
                MAX_FAILOVER_TIMEOUT_MS - 1
            ),
        ));
    }
    CodeSet::parse(&set.failover_codes)
        .map_err(|(j, m)| RoutingConfigError::new(format!("{key}.failover_codes[{j}]"), m))?;
    let p = &set.probe;
    if p.interval_ms > 0 {
        if p.timeout_ms == 0 || p.timeout_ms > p.interval_ms {
            return Err(RoutingConfigError::new(
                format!("{key}.probe.timeout_ms"),
                "must be positive and not longer than probe.interval_ms",
            ));
        }
        if p.interval_ms < 100 {
            return Err(RoutingConfigError::new(
                format!("{key}.probe.interval_ms"),
                "must be 0 (off) or at least 100",
            ));
        }
    }
    if p.down_after == 0 {
        return Err(RoutingConfigError::new(
            format!("{key}.probe.down_after"),
            "must be at least 1",
        ));
    }
    if p.up_after == 0 {
        return Err(RoutingConfigError::new(
            format!("{key}.probe.up_after"),
            "must be at least 1",
        ));
    }
    CodeSet::parse(&p.reply_codes)
        .map_err(|(j, m)| RoutingConfigError::new(format!("{key}.probe.reply_codes[{j}]"), m))?;
    Ok(())
}

fn validate_rule(
    key: &str,
    rule: &RuleConfig,
    local: LocalPosition,
    sets: &std::collections::HashSet<&str>,
) -> Result<(), RoutingConfigError> {
    let kinds = [
        rule.range.is_some(),
        rule.prefix.is_some(),
        rule.regex.is_some(),
        rule.e164,
        rule.local,
        rule.default,
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if kinds != 1 {
        return Err(RoutingConfigError::new(
            key.to_owned(),
            "needs exactly one of range, prefix, regex, e164, local, default",
        ));
    }
    if let Some(r) = &rule.range {
        super::rules::parse_range(r)
            .map_err(|m| RoutingConfigError::new(format!("{key}.range"), m))?;
    }
    if let Some(p) = &rule.prefix
        && (p.is_empty() || !p.chars().all(super::rules::user_char))
    {
        return Err(RoutingConfigError::new(
            format!("{key}.prefix"),
            "must be non-empty and use only characters allowed in a SIP user",
        ));
    }
    if let Some(r) = &rule.regex
        && let Err(e) = regex::Regex::new(r)
    {
        return Err(RoutingConfigError::new(
            format!("{key}.regex"),
            e.to_string(),
        ));
    }
    if rule.local {
        if local != LocalPosition::Rules {
            return Err(RoutingConfigError::new(
                format!("{key}.local"),
                "a local rule needs routing.local = \"rules\"",
            ));
        }
        if rule.set.is_some() {
            return Err(RoutingConfigError::new(
                format!("{key}.set"),
                "a local rule goes to the location service, not to a set",
            ));
        }
    } else {
        match &rule.set {
            None => {
                return Err(RoutingConfigError::new(
                    format!("{key}.set"),
                    "missing: which destination set does this rule route to?",
                ));
            }
            Some(s) if !sets.contains(s.as_str()) => {
                return Err(RoutingConfigError::new(
                    format!("{key}.set"),
                    format!("no set named {s:?} in routing.sets"),
                ));
            }
            Some(_) => {}
        }
    }
    if !rule.add_prefix.chars().all(super::rules::user_char) {
        return Err(RoutingConfigError::new(
            format!("{key}.add_prefix"),
            "uses characters not allowed in a SIP user",
        ));
    }
    if let Some(d) = &rule.domain
        && d.trim().is_empty()
    {
        return Err(RoutingConfigError::new(
            format!("{key}.domain"),
            "must not be empty",
        ));
    }
    Ok(())
}
