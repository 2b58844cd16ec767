//! The worker's own metrics, in the Prometheus text format.
//!
//! Counters are plain atomics bumped once per batch, never per row, so they cost nothing
//! measurable on the hot path. Latency is the seed's definition: the time a row change
//! reached the sink's acknowledgement minus the time the server logged it (binlog event
//! timestamps have one-second resolution, so latencies below a second are coarse).

use stackwatch::http::{MetricKind, MetricsText};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Upper bounds (seconds) of the latency histogram buckets.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// A fixed-bucket histogram of seconds.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl LatencyHistogram {
    /// Records `n` observations of `seconds`.
    pub fn observe_n(&self, seconds: f64, n: u64) {
        let seconds = seconds.max(0.0);
        let i = LATENCY_BUCKETS
            .iter()
            .position(|&b| seconds <= b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[i].fetch_add(n, Relaxed);
        self.sum_micros
            .fetch_add((seconds * 1e6) as u64 * n, Relaxed);
        self.count.fetch_add(n, Relaxed);
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    /// The `q` quantile (0..=1), interpolated within its bucket; `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = q * total as f64;
        let mut seen = 0u64;
        for (i, &c) in counts.iter().enumerate() {
            if c > 0 && (seen + c) as f64 >= rank {
                let lower = if i == 0 { 0.0 } else { LATENCY_BUCKETS[i - 1] };
                let Some(&upper) = LATENCY_BUCKETS.get(i) else {
                    return Some(lower);
                };
                let within = ((rank - seen as f64) / c as f64).clamp(0.0, 1.0);
                return Some(lower + (upper - lower) * within);
            }
            seen += c;
        }
        LATENCY_BUCKETS.last().copied()
    }

    fn render(&self, name: &str, help: &str, out: &mut MetricsText) {
        out.family(name, MetricKind::Histogram, help);
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0;
        for (i, b) in LATENCY_BUCKETS.iter().enumerate() {
            cumulative += self.buckets[i].load(Relaxed);
            out.sample(&bucket, &[("le", &b.to_string())], cumulative);
        }
        cumulative += self.buckets[LATENCY_BUCKETS.len()].load(Relaxed);
        out.sample(&bucket, &[("le", "+Inf")], cumulative)
            .sample(
                &format!("{name}_sum"),
                &[],
                self.sum_micros.load(Relaxed) as f64 / 1e6,
            )
            .sample(&format!("{name}_count"), &[], self.count.load(Relaxed));
    }
}

/// Counters and gauges of one worker.
#[derive(Debug, Default)]
pub struct WorkerMetrics {
    /// Binlog events read from the source.
    pub binlog_events: AtomicU64,
    /// Row changes decoded.
    pub rows_decoded: AtomicU64,
    /// Row changes the sink acknowledged.
    pub rows_published: AtomicU64,
    /// Batches the sink acknowledged.
    pub batches_published: AtomicU64,
    /// Message bytes the sink acknowledged.
    pub bytes_published: AtomicU64,
    /// Events skipped under `--skip-unknown`.
    pub events_skipped: AtomicU64,
    /// Failed publish attempts (each retried).
    pub sink_errors: AtomicU64,
    /// Checkpoints written.
    pub checkpoints: AtomicU64,
    /// Row changes per second over the last second, as published.
    pub throughput: AtomicU64,
    /// Offset of the last checkpoint in its file.
    pub checkpoint_pos: AtomicU64,
    /// Publish latency (ack time minus event time).
    pub latency: LatencyHistogram,
}

impl WorkerMetrics {
    /// The metrics in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = MetricsText::new();
        for (name, help, v) in [
            (
                "binlog_streamer_binlog_events_total",
                "Binlog events read from the source.",
                &self.binlog_events,
            ),
            (
                "binlog_streamer_rows_decoded_total",
                "Row changes decoded.",
                &self.rows_decoded,
            ),
            (
                "binlog_streamer_events_published_total",
                "Row change messages acknowledged by the sink.",
                &self.rows_published,
            ),
            (
                "binlog_streamer_batches_published_total",
                "Batches acknowledged by the sink.",
                &self.batches_published,
            ),
            (
                "binlog_streamer_bytes_published_total",
                "Message bytes acknowledged by the sink.",
                &self.bytes_published,
            ),
            (
                "binlog_streamer_events_skipped_total",
                "Binlog events skipped by --skip-unknown.",
                &self.events_skipped,
            ),
            (
                "binlog_streamer_sink_errors_total",
                "Failed publish attempts (retried).",
                &self.sink_errors,
            ),
            (
                "binlog_streamer_checkpoints_total",
                "Checkpoints written after an acknowledged batch.",
                &self.checkpoints,
            ),
        ] {
            out.single(name, MetricKind::Counter, help, v.load(Relaxed));
        }
        out.single(
            "binlog_streamer_throughput_events_per_second",
            MetricKind::Gauge,
            "Messages published over the last second.",
            self.throughput.load(Relaxed),
        )
        .single(
            "binlog_streamer_checkpoint_position_bytes",
            MetricKind::Gauge,
            "Offset of the last checkpoint in its binlog file.",
            self.checkpoint_pos.load(Relaxed),
        );
        self.latency.render(
            "binlog_streamer_latency_seconds",
            "Time from the server logging a row change to the sink acknowledging it.",
            &mut out,
        );
        out.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_within_buckets() {
        let h = LatencyHistogram::default();
        assert_eq!(h.quantile(0.5), None);
        h.observe_n(0.2, 99);
        h.observe_n(20.0, 1);
        let p50 = h.quantile(0.5).unwrap();
        assert!((0.1..=0.25).contains(&p50), "{p50}");
        let p99 = h.quantile(0.99).unwrap();
        assert!(p99 <= 0.25, "{p99}");
        let p100 = h.quantile(1.0).unwrap();
        assert!((10.0..=30.0).contains(&p100), "{p100}");
    }

    #[test]
    fn render_is_prometheus_text() {
        let m = WorkerMetrics::default();
        m.rows_published.fetch_add(5, Relaxed);
        m.latency.observe_n(0.03, 5);
        let t = m.render();
        assert!(t.contains("binlog_streamer_events_published_total 5\n"));
        assert!(t.contains("binlog_streamer_latency_seconds_bucket{le=\"0.05\"} 5\n"));
        assert!(t.contains("binlog_streamer_latency_seconds_count 5\n"));
    }
}
