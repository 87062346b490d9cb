//! Rate-limited logging: under a flood, one warning per interval with the
//! count of what happened meanwhile, not one line per packet.

use std::time::{Duration, Instant};

/// Decides when an event is worth a log line.
#[derive(Debug, Clone)]
pub struct LogThrottle {
    every: Duration,
    next: Option<Instant>,
    suppressed: u64,
}

impl LogThrottle {
    /// At most one report per `every`.
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            next: None,
            suppressed: 0,
        }
    }

    /// One event at `now`: `Some(n)` when it should be logged, `n` being the
    /// events suppressed since the last report; `None` to stay quiet.
    pub fn event(&mut self, now: Instant) -> Option<u64> {
        if self.next.is_some_and(|n| now < n) {
            self.suppressed += 1;
            return None;
        }
        self.next = Some(now + self.every);
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_report_per_interval_with_the_count() {
        let t0 = Instant::now();
        let mut t = LogThrottle::new(Duration::from_secs(10));
        assert_eq!(t.event(t0), Some(0));
        for i in 1..=1000u64 {
            assert_eq!(t.event(t0 + Duration::from_millis(i)), None);
        }
        assert_eq!(t.event(t0 + Duration::from_secs(10)), Some(1000));
        assert_eq!(t.event(t0 + Duration::from_secs(11)), None);
        assert_eq!(t.event(t0 + Duration::from_secs(25)), Some(1));
    }
}
