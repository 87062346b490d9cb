//! The sans-IO routing table: rules and destination sets compiled from the
//! configuration, plus the health of every destination.
//!
//! [`RoutingTable::route`] answers where a call goes: a set's destinations in
//! the order its algorithm gives for this call (down ones left out), the
//! location service, or a rejection. [`RoutingTable::next_after_failure`]
//! drives serial failover through that list.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::cidr::Cidr;
use super::codes::CodeSet;
use super::config::{Algorithm, RoutingConfig, RoutingConfigError, Transport};
use super::health::{DestinationStatus, HealthState, ProbeSettings, Prober};
use super::rules::{self, Action, Rule};

/// One place a call may be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutedDestination {
    /// IP address and port.
    pub address: SocketAddr,
    /// Transport toward it.
    pub transport: Transport,
    /// The media profile the media layer should apply, if configured.
    pub codec_policy: Option<String>,
}

/// One set as the admin view shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetView {
    /// The set's name.
    pub name: String,
    /// How it spreads calls.
    pub algorithm: Algorithm,
    /// Its destinations, in configured order, with their health.
    pub destinations: Vec<DestinationStatus>,
}

/// A call routed to a destination set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PbxRoute {
    /// The set's name.
    pub set: String,
    /// The rule that matched (its `name`, or a generated label).
    pub rule: String,
    /// The Request-URI user after the rule's rewrite.
    pub user: String,
    /// Routable destinations, in the order to try them (never empty).
    pub destinations: Vec<RoutedDestination>,
    /// No final answer within this → next destination.
    pub failover_timeout: Duration,
    /// Final answers that move the call to the next destination.
    pub failover_codes: CodeSet,
}

/// Where a call goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteOutcome {
    /// To a destination set, serially in the given order.
    Pbx(PbxRoute),
    /// To registered users: look `user@domain` up in the location service.
    /// When nobody is registered, continue with
    /// [`RoutingTable::route_from`]`(…, resume)`.
    Local {
        /// The (possibly rewritten) user to look up.
        user: String,
        /// The rule index to continue from when the lookup finds nothing.
        resume: usize,
    },
    /// Answer the request with this status.
    Reject {
        /// 404 (no rule matched) or 503 (all destinations down).
        code: u16,
        /// The reason phrase.
        reason: &'static str,
    },
}

/// A call to route.
#[derive(Debug, Clone, Copy)]
pub struct RouteQuery<'a> {
    /// Request-URI user.
    pub user: &'a str,
    /// Request-URI host.
    pub domain: &'a str,
    /// The call's Call-ID (for `hash_call_id`).
    pub call_id: &'a str,
    /// Where the request came from (for logs; trust is [`RoutingTable::is_trusted`]).
    pub source_ip: Option<IpAddr>,
}

/// Why the current destination of a call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallFailure {
    /// No final answer within `failover_timeout` (or the client transaction
    /// timed out): counts against the destination's health.
    Timeout,
    /// A final answer with this code from the destination.
    Status(u16),
}

/// What to do after a destination failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failover {
    /// Try this destination next (CANCEL the failed one if it is still ringing).
    Next(RoutedDestination),
    /// The failure is final (a code not in `failover_codes`): relay it.
    Stop,
    /// No destination is left: answer with the last failure (or 503/408).
    Exhausted,
}

#[derive(Debug, Clone)]
struct Dest {
    routed: RoutedDestination,
    weight: u32,
}

#[derive(Debug, Clone)]
struct Set {
    name: String,
    algorithm: Algorithm,
    /// For `priority`, already sorted by priority.
    dests: Vec<Dest>,
    trusted: Vec<Cidr>,
    failover_timeout: Duration,
    failover_codes: CodeSet,
    /// Round-robin counter.
    cursor: u64,
    /// Smooth weighted round robin: current weights, one per destination.
    current: Vec<i64>,
}

/// Rules, sets and health.
#[derive(Debug)]
pub struct RoutingTable {
    rules: Vec<Rule>,
    sets: Vec<Set>,
    prober: Prober,
}

fn compile_sets(config: &RoutingConfig) -> Result<Vec<Set>, RoutingConfigError> {
    let mut sets = Vec::with_capacity(config.sets.len());
    for (i, s) in config.sets.iter().enumerate() {
        let key = format!("routing.sets[{i}]");
        let err = |k: String, m: String| RoutingConfigError { key: k, message: m };
        let mut dests: Vec<(u32, Dest)> = s
            .destinations
            .iter()
            .map(|d| {
                (
                    d.priority,
                    Dest {
                        routed: RoutedDestination {
                            address: d.address,
                            transport: d.transport,
                            codec_policy: d.codec_policy.clone(),
                        },
                        weight: d.weight,
                    },
                )
            })
            .collect();
        if s.algorithm == Algorithm::Priority {
            dests.sort_by_key(|(p, _)| *p); // stable: ties keep the file's order
        }
        let trusted = s
            .trusted_sources
            .iter()
            .enumerate()
            .map(|(j, t)| {
                t.parse::<Cidr>()
                    .map_err(|e| err(format!("{key}.trusted_sources[{j}]"), e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let failover_codes = CodeSet::parse(&s.failover_codes)
            .map_err(|(j, m)| err(format!("{key}.failover_codes[{j}]"), m))?;
        let n = dests.len();
        sets.push(Set {
            name: s.name.clone(),
            algorithm: s.algorithm,
            dests: dests.into_iter().map(|(_, d)| d).collect(),
            trusted,
            failover_timeout: Duration::from_millis(s.failover_timeout_ms),
            failover_codes,
            cursor: 0,
            current: vec![0; n],
        });
    }
    Ok(sets)
}

fn probe_settings(
    config: &RoutingConfig,
) -> Result<Vec<(SocketAddr, ProbeSettings)>, RoutingConfigError> {
    let mut out = Vec::new();
    for (i, s) in config.sets.iter().enumerate() {
        let p = &s.probe;
        let reply_codes = CodeSet::parse(&p.reply_codes).map_err(|(j, m)| RoutingConfigError {
            key: format!("routing.sets[{i}].probe.reply_codes[{j}]"),
            message: m,
        })?;
        let settings = ProbeSettings {
            interval: (p.interval_ms > 0).then(|| Duration::from_millis(p.interval_ms)),
            timeout: Duration::from_millis(p.timeout_ms.max(1)),
            down_after: p.down_after.max(1),
            up_after: p.up_after.max(1),
            reply_codes,
        };
        out.extend(s.destinations.iter().map(|d| (d.address, settings.clone())));
    }
    Ok(out)
}

/// FNV-1a: a hash that stays the same across restarts and builds.
fn stable_hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

impl RoutingTable {
    /// Validates and compiles `config`; every destination starts `unknown`.
    pub fn new(config: &RoutingConfig, now: Instant) -> Result<Self, RoutingConfigError> {
        let mut table = Self {
            rules: Vec::new(),
            sets: Vec::new(),
            prober: Prober::new(),
        };
        table.reload(config, now)?;
        Ok(table)
    }

    /// Replaces rules and sets with `config` as one step. Destinations that
    /// stay keep their health; a set that stays keeps its round-robin place.
    /// On error nothing changes.
    pub fn reload(
        &mut self,
        config: &RoutingConfig,
        now: Instant,
    ) -> Result<(), RoutingConfigError> {
        config.validate()?;
        let mut sets = compile_sets(config)?;
        let index: HashMap<&str, usize> = sets
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.as_str(), i))
            .collect();
        let rules = rules::compile(config, |n| index.get(n).copied()).map_err(|(i, m)| {
            RoutingConfigError {
                key: format!("routing.rules[{i}]"),
                message: m,
            }
        })?;
        let probes = probe_settings(config)?;
        for set in &mut sets {
            if let Some(old) = self.sets.iter().find(|o| o.name == set.name) {
                set.cursor = old.cursor;
                if old.dests.len() == set.dests.len() {
                    set.current.clone_from(&old.current);
                }
            }
        }
        self.rules = rules;
        self.sets = sets;
        self.prober.set_destinations(now, probes);
        Ok(())
    }

    /// Routes a call from the first rule.
    pub fn route(&mut self, query: &RouteQuery<'_>, now: Instant) -> RouteOutcome {
        self.route_from(query, 0, now)
    }

    /// Routes a call from rule `start` (after a `Local` outcome whose lookup
    /// found nobody, pass its `resume`).
    pub fn route_from(
        &mut self,
        query: &RouteQuery<'_>,
        start: usize,
        _now: Instant,
    ) -> RouteOutcome {
        for (i, rule) in self.rules.iter().enumerate().skip(start) {
            let Some(user) = rule.apply(query.user, query.domain) else {
                continue;
            };
            match rule.action {
                Action::Local => {
                    return RouteOutcome::Local {
                        user,
                        resume: i + 1,
                    };
                }
                Action::Set(s) => {
                    let label = rule.label.clone();
                    let Some(set) = self.sets.get_mut(s) else {
                        continue;
                    };
                    let order = order(set, query.call_id, &self.prober);
                    if order.is_empty() {
                        tracing::warn!(set = %set.name, rule = %label, "all destinations down");
                        return RouteOutcome::Reject {
                            code: 503,
                            reason: "all destinations down",
                        };
                    }
                    tracing::debug!(
                        set = %set.name, rule = %label, user = %user,
                        first = %order.first().map(|d| d.address.to_string()).unwrap_or_default(),
                        source = ?query.source_ip, "routed"
                    );
                    return RouteOutcome::Pbx(PbxRoute {
                        set: set.name.clone(),
                        rule: label,
                        user,
                        destinations: order,
                        failover_timeout: set.failover_timeout,
                        failover_codes: set.failover_codes.clone(),
                    });
                }
            }
        }
        RouteOutcome::Reject {
            code: 404,
            reason: "Not Found",
        }
    }

    /// Serial failover: `failed` (a destination of `route`) failed with
    /// `failure`; which destination comes next? A timeout counts against
    /// `failed`'s health. Destinations that went down meanwhile are skipped.
    pub fn next_after_failure(
        &mut self,
        route: &PbxRoute,
        failed: SocketAddr,
        failure: CallFailure,
        now: Instant,
    ) -> Failover {
        match failure {
            CallFailure::Timeout => self.prober.transaction_timeout(now, failed),
            CallFailure::Status(code) if !route.failover_codes.contains(code) => {
                return Failover::Stop;
            }
            CallFailure::Status(_) => {}
        }
        let Some(pos) = route.destinations.iter().position(|d| d.address == failed) else {
            return Failover::Exhausted;
        };
        route
            .destinations
            .iter()
            .skip(pos + 1)
            .find(|d| self.prober.routable(d.address))
            .cloned()
            .map_or(Failover::Exhausted, Failover::Next)
    }

    /// The set whose `trusted_sources` contain `ip` (first in file order).
    pub fn is_trusted(&self, ip: IpAddr) -> Option<&str> {
        self.sets
            .iter()
            .find(|s| s.trusted.iter().any(|c| c.contains(ip)))
            .map(|s| s.name.as_str())
    }

    /// The health prober (the shell polls it for probes and feeds results).
    pub fn prober(&mut self) -> &mut Prober {
        &mut self.prober
    }

    /// The health of `dest`.
    pub fn state(&self, dest: SocketAddr) -> HealthState {
        self.prober.state(dest)
    }

    /// Every destination's health, for the admin view.
    pub fn states(&self) -> Vec<DestinationStatus> {
        self.prober.states()
    }

    /// Every set with its destinations' health, in file order (admin view).
    pub fn view(&self) -> Vec<SetView> {
        let states = self.prober.states();
        self.sets
            .iter()
            .map(|s| SetView {
                name: s.name.clone(),
                algorithm: s.algorithm,
                destinations: s
                    .dests
                    .iter()
                    .filter_map(|d| states.iter().find(|st| st.address == d.routed.address))
                    .cloned()
                    .collect(),
            })
            .collect()
    }

    /// The configured set names with their destination addresses (admin view).
    pub fn sets(&self) -> Vec<(String, Vec<SocketAddr>)> {
        self.sets
            .iter()
            .map(|s| {
                (
                    s.name.clone(),
                    s.dests.iter().map(|d| d.routed.address).collect(),
                )
            })
            .collect()
    }
}

/// The order in which to try `set`'s routable destinations for this call.
fn order(set: &mut Set, call_id: &str, health: &Prober) -> Vec<RoutedDestination> {
    let n = set.dests.len();
    if n == 0 {
        return Vec::new();
    }
    let up: Vec<bool> = set
        .dests
        .iter()
        .map(|d| health.routable(d.routed.address))
        .collect();
    let rotated = |start: usize| -> Vec<RoutedDestination> {
        (0..n)
            .map(|k| (start + k) % n)
            .filter(|i| up.get(*i).copied().unwrap_or(false))
            .filter_map(|i| set.dests.get(i).map(|d| d.routed.clone()))
            .collect()
    };
    match set.algorithm {
        Algorithm::Priority => rotated(0),
        Algorithm::HashCallId => {
            // Hash over the whole list, so calls to a healthy destination
            // keep their place when another one goes down.
            let start = (stable_hash(call_id) % n as u64) as usize;
            rotated(start)
        }
        Algorithm::RoundRobin => {
            if !up.iter().any(|u| *u) {
                return Vec::new();
            }
            // Advance to the next routable destination.
            let mut start = (set.cursor % n as u64) as usize;
            for _ in 0..n {
                if up.get(start).copied().unwrap_or(false) {
                    break;
                }
                start = (start + 1) % n;
            }
            set.cursor = (start as u64 + 1) % n as u64;
            rotated(start)
        }
        Algorithm::Weighted => {
            // Smooth weighted round robin (as in nginx) over routable ones.
            let total: i64 = set
                .dests
                .iter()
                .zip(&up)
                .filter(|(_, u)| **u)
                .map(|(d, _)| i64::from(d.weight))
                .sum();
            let mut best: Option<(usize, i64)> = None;
            for (i, (d, u)) in set.dests.iter().zip(&up).enumerate() {
                if !*u {
                    continue;
                }
                if let Some(c) = set.current.get_mut(i) {
                    *c += i64::from(d.weight);
                    let v = *c;
                    if best.is_none_or(|(_, bv)| v > bv) {
                        best = Some((i, v));
                    }
                }
            }
            let Some((first, _)) = best else {
                return Vec::new();
            };
            if let Some(c) = set.current.get_mut(first) {
                *c -= total;
            }
            // Then the others, heaviest first.
            let mut rest: Vec<usize> = (0..n)
                .filter(|i| *i != first && up.get(*i) == Some(&true))
                .collect();
            rest.sort_by_key(|i| std::cmp::Reverse(set.dests.get(*i).map_or(0, |d| d.weight)));
            std::iter::once(first)
                .chain(rest)
                .filter_map(|i| set.dests.get(i).map(|d| d.routed.clone()))
                .collect()
        }
    }
}
