//! Lock-free Prometheus histograms for `/metrics`: fixed bucket bounds,
//! atomic counts, recorded from any thread (the media and detector
//! threads), rendered in the text exposition format.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Bucket bounds (milliseconds) of added latency and queue wait: dense
/// around the live budget (tens of ms), up to the strict deadline and past it.
pub const LATENCY_BUCKETS_MS: [f64; 12] = [
    5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 80.0, 100.0, 150.0, 250.0, 500.0,
];

/// Bucket bounds of detector batch sizes (images per batch).
pub const BATCH_BUCKETS: [f64; 8] = [1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0];

/// A cumulative histogram over fixed upper bounds (`le`).
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// One count per bound, plus the `+Inf` bucket; not cumulative here.
    counts: Vec<AtomicU64>,
    /// Sum of observed values, in millionths of the unit.
    sum_micro: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::latency_ms()
    }
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micro: AtomicU64::new(0),
        }
    }

    /// A latency histogram in milliseconds.
    pub fn latency_ms() -> Self {
        Self::new(&LATENCY_BUCKETS_MS)
    }

    pub fn observe(&self, v: f64) {
        let v = if v.is_finite() { v.max(0.0) } else { 0.0 };
        let i = self.bounds.partition_point(|b| *b < v);
        if let Some(c) = self.counts.get(i) {
            c.fetch_add(1, Relaxed);
        }
        self.sum_micro.fetch_add((v * 1e6) as u64, Relaxed);
    }

    pub fn observe_ms(&self, d: Duration) {
        self.observe(d.as_secs_f64() * 1e3);
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Relaxed)).sum()
    }

    /// `name_bucket{labels,le=..}` lines (cumulative), `_sum` and `_count`.
    /// `labels` is empty or `key="value",...` without braces.
    pub fn render(&self, name: &str, labels: &str) -> String {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut out = String::new();
        let mut acc = 0u64;
        for (i, c) in self.counts.iter().enumerate() {
            acc += c.load(Relaxed);
            let le = self
                .bounds
                .get(i)
                .map_or_else(|| "+Inf".to_string(), |b| b.to_string());
            out.push_str(&format!(
                "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {acc}\n"
            ));
        }
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        out.push_str(&format!(
            "{name}_sum{braces} {}\n{name}_count{braces} {acc}\n",
            self.sum_micro.load(Relaxed) as f64 / 1e6
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_le_is_inclusive() {
        let h = Histogram::new(&[1.0, 2.0, 4.0]);
        for v in [0.5, 1.0, 1.5, 3.0, 9.0, f64::NAN] {
            h.observe(v);
        }
        let text = h.render("x", "room=\"a\"");
        assert!(text.contains("x_bucket{room=\"a\",le=\"1\"} 3\n"), "{text}");
        assert!(text.contains("x_bucket{room=\"a\",le=\"2\"} 4\n"), "{text}");
        assert!(text.contains("x_bucket{room=\"a\",le=\"4\"} 5\n"), "{text}");
        assert!(
            text.contains("x_bucket{room=\"a\",le=\"+Inf\"} 6\n"),
            "{text}"
        );
        assert!(text.contains("x_count{room=\"a\"} 6\n"), "{text}");
        assert!(text.contains("x_sum{room=\"a\"} 15\n"), "{text}");
        assert_eq!(h.count(), 6);
    }

    #[test]
    fn unlabelled_render_has_no_empty_braces() {
        let h = Histogram::new(&BATCH_BUCKETS);
        h.observe(3.0);
        let text = h.render("b", "");
        assert!(text.contains("b_bucket{le=\"3\"} 1\n"), "{text}");
        assert!(text.contains("b_count 1\n"), "{text}");
        assert!(!text.contains("{}"), "{text}");
    }
}
