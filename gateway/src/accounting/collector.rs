//! Sans-IO assembly of call records: dialog events and rtpengine's delete
//! statistics go in, finished [`NewCallRecord`]s come out. It never reads a
//! clock: callers pass `now` (and the wall clock that goes with it).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use ngclient::CallStats;

use crate::proxy::dialog::{CallStart, DialogEvent, DialogEventKind};
use crate::store::NewCallRecord;

/// A moment as both clocks see it: the monotonic one the proxy stamps events
/// with, and unix milliseconds for the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clock {
    /// Monotonic time.
    pub now: Instant,
    /// The same moment in unix milliseconds.
    pub unix_ms: i64,
}

impl Clock {
    /// The current moment.
    pub fn now() -> Self {
        let unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        Self {
            now: Instant::now(),
            unix_ms,
        }
    }

    /// Unix milliseconds of `at` (an instant near `self.now`).
    pub fn unix_ms_of(&self, at: Instant) -> i64 {
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        if at <= self.now {
            self.unix_ms.saturating_sub(ms(self.now - at))
        } else {
            self.unix_ms.saturating_add(ms(at - self.now))
        }
    }
}

/// Limits and timing of the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CollectorConfig {
    /// How long an ended call waits for its media statistics (zero: media off).
    pub media_wait: Duration,
    /// A call with no end event after this long is written as `lost` (its end was
    /// never seen, e.g. a dialog evicted from a full table).
    pub max_age: Duration,
    /// Calls followed at once; more are not recorded (and counted).
    pub max_open: usize,
}

impl Default for CollectorConfig {
    fn default() -> Self {
        Self {
            media_wait: Duration::ZERO,
            max_age: Duration::from_secs(5 * 3600),
            max_open: 200_000,
        }
    }
}

/// Counters of what the collector could not do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CollectorStats {
    /// Calls not recorded because `max_open` calls were followed already.
    pub not_followed: u64,
    /// Calls written as `lost` after `max_age` without an end.
    pub lost: u64,
    /// Media statistics that matched no call waiting for them.
    pub unmatched_media: u64,
}

#[derive(Debug)]
struct Open {
    start: CallStart,
    started_ms: i64,
    started_at: Instant,
    answered_ms: Option<i64>,
    destination: Option<String>,
    ended: Option<Ended>,
    media: Option<String>,
    /// Tells this call's entry in `waiting` from an older one with the same Call-ID.
    generation: u64,
}

#[derive(Debug, Clone)]
struct Ended {
    at_ms: i64,
    disposition: u16,
    reason: &'static str,
}

/// Follows calls from `Started` to their end and builds their records.
#[derive(Debug, Default)]
pub struct Collector {
    config: CollectorConfig,
    open: HashMap<String, Open>,
    /// Ended calls waiting for media statistics, in deadline order (the wait is
    /// the same for all, so insertion order is deadline order).
    waiting: VecDeque<(Instant, String, u64)>,
    ready: VecDeque<NewCallRecord>,
    generation: u64,
    next_sweep: Option<Instant>,
    stats: CollectorStats,
}

impl Collector {
    /// An empty collector.
    pub fn new(config: CollectorConfig) -> Self {
        Self {
            config,
            ..Self::default()
        }
    }

    /// Counters.
    pub fn stats(&self) -> CollectorStats {
        self.stats
    }

    /// Calls followed now (started, or ended and waiting for media statistics).
    pub fn open_calls(&self) -> usize {
        self.open.len()
    }

    /// Feeds one dialog event.
    pub fn handle_event(&mut self, clock: Clock, ev: DialogEvent) {
        let at_ms = clock.unix_ms_of(ev.at);
        match ev.kind {
            DialogEventKind::Started(start) => {
                // A Call-ID seen again (a retry after a PBX's 407, say): the
                // earlier attempt is finished with what it has.
                if self.open.contains_key(&ev.call_id) {
                    self.finish(&ev.call_id);
                }
                if self.open.len() >= self.config.max_open {
                    self.stats.not_followed += 1;
                    return;
                }
                self.generation += 1;
                let sweep = self.sweep_interval();
                self.next_sweep.get_or_insert(clock.now + sweep);
                self.open.insert(
                    ev.call_id,
                    Open {
                        start,
                        started_ms: at_ms,
                        started_at: ev.at,
                        answered_ms: None,
                        destination: None,
                        ended: None,
                        media: None,
                        generation: self.generation,
                    },
                );
            }
            DialogEventKind::Early => {}
            DialogEventKind::Confirmed { destination } => {
                if let Some(o) = self.open.get_mut(&ev.call_id) {
                    o.answered_ms.get_or_insert(at_ms);
                    o.destination = Some(destination);
                }
            }
            DialogEventKind::Terminated { reason } => {
                self.ended(
                    clock,
                    &ev.call_id,
                    Ended {
                        at_ms,
                        disposition: 200,
                        reason: reason.as_str(),
                    },
                );
            }
            DialogEventKind::Failed {
                status,
                destinations,
            } => {
                if let Some(o) = self.open.get_mut(&ev.call_id)
                    && o.ended.is_none()
                    && !destinations.is_empty()
                {
                    o.destination = Some(destinations.join(","));
                }
                self.ended(
                    clock,
                    &ev.call_id,
                    Ended {
                        at_ms,
                        disposition: status,
                        reason: failure_reason(status),
                    },
                );
            }
        }
    }

    /// rtpengine's statistics from the call's delete.
    pub fn handle_media(&mut self, call_id: &str, stats: &CallStats) {
        let Some(o) = self.open.get_mut(call_id) else {
            self.stats.unmatched_media += 1;
            return;
        };
        o.media = Some(media_json(stats, &o.start.caller_tag));
        if o.ended.is_some() {
            self.finish(call_id);
        }
    }

    /// When [`Collector::handle_timeout`] must run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let wait = self.waiting.front().map(|w| w.0);
        match (wait, self.next_sweep) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Writes ended calls whose statistics did not come in time, and calls
    /// that never ended.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some((at, _, _)) = self.waiting.front() {
            if *at > now {
                break;
            }
            if let Some((_, call_id, generation)) = self.waiting.pop_front()
                && self
                    .open
                    .get(&call_id)
                    .is_some_and(|o| o.generation == generation)
            {
                self.finish(&call_id);
            }
        }
        if self.next_sweep.is_none_or(|t| t <= now) {
            let max_age = self.config.max_age;
            let stale: Vec<String> = self
                .open
                .iter()
                .filter(|(_, o)| {
                    o.ended.is_none() && now.saturating_duration_since(o.started_at) >= max_age
                })
                .map(|(k, _)| k.clone())
                .collect();
            for call_id in stale {
                self.stats.lost += 1;
                self.finish(&call_id);
            }
            let sweep = self.sweep_interval();
            self.next_sweep = (!self.open.is_empty()).then(|| now + sweep);
        }
    }

    /// Writes every ended call now, without waiting for media statistics
    /// (shutdown); calls still in progress stay.
    pub fn flush_ended(&mut self) {
        while let Some((_, call_id, generation)) = self.waiting.pop_front() {
            if self
                .open
                .get(&call_id)
                .is_some_and(|o| o.generation == generation)
            {
                self.finish(&call_id);
            }
        }
    }

    /// The next finished record.
    pub fn poll_record(&mut self) -> Option<NewCallRecord> {
        self.ready.pop_front()
    }

    fn ended(&mut self, clock: Clock, call_id: &str, end: Ended) {
        let Some(o) = self.open.get_mut(call_id) else {
            return;
        };
        if o.ended.is_some() {
            return;
        }
        o.ended = Some(end);
        if o.media.is_some() || self.config.media_wait.is_zero() {
            self.finish(call_id);
        } else {
            let generation = o.generation;
            self.waiting.push_back((
                clock.now + self.config.media_wait,
                call_id.to_owned(),
                generation,
            ));
        }
    }

    /// How often calls are checked for `max_age`.
    fn sweep_interval(&self) -> Duration {
        (self.config.max_age / 10).max(Duration::from_secs(1))
    }

    /// Moves a call's record to the ready queue.
    fn finish(&mut self, call_id: &str) {
        let Some(o) = self.open.remove(call_id) else {
            return;
        };
        self.ready.push_back(record(call_id, o));
    }
}

fn record(call_id: &str, o: Open) -> NewCallRecord {
    let destination = o
        .destination
        .or_else(|| (!o.start.destinations.is_empty()).then(|| o.start.destinations.join(",")));
    let (ended_at_ms, disposition, reason) = match o.ended {
        Some(e) => (Some(e.at_ms), Some(i64::from(e.disposition)), e.reason),
        None => (None, None, "lost"),
    };
    NewCallRecord {
        call_id: call_id.to_owned(),
        caller: o.start.caller,
        callee: o.start.callee,
        destination,
        started_at_ms: o.started_ms,
        answered_at_ms: o.answered_ms,
        ended_at_ms,
        disposition,
        media_stats: o.media,
        direction: o.start.direction.map(|d| d.as_str().to_owned()),
        reason: Some(reason.to_owned()),
    }
}

/// Why an unanswered call ended, from the final status the caller got.
pub fn failure_reason(status: u16) -> &'static str {
    match status {
        300..=399 => "redirected",
        401 | 407 => "challenged",
        404 | 480 | 604 => "unavailable",
        408 => "timeout",
        486 | 600 => "busy",
        487 => "cancelled",
        603 => "declined",
        400..=499 => "rejected",
        _ => "failed",
    }
}

/// The media statistics of a record as JSON: per leg (`caller` is the tag of
/// the From header, every other tag a `callee`), what rtpengine received from
/// that party over all its streams; and rtpengine's RTP and RTCP totals.
pub fn media_json(stats: &CallStats, caller_tag: &str) -> String {
    let legs: Vec<serde_json::Value> = stats
        .tags
        .values()
        .map(|t| {
            let (mut packets, mut bytes, mut errors) = (0u64, 0u64, 0u64);
            for s in t.medias.iter().flat_map(|m| m.streams.iter()) {
                packets = packets.saturating_add(s.stats.packets);
                bytes = bytes.saturating_add(s.stats.bytes);
                errors = errors.saturating_add(s.stats.errors);
            }
            let codec = t.medias.iter().find_map(|m| m.codec.clone());
            let protocol = t.medias.iter().find_map(|m| m.protocol.clone());
            serde_json::json!({
                "leg": if t.tag == caller_tag { "caller" } else { "callee" },
                "tag": t.tag,
                "packets": packets,
                "bytes": bytes,
                "errors": errors,
                "codec": codec,
                "protocol": protocol,
            })
        })
        .collect();
    let counters = |c: &ngclient::Counters| serde_json::json!({ "packets": c.packets, "bytes": c.bytes, "errors": c.errors });
    serde_json::json!({
        "legs": legs,
        "rtp": counters(&stats.totals.rtp),
        "rtcp": counters(&stats.totals.rtcp),
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::dialog::{Direction, EndCause};

    fn start() -> CallStart {
        CallStart {
            caller: "1001@localhost".into(),
            caller_tag: "ft".into(),
            callee: "2000@localhost".into(),
            direction: Some(Direction::BrowserToPbx),
            destinations: vec!["udp:127.0.0.1:5080".into()],
        }
    }

    fn ev(at: Instant, kind: DialogEventKind) -> DialogEvent {
        DialogEvent {
            call_id: "c1".into(),
            at,
            kind,
        }
    }

    const T0_MS: i64 = 1_700_000_000_000;

    fn clock(t0: Instant, after: Duration) -> Clock {
        Clock {
            now: t0 + after,
            unix_ms: T0_MS + i64::try_from(after.as_millis()).unwrap(),
        }
    }

    #[test]
    fn answered_call_becomes_one_record_with_times_and_reason() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut c = Collector::new(CollectorConfig::default());
        // Events are fed a little after they happened: times come from `at`.
        c.handle_event(clock(t0, s(1)), ev(t0, DialogEventKind::Started(start())));
        c.handle_event(clock(t0, s(3)), ev(t0 + s(2), DialogEventKind::Early));
        c.handle_event(
            clock(t0, s(3)),
            ev(
                t0 + s(3),
                DialogEventKind::Confirmed {
                    destination: "udp:127.0.0.1:5080".into(),
                },
            ),
        );
        assert!(c.poll_record().is_none(), "not before the end");
        c.handle_event(
            clock(t0, s(64)),
            ev(
                t0 + s(63),
                DialogEventKind::Terminated {
                    reason: EndCause::ByeFromCallee,
                },
            ),
        );
        let r = c.poll_record().expect("record");
        assert_eq!(
            r,
            NewCallRecord {
                call_id: "c1".into(),
                caller: "1001@localhost".into(),
                callee: "2000@localhost".into(),
                destination: Some("udp:127.0.0.1:5080".into()),
                started_at_ms: T0_MS,
                answered_at_ms: Some(T0_MS + 3_000),
                ended_at_ms: Some(T0_MS + 63_000),
                disposition: Some(200),
                media_stats: None,
                direction: Some("browser_to_pbx".into()),
                reason: Some("bye_callee".into()),
            }
        );
        assert!(c.poll_record().is_none());
        assert_eq!(c.open_calls(), 0);
    }

    fn tried(status: u16) -> Vec<String> {
        match status {
            503 => vec!["udp:127.0.0.1:5080".into(), "udp:127.0.0.1:5082".into()],
            _ => vec![],
        }
    }

    #[test]
    fn failures_map_to_dispositions_and_reasons() {
        for (status, reason) in [
            (486, "busy"),
            (487, "cancelled"),
            (408, "timeout"),
            (503, "failed"),
            (404, "unavailable"),
            (403, "rejected"),
            (603, "declined"),
        ] {
            let t0 = Instant::now();
            let mut c = Collector::new(CollectorConfig::default());
            c.handle_event(
                clock(t0, Duration::ZERO),
                ev(t0, DialogEventKind::Started(start())),
            );
            c.handle_event(
                clock(t0, Duration::from_secs(2)),
                ev(
                    t0 + Duration::from_secs(2),
                    DialogEventKind::Failed {
                        status,
                        destinations: tried(status),
                    },
                ),
            );
            let r = c.poll_record().unwrap();
            assert_eq!(r.disposition, Some(i64::from(status)));
            assert_eq!(r.reason.as_deref(), Some(reason), "{status}");
            assert_eq!(r.answered_at_ms, None);
            assert_eq!(r.ended_at_ms, Some(T0_MS + 2_000));
            // Every destination tried when the failure names them (serial
            // failover), else the ones of the start.
            let expected = if status == 503 {
                "udp:127.0.0.1:5080,udp:127.0.0.1:5082"
            } else {
                "udp:127.0.0.1:5080"
            };
            assert_eq!(r.destination.as_deref(), Some(expected));
        }
    }

    fn stats() -> CallStats {
        let counters = |p, b| ngclient::Counters {
            packets: p,
            bytes: b,
            errors: 0,
        };
        let tag = |name: &str, p| ngclient::TagStats {
            tag: name.into(),
            created: None,
            medias: vec![ngclient::MediaStats {
                index: 1,
                media_type: Some("audio".into()),
                protocol: Some("RTP/AVP".into()),
                codec: Some("PCMA".into()),
                streams: vec![ngclient::StreamStats {
                    stats: counters(p, p * 172),
                    ..Default::default()
                }],
                flags: vec![],
            }],
        };
        CallStats {
            tags: [
                ("ft".to_string(), tag("ft", 100)),
                ("pbx".to_string(), tag("pbx", 98)),
            ]
            .into_iter()
            .collect(),
            totals: ngclient::Totals {
                rtp: counters(198, 198 * 172),
                rtcp: counters(0, 0),
            },
            ..Default::default()
        }
    }

    #[test]
    fn media_statistics_join_the_record_before_or_after_its_end() {
        let s = Duration::from_secs;
        let cfg = CollectorConfig {
            media_wait: s(2),
            ..CollectorConfig::default()
        };
        // After the end: the record waits for them.
        let t0 = Instant::now();
        let mut c = Collector::new(cfg);
        c.handle_event(clock(t0, s(0)), ev(t0, DialogEventKind::Started(start())));
        c.handle_event(
            clock(t0, s(1)),
            ev(
                t0 + s(1),
                DialogEventKind::Confirmed {
                    destination: "udp:127.0.0.1:5080".into(),
                },
            ),
        );
        c.handle_event(
            clock(t0, s(5)),
            ev(
                t0 + s(5),
                DialogEventKind::Terminated {
                    reason: EndCause::ByeFromCaller,
                },
            ),
        );
        assert!(
            c.poll_record().is_none(),
            "waits for the delete's statistics"
        );
        assert_eq!(c.poll_timeout(), Some(t0 + s(7)));
        c.handle_media("c1", &stats());
        let r = c.poll_record().unwrap();
        let json: serde_json::Value =
            serde_json::from_str(r.media_stats.as_deref().unwrap()).unwrap();
        let legs = json["legs"].as_array().unwrap();
        let caller = legs.iter().find(|l| l["leg"] == "caller").unwrap();
        assert_eq!(caller["tag"], "ft");
        assert_eq!(caller["packets"], 100);
        assert_eq!(caller["bytes"], 17_200);
        assert_eq!(caller["codec"], "PCMA");
        let callee = legs.iter().find(|l| l["leg"] == "callee").unwrap();
        assert_eq!(callee["packets"], 98);
        assert_eq!(json["rtp"]["packets"], 198);
        // The stale waiting entry is skipped.
        c.handle_timeout(t0 + s(10));
        assert!(c.poll_record().is_none());

        // Before the end (a WebSocket grace expired, then the teardown): no wait.
        let mut c = Collector::new(cfg);
        c.handle_event(clock(t0, s(0)), ev(t0, DialogEventKind::Started(start())));
        c.handle_media("c1", &stats());
        assert!(c.poll_record().is_none());
        c.handle_event(
            clock(t0, s(9)),
            ev(
                t0 + s(9),
                DialogEventKind::Terminated {
                    reason: EndCause::WsDropped,
                },
            ),
        );
        let r = c.poll_record().unwrap();
        assert!(r.media_stats.is_some());
        assert_eq!(r.reason.as_deref(), Some("ws_drop"));

        // Never: written without them once the wait is over.
        let mut c = Collector::new(cfg);
        c.handle_event(clock(t0, s(0)), ev(t0, DialogEventKind::Started(start())));
        c.handle_event(
            clock(t0, s(1)),
            ev(
                t0 + s(1),
                DialogEventKind::Failed {
                    status: 486,
                    destinations: vec![],
                },
            ),
        );
        c.handle_timeout(t0 + s(2));
        assert!(c.poll_record().is_none());
        c.handle_timeout(t0 + s(3));
        let r = c.poll_record().unwrap();
        assert_eq!(r.media_stats, None);
        assert_eq!(r.disposition, Some(486));
        c.handle_media("c1", &stats());
        assert_eq!(c.stats().unmatched_media, 1);

        // Shutdown: ended calls go now, calls in progress stay.
        let mut c = Collector::new(cfg);
        c.handle_event(clock(t0, s(0)), ev(t0, DialogEventKind::Started(start())));
        c.handle_event(
            clock(t0, s(1)),
            ev(
                t0 + s(1),
                DialogEventKind::Failed {
                    status: 486,
                    destinations: vec![],
                },
            ),
        );
        let mut live = ev(t0, DialogEventKind::Started(start()));
        live.call_id = "c2".into();
        c.handle_event(clock(t0, s(1)), live);
        c.flush_ended();
        assert_eq!(c.poll_record().map(|r| r.call_id), Some("c1".to_string()));
        assert!(c.poll_record().is_none());
        assert_eq!(c.open_calls(), 1);
    }

    #[test]
    fn same_call_id_again_finishes_the_earlier_attempt() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut c = Collector::new(CollectorConfig {
            media_wait: s(2),
            ..CollectorConfig::default()
        });
        c.handle_event(clock(t0, s(0)), ev(t0, DialogEventKind::Started(start())));
        c.handle_event(
            clock(t0, s(0)),
            ev(
                t0,
                DialogEventKind::Failed {
                    status: 407,
                    destinations: vec![],
                },
            ),
        );
        c.handle_event(
            clock(t0, s(1)),
            ev(t0 + s(1), DialogEventKind::Started(start())),
        );
        let first = c.poll_record().unwrap();
        assert_eq!(first.reason.as_deref(), Some("challenged"));
        assert_eq!(c.open_calls(), 1);
        // The first attempt's wait entry must not end the second one.
        c.handle_timeout(t0 + s(2));
        assert!(c.poll_record().is_none());
        assert_eq!(c.open_calls(), 1);
    }

    #[test]
    fn calls_that_never_end_are_written_as_lost_and_the_table_is_bounded() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut c = Collector::new(CollectorConfig {
            max_age: s(100),
            max_open: 1,
            ..CollectorConfig::default()
        });
        c.handle_event(clock(t0, s(0)), ev(t0, DialogEventKind::Started(start())));
        let mut other = ev(t0, DialogEventKind::Started(start()));
        other.call_id = "c2".into();
        c.handle_event(clock(t0, s(0)), other);
        assert_eq!(c.stats().not_followed, 1);
        c.handle_timeout(t0 + s(1));
        assert!(c.poll_record().is_none());
        // Bounded loop on a virtual clock.
        let mut now = t0 + s(1);
        for _ in 0..100 {
            let Some(next) = c.poll_timeout() else { break };
            now = next.max(now);
            c.handle_timeout(now);
            if c.open_calls() == 0 {
                break;
            }
        }
        let r = c.poll_record().unwrap();
        assert_eq!(r.reason.as_deref(), Some("lost"));
        assert_eq!(r.ended_at_ms, None);
        assert!(now >= t0 + s(100));
        assert_eq!(c.stats().lost, 1);
    }
}
