//! The end-of-run report: text, JSON and an SVG chart of the run over time.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;
use serde::Serialize;

use crate::stats::Latency;

/// A named line of (t, value) points in a colour.
type Line<'a> = (&'a str, Vec<(f64, f64)>, RGBColor);
/// A chart panel: title, y-axis label, lines.
type Panel<'a> = (&'a str, &'a str, Vec<Line<'a>>);

/// One point of the per-second timeline.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Point {
    /// Seconds since the start.
    pub t_s: f64,
    /// Open connections.
    pub connected: u64,
    /// Successful registrations so far.
    pub registered: u64,
    /// Calls answered so far.
    pub calls_answered: u64,
    /// Calls failed so far.
    pub calls_failed: u64,
    /// Calls up at this moment.
    pub calls_active: u64,
    /// Resident memory of the measured processes, KiB.
    pub target_rss_kib: u64,
    /// CPU use of the measured processes over the last interval, % of one core.
    pub target_cpu_pct: f64,
}

/// Figures about the system under test, from `/proc`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Target {
    /// The measured process ids (each with its descendants).
    pub pids: Vec<u32>,
    /// Resident memory before the first connection, KiB.
    pub rss_before_kib: u64,
    /// Resident memory with every connection open and registered, KiB.
    pub rss_connected_kib: u64,
    /// Resident memory at the end of the idle phase, KiB.
    pub rss_idle_kib: u64,
    /// (connected − before) / connections, bytes.
    pub rss_per_connection_bytes: f64,
    /// CPU seconds spent while connecting and registering.
    pub cpu_s_register_phase: f64,
    /// Of those, per 1000 registrations (includes the TLS handshakes).
    pub cpu_s_per_1000_registrations: f64,
    /// CPU seconds spent during the call phase.
    pub cpu_s_call_phase: f64,
    /// Per 1000 answered calls.
    pub cpu_s_per_1000_calls: f64,
}

/// Everything a run measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// The command line's essentials, for the record.
    pub settings: BTreeMap<String, String>,
    /// Whole run, seconds.
    pub duration_s: f64,
    /// Connections opened.
    pub connections: u64,
    /// Connections that could not be opened.
    pub connect_failed: u64,
    /// Connections that closed on us.
    pub dropped: u64,
    /// REGISTERs answered 200.
    pub registrations_ok: u64,
    /// REGISTERs that failed.
    pub registrations_failed: u64,
    /// Successful registrations per second over the connect phase.
    pub registrations_per_s: f64,
    /// First REGISTER sent to 200, including the challenge round trip.
    pub register_latency: Latency,
    /// Calls started.
    pub calls_attempted: u64,
    /// Calls answered.
    pub calls_answered: u64,
    /// Calls whose BYE got its 200 (including ones the far end hung up).
    pub calls_completed: u64,
    /// Calls that failed.
    pub calls_failed: u64,
    /// Calls not started because every connection was busy.
    pub calls_skipped: u64,
    /// Calls received from the far end and answered.
    pub calls_received: u64,
    /// Failures by status code or reason.
    pub failed_by: BTreeMap<String, u64>,
    /// The first detailed message of each failure reason.
    pub failure_examples: BTreeMap<String, String>,
    /// Calls per second asked for.
    pub call_rate_target: f64,
    /// Calls started per second, measured.
    pub call_rate_achieved: f64,
    /// First INVITE sent to 200 received, including the 407 round trip.
    pub setup_latency: Latency,
    /// The system under test, when `--target-pid` was given.
    pub target: Option<Target>,
    /// Per-second timeline.
    pub timeline: Vec<Point>,
}

impl Report {
    /// Whether nothing failed.
    pub fn clean(&self) -> bool {
        self.connect_failed == 0
            && self.dropped == 0
            && self.registrations_failed == 0
            && self.calls_failed == 0
            && self.calls_skipped == 0
    }

    /// The human-readable summary.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let l = |x: &Latency| {
            format!(
                "p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms (n={})",
                x.p50_ms, x.p90_ms, x.p99_ms, x.max_ms, x.n
            )
        };
        let _ = writeln!(s, "run: {:.1} s", self.duration_s);
        let _ = writeln!(
            s,
            "connections: {} open, {} failed, {} dropped",
            self.connections, self.connect_failed, self.dropped
        );
        let _ = writeln!(
            s,
            "registrations: {} ok, {} failed, {:.0}/s; {}",
            self.registrations_ok,
            self.registrations_failed,
            self.registrations_per_s,
            l(&self.register_latency)
        );
        let _ = writeln!(
            s,
            "calls: {} attempted, {} answered, {} completed, {} failed, {} skipped (no idle connection), {} received; rate {:.1}/s of {:.1}/s",
            self.calls_attempted,
            self.calls_answered,
            self.calls_completed,
            self.calls_failed,
            self.calls_skipped,
            self.calls_received,
            self.call_rate_achieved,
            self.call_rate_target
        );
        if !self.failed_by.is_empty() {
            let f: Vec<String> = self
                .failed_by
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect();
            let _ = writeln!(s, "failed by: {}", f.join(", "));
            for (k, v) in &self.failure_examples {
                let _ = writeln!(s, "  first {k}: {v}");
            }
        }
        let _ = writeln!(s, "call setup: {}", l(&self.setup_latency));
        if let Some(t) = &self.target {
            let _ = writeln!(
                s,
                "target {:?}: RSS {} KiB before, {} KiB connected, {} KiB after idle = {:.0} bytes per connection",
                t.pids,
                t.rss_before_kib,
                t.rss_connected_kib,
                t.rss_idle_kib,
                t.rss_per_connection_bytes
            );
            let _ = writeln!(
                s,
                "target CPU: {:.2} s connecting+registering ({:.2} s per 1000 registrations), {:.2} s in calls ({:.2} s per 1000 calls)",
                t.cpu_s_register_phase,
                t.cpu_s_per_1000_registrations,
                t.cpu_s_call_phase,
                t.cpu_s_per_1000_calls
            );
        }
        s
    }

    /// Writes the JSON report.
    pub fn write_json(&self, path: &Path) -> std::io::Result<()> {
        let json = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(path, json)
    }

    /// Draws the timeline as an SVG: connections, calls, the target's
    /// memory and CPU.
    pub fn write_chart(&self, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::new(path, (900, 900)).into_drawing_area();
        root.fill(&WHITE)?;
        let panels = root.split_evenly((3, 1));
        let t_max = self.timeline.last().map(|p| p.t_s).unwrap_or(1.0).max(1.0);
        let series = |f: &dyn Fn(&Point) -> f64| -> Vec<(f64, f64)> {
            self.timeline.iter().map(|p| (p.t_s, f(p))).collect()
        };
        let ymax = |v: &[&Vec<(f64, f64)>]| {
            v.iter()
                .flat_map(|s| s.iter().map(|p| p.1))
                .fold(1.0f64, f64::max)
                * 1.1
        };
        let mut answered_rate = Vec::new();
        for w in self.timeline.windows(2) {
            let dt = (w[1].t_s - w[0].t_s).max(1e-3);
            answered_rate.push((
                w[1].t_s,
                (w[1].calls_answered - w[0].calls_answered.min(w[1].calls_answered)) as f64 / dt,
            ));
        }
        let charts: [Panel; 3] = [
            (
                "connections",
                "count",
                vec![
                    ("connected", series(&|p| p.connected as f64), BLUE),
                    ("registered", series(&|p| p.registered as f64), GREEN),
                ],
            ),
            (
                "calls",
                "calls / calls per s",
                vec![
                    ("active", series(&|p| p.calls_active as f64), BLUE),
                    ("answered per s", answered_rate, GREEN),
                    ("failed (total)", series(&|p| p.calls_failed as f64), RED),
                ],
            ),
            (
                "system under test",
                "MiB / % of a core",
                vec![
                    (
                        "RSS MiB",
                        series(&|p| p.target_rss_kib as f64 / 1024.0),
                        BLUE,
                    ),
                    ("CPU %", series(&|p| p.target_cpu_pct), RED),
                ],
            ),
        ];
        for (area, (title, ylabel, lines)) in panels.iter().zip(charts.iter()) {
            let refs: Vec<&Vec<(f64, f64)>> = lines.iter().map(|l| &l.1).collect();
            let mut chart = ChartBuilder::on(area)
                .caption(*title, ("sans-serif", 18))
                .margin(10)
                .x_label_area_size(30)
                .y_label_area_size(60)
                .build_cartesian_2d(0.0..t_max, 0.0..ymax(&refs))?;
            chart
                .configure_mesh()
                .x_desc("seconds")
                .y_desc(*ylabel)
                .draw()?;
            for (name, data, color) in lines {
                let c = *color;
                chart
                    .draw_series(LineSeries::new(data.iter().copied(), c))?
                    .label(*name)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c));
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()?;
        }
        root.present()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_json_and_chart() {
        let mut r = Report {
            connections: 2,
            registrations_ok: 2,
            calls_attempted: 1,
            calls_answered: 1,
            ..Default::default()
        };
        r.failed_by.insert("503".into(), 1);
        r.calls_failed = 1;
        for i in 0..5 {
            r.timeline.push(Point {
                t_s: i as f64,
                connected: 2,
                calls_answered: i,
                target_rss_kib: 1000 + i * 10,
                ..Default::default()
            });
        }
        r.target = Some(Target::default());
        assert!(!r.clean());
        let t = r.text();
        assert!(t.contains("503: 1"), "{t}");
        let dir = std::env::temp_dir().join(format!("rtcgate-load-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        r.write_json(&dir.join("r.json")).unwrap();
        let back: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("r.json")).unwrap()).unwrap();
        assert_eq!(back["failed_by"]["503"], 1);
        r.write_chart(&dir.join("r.svg")).unwrap();
        let svg = std::fs::read_to_string(dir.join("r.svg")).unwrap();
        assert!(svg.contains("<svg") && svg.contains("polyline"), "{svg}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
