//! CPU time and resident memory of the system under test, from `/proc`.

use std::fs;

/// Clock ticks per second of `/proc/<pid>/stat` times (USER_HZ, 100 on every
/// Linux architecture we run on).
pub const TICKS_PER_SECOND: u64 = 100;

/// One reading of a process tree.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Sample {
    /// utime + stime of the processes (all threads), in clock ticks.
    pub cpu_ticks: u64,
    /// VmRSS summed over the processes, in KiB.
    pub rss_kib: u64,
}

impl Sample {
    /// CPU seconds.
    pub fn cpu_seconds(&self) -> f64 {
        self.cpu_ticks as f64 / TICKS_PER_SECOND as f64
    }
}

/// utime + stime from the text of `/proc/<pid>/stat`.
pub fn parse_stat_ticks(stat: &str) -> Option<u64> {
    // comm may hold spaces and ')'; the fields after the last ')' are fixed.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// VmRSS in KiB from the text of `/proc/<pid>/status`.
pub fn parse_status_rss(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn descendants(pid: u32, out: &mut Vec<u32>) {
    out.push(pid);
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return;
    };
    for t in tasks.flatten() {
        if let Ok(children) = fs::read_to_string(t.path().join("children")) {
            for c in children.split_whitespace().filter_map(|c| c.parse().ok()) {
                if out.len() < 4096 && !out.contains(&c) {
                    descendants(c, out);
                }
            }
        }
    }
}

/// Reads `pid` and its descendants (Kamailio forks its workers); `None`
/// when `pid` is gone.
pub fn sample(pid: u32) -> Option<Sample> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_ticks(&stat)?;
    let mut pids = Vec::new();
    descendants(pid, &mut pids);
    let mut s = Sample::default();
    for p in pids {
        if let Ok(stat) = fs::read_to_string(format!("/proc/{p}/stat")) {
            s.cpu_ticks += parse_stat_ticks(&stat).unwrap_or(0);
        }
        if let Ok(status) = fs::read_to_string(format!("/proc/{p}/status")) {
            s.rss_kib += parse_status_rss(&status).unwrap_or(0);
        }
    }
    Some(s)
}

/// Sums the samples of several process trees; `None` when any is gone.
pub fn sample_all(pids: &[u32]) -> Option<Sample> {
    let mut total = Sample::default();
    for &p in pids {
        let s = sample(p)?;
        total.cpu_ticks += s.cpu_ticks;
        total.rss_kib += s.rss_kib;
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_awkward_comm() {
        let stat = "1234 (a b) c) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 17 0 0 20 0 1 0 9 1 1";
        assert_eq!(parse_stat_ticks(stat), Some(267));
        assert_eq!(parse_stat_ticks("garbage"), None);
    }

    #[test]
    fn parses_rss() {
        assert_eq!(
            parse_status_rss("Name:\tx\nVmRSS:\t  47012 kB\n"),
            Some(47012)
        );
        assert_eq!(parse_status_rss("Name:\tx\n"), None);
    }

    #[test]
    fn samples_this_process() {
        let s = sample(std::process::id()).unwrap();
        assert!(s.rss_kib > 0);
        assert!(sample(u32::MAX).is_none());
    }
}
