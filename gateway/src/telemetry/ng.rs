//! The ng round-trip latency histogram. The ng client already keeps one
//! per instance and command with fixed buckets; OpenTelemetry has no
//! observable histogram, so this collector hands the client's buckets to
//! the Prometheus registry as they are (Prometheus only; OTLP gets the ng
//! counters).

use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Bucket, Histogram, LabelPair, Metric, MetricFamily, MetricType};

use super::MetricSources;

/// Name of the histogram.
pub const NG_LATENCY: &str = "rtcgate_ng_latency_seconds";

/// Its help text.
const HELP: &str = "ng round-trip latency (first send to reply), by rtpengine instance and command";

pub(super) struct NgLatency {
    sources: Arc<MetricSources>,
    desc: Desc,
}

impl NgLatency {
    pub(super) fn new(sources: Arc<MetricSources>) -> Result<Self, prometheus::Error> {
        let desc = Desc::new(
            NG_LATENCY.to_owned(),
            HELP.to_owned(),
            vec!["command".to_owned(), "rtpengine".to_owned()],
            Default::default(),
        )?;
        Ok(Self { sources, desc })
    }
}

fn label(name: &str, value: String) -> LabelPair {
    let mut l = LabelPair::default();
    l.set_name(name.to_owned());
    l.set_value(value);
    l
}

impl Collector for NgLatency {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let rows = self.sources.cache().ng.commands.clone();
        if rows.is_empty() {
            return Vec::new();
        }
        let mut metrics = Vec::with_capacity(rows.len());
        for row in rows {
            let h = &row.stats.latency;
            let mut cumulative = 0;
            let buckets = ngclient::metrics::BUCKETS_US
                .iter()
                .zip(h.buckets)
                .map(|(bound, n)| {
                    cumulative += n;
                    let mut b = Bucket::default();
                    b.set_upper_bound(*bound as f64 / 1e6);
                    b.set_cumulative_count(cumulative);
                    b
                })
                .collect();
            let mut hist = Histogram::default();
            hist.set_sample_count(h.count);
            hist.set_sample_sum(h.sum_us as f64 / 1e6);
            hist.set_bucket(buckets);
            let mut m = Metric::default();
            m.set_label(vec![
                label("command", row.command.clone()),
                label("rtpengine", row.addr.to_string()),
            ]);
            m.set_histogram(hist);
            metrics.push(m);
        }
        let mut family = MetricFamily::default();
        family.set_name(NG_LATENCY.to_owned());
        family.set_help(HELP.to_owned());
        family.set_field_type(MetricType::HISTOGRAM);
        family.set_metric(metrics);
        vec![family]
    }
}
