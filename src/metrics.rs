//! Prometheus metrics for `/metrics`. Recording stays lock-free (atomics
//! bumped from the media and detector threads); a scrape copies them into an
//! [`Exposition`], which `prometheus-client` writes as Prometheus text with
//! `# HELP`/`# TYPE` for every family and escaped label values.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{prometheus_text, DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// `Content-Type` of what [`Exposition::render`] writes (text format 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Bucket bounds (milliseconds) of added latency and queue wait: dense
/// around the live budget (tens of ms), up to the strict deadline and past it.
pub const LATENCY_BUCKETS_MS: [f64; 12] = [
    5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 80.0, 100.0, 150.0, 250.0, 500.0,
];

/// Bucket bounds of detector batch sizes (images per batch).
pub const BATCH_BUCKETS: [f64; 8] = [1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0];

/// A histogram over fixed upper bounds (`le`), recorded with atomics.
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

    /// The counts now, as plain numbers (a scrape, a status line).
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            bounds: self.bounds,
            counts: self.counts.iter().map(|c| c.load(Relaxed)).collect(),
            sum: self.sum_micro.load(Relaxed) as f64 / 1e6,
        }
    }
}

/// A histogram's counts at one moment.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    bounds: &'static [f64],
    /// Per bucket, not cumulative; the last is `+Inf`.
    counts: Vec<u64>,
    sum: f64,
}

impl Snapshot {
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// What was observed after `earlier` (a snapshot of the same histogram).
    pub fn since(&self, earlier: &Snapshot) -> Snapshot {
        let mut d = self.clone();
        if earlier.bounds == self.bounds {
            for (c, e) in d.counts.iter_mut().zip(&earlier.counts) {
                *c = c.saturating_sub(*e);
            }
            d.sum = (self.sum - earlier.sum).max(0.0);
        }
        d
    }

    /// Adds `other`'s counts (same bounds; others are ignored).
    pub fn merge(&mut self, other: &Snapshot) {
        if other.bounds == self.bounds {
            for (c, o) in self.counts.iter_mut().zip(&other.counts) {
                *c += o;
            }
            self.sum += other.sum;
        }
    }

    /// The `q` quantile (0..=1), interpolated linearly inside its bucket as
    /// Prometheus' `histogram_quantile` does (the first bucket starts at 0;
    /// one in `+Inf` answers the highest finite bound). `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut below = 0u64;
        for (i, &c) in self.counts.iter().enumerate() {
            if c > 0 && (below + c) as f64 >= rank {
                let Some(&hi) = self.bounds.get(i) else {
                    return self.bounds.last().copied();
                };
                let lo = if i == 0 { 0.0 } else { self.bounds[i - 1] };
                return Some(lo + (hi - lo) * ((rank - below as f64) / c as f64).max(0.0));
            }
            below += c;
        }
        self.bounds.last().copied()
    }
}

type Labels = Vec<(&'static str, String)>;

#[derive(Debug)]
enum Value {
    Counter(u64),
    Gauge(f64),
    Histogram(Snapshot),
}

#[derive(Debug)]
struct Family {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    samples: Vec<(Labels, Value)>,
}

/// Metric families copied from the atomics at scrape time; one `# HELP` and
/// `# TYPE` per family however many label sets (rooms) it has.
#[derive(Debug, Default)]
pub struct Exposition {
    families: Vec<Family>,
}

impl Exposition {
    /// A counter sample; `name` without `_total`, which the encoder adds.
    pub fn counter(
        &mut self,
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, &str)],
        v: u64,
    ) {
        self.push(name, help, MetricType::Counter, labels, Value::Counter(v));
    }

    pub fn gauge(
        &mut self,
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, &str)],
        v: f64,
    ) {
        self.push(name, help, MetricType::Gauge, labels, Value::Gauge(v));
    }

    pub fn histogram(
        &mut self,
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, &str)],
        h: &Histogram,
    ) {
        let v = Value::Histogram(h.snapshot());
        self.push(name, help, MetricType::Histogram, labels, v);
    }

    /// Adds `other`'s families (another component's metrics).
    pub fn append(&mut self, other: Exposition) {
        for f in other.families {
            for (labels, v) in f.samples {
                self.family(f.name, f.help, f.kind)
                    .samples
                    .push((labels, v));
            }
        }
    }

    fn push(
        &mut self,
        name: &'static str,
        help: &'static str,
        kind: MetricType,
        labels: &[(&'static str, &str)],
        v: Value,
    ) {
        let labels = labels.iter().map(|(k, v)| (*k, v.to_string())).collect();
        self.family(name, help, kind).samples.push((labels, v));
    }

    fn family(&mut self, name: &'static str, help: &'static str, kind: MetricType) -> &mut Family {
        debug_assert!(
            kind != MetricType::Counter || !name.ends_with("_total"),
            "{name}: the encoder adds _total"
        );
        let i = match self.families.iter().position(|f| f.name == name) {
            Some(i) => i,
            None => {
                self.families.push(Family {
                    name,
                    help,
                    kind,
                    samples: Vec::new(),
                });
                self.families.len() - 1
            }
        };
        debug_assert_eq!(self.families[i].kind, kind, "{name}: two types");
        &mut self.families[i]
    }

    /// Prometheus text (format 0.0.4, [`CONTENT_TYPE`]).
    pub fn render(self) -> Result<String, std::fmt::Error> {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self));
        let mut out = String::new();
        prometheus_text::encode(&mut out, &registry)?;
        Ok(out)
    }
}

impl Collector for Exposition {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for f in &self.families {
            let mut m = encoder.encode_descriptor(f.name, f.help, None, f.kind)?;
            for (labels, v) in &f.samples {
                let mut e = m.encode_family(labels)?;
                match v {
                    Value::Counter(c) => e.encode_counter::<NoLabelSet, _, u64>(c, None)?,
                    Value::Gauge(g) => e.encode_gauge(g)?,
                    Value::Histogram(h) => {
                        let buckets: Vec<(f64, u64)> = h
                            .bounds
                            .iter()
                            .copied()
                            .chain([f64::INFINITY])
                            .zip(h.counts.iter().copied())
                            .collect();
                        e.encode_histogram::<NoLabelSet>(h.sum, h.count(), &buckets, None)?
                    }
                }
            }
        }
        Ok(())
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
        let mut m = Exposition::default();
        m.histogram("x", "test", &[("room", "a")], &h);
        let text = m.render().unwrap();
        for line in [
            "# HELP x test",
            "# TYPE x histogram",
            "x_bucket{room=\"a\",le=\"1\"} 3",
            "x_bucket{room=\"a\",le=\"2\"} 4",
            "x_bucket{room=\"a\",le=\"4\"} 5",
            "x_bucket{room=\"a\",le=\"+Inf\"} 6",
            "x_count{room=\"a\"} 6",
            "x_sum{room=\"a\"} 15.0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
        assert_eq!(h.count(), 6);
    }

    #[test]
    fn one_help_and_type_per_family_and_no_empty_braces() {
        let h = Histogram::new(&BATCH_BUCKETS);
        h.observe(3.0);
        let mut m = Exposition::default();
        m.histogram("b", "batches", &[], &h);
        m.counter("c", "things", &[("room", "x")], 1);
        let mut other = Exposition::default();
        other.counter("c", "things", &[("room", "y")], 2);
        m.append(other);
        let text = m.render().unwrap();
        assert!(text.contains("b_bucket{le=\"3\"} 1\n"), "{text}");
        assert!(text.contains("b_count 1\n"), "{text}");
        assert!(!text.contains("{}"), "{text}");
        assert_eq!(text.matches("# TYPE c_total counter").count(), 1, "{text}");
        assert!(text.contains("c_total{room=\"y\"} 2\n"), "{text}");
    }

    #[test]
    fn quantile_interpolates_inside_the_bucket() {
        let h = Histogram::new(&[10.0, 20.0, 40.0]);
        assert_eq!(h.snapshot().quantile(0.95), None);
        // 10 in (0,10], 10 in (10,20]: the median is the first bucket's top,
        // p75 halfway through the second.
        for _ in 0..10 {
            h.observe(5.0);
            h.observe(15.0);
        }
        let s = h.snapshot();
        assert_eq!(s.quantile(0.5), Some(10.0));
        assert_eq!(s.quantile(0.75), Some(15.0));
        assert_eq!(s.quantile(0.25), Some(5.0));
        // Past the last bound: the highest finite bound.
        for _ in 0..100 {
            h.observe(1e3);
        }
        assert_eq!(h.snapshot().quantile(0.95), Some(40.0));
    }

    #[test]
    fn since_and_merge_give_an_interval_over_histograms() {
        let a = Histogram::new(&[10.0, 20.0]);
        let b = Histogram::new(&[10.0, 20.0]);
        a.observe(5.0);
        let before = a.snapshot();
        a.observe(15.0);
        b.observe(15.0);
        let mut d = a.snapshot().since(&before);
        assert_eq!(d.count(), 1);
        d.merge(&b.snapshot());
        assert_eq!(d.count(), 2);
        assert_eq!(d.quantile(0.5), Some(15.0));
    }
}
