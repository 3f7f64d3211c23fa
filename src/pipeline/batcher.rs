//! Continuous batcher shared by every stream's detect lane (sans-IO).
//!
//! When an execution context is free and frames are queued they go at once
//! (up to `max_batch`); frames accumulate into bigger batches only while every
//! context is busy. An idle detector never waits to fill a batch: that would
//! add latency and, on the CPU, gain nothing per image.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{ConfigError, PipelineError};

/// Environment variable of the seed that overrides [`BatcherConfig::max_batch`].
pub const ENV_BATCH_SIZE: &str = "BATCH_SIZE";
/// Environment variable of the seed that overrides [`BatcherConfig::max_wait`] (milliseconds).
pub const ENV_BATCH_MAX_WAIT_MS: &str = "BATCH_MAX_WAIT_MS";

/// Batching limits. In TOML: `max_batch`, `max_wait_ms`, `capacity`,
/// `contexts`, `max_per_stream`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatcherConfig {
    /// Most items in one batch (env `BATCH_SIZE`).
    pub max_batch: usize,
    /// How long a queued item may wait for a bigger batch while some context is
    /// free but others are busy (env `BATCH_MAX_WAIT_MS`). 0 = dispatch at once.
    #[serde(rename = "max_wait_ms", alias = "max_wait", with = "millis")]
    pub max_wait: Duration,
    /// Queue bound; a push beyond it is refused (backpressure).
    pub capacity: usize,
    /// Execution contexts, i.e. batches in flight at once.
    pub contexts: usize,
    /// Most frames of one stream in a batch (0 = no limit). Live streams: 1,
    /// so a backlog never puts a stream's frames behind each other in one
    /// batch (on the CPU a batch costs its images one after another: a big
    /// batch only adds latency). A file job, one stream with a window of
    /// frames in flight, lifts it.
    pub max_per_stream: usize,
}

impl Default for BatcherConfig {
    fn default() -> Self {
        BatcherConfig {
            max_batch: 8,
            max_wait: Duration::ZERO,
            capacity: 64,
            contexts: 2,
            max_per_stream: 1,
        }
    }
}

impl BatcherConfig {
    /// Applies the seed's env names (`BATCH_SIZE`, `BATCH_MAX_WAIT_MS`) read
    /// through `get`, so callers choose the source (process env, tests).
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(v) = get(ENV_BATCH_SIZE) {
            self.max_batch = parse_env(ENV_BATCH_SIZE, &v)?;
        }
        if let Some(v) = get(ENV_BATCH_MAX_WAIT_MS) {
            self.max_wait = Duration::from_millis(parse_env(ENV_BATCH_MAX_WAIT_MS, &v)?);
        }
        self.validate()
    }

    /// Zero batch size, capacity or contexts would stall every stream.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (key, v) in [
            ("max_batch", self.max_batch),
            ("capacity", self.capacity),
            ("contexts", self.contexts),
        ] {
            if v == 0 {
                return Err(ConfigError::Value {
                    key: key.to_string(),
                    value: "0".to_string(),
                    reason: "must be at least 1".to_string(),
                });
            }
        }
        Ok(())
    }
}

fn parse_env<N: std::str::FromStr>(key: &str, v: &str) -> Result<N, ConfigError>
where
    N::Err: std::fmt::Display,
{
    v.trim().parse().map_err(|e: N::Err| ConfigError::Value {
        key: key.to_string(),
        value: v.to_string(),
        reason: e.to_string(),
    })
}

/// Serde helper: a `Duration` written as integer milliseconds.
pub(crate) mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// An item with the time it entered the queue (for latency accounting).
#[derive(Clone, Debug, PartialEq)]
pub struct Queued<T> {
    pub item: T,
    pub enqueued: Instant,
    /// The stream it belongs to (`max_per_stream`).
    pub group: u64,
}

/// Items dispatched together to one execution context.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch<T> {
    pub id: u64,
    pub context: usize,
    pub items: Vec<Queued<T>>,
}

impl<T> Batch<T> {
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// The continuous batcher. Items leave in FIFO order; batches may complete in
/// any order.
#[derive(Debug)]
pub struct Batcher<T> {
    cfg: BatcherConfig,
    queue: VecDeque<Queued<T>>,
    /// Batch id running on each context, `None` when the context is free.
    running: Vec<Option<u64>>,
    next_id: u64,
}

impl<T> Batcher<T> {
    /// Zero limits are raised to 1 so a bad config degrades instead of stalling
    /// (use [`BatcherConfig::validate`] to reject them up front).
    pub fn new(mut cfg: BatcherConfig) -> Self {
        cfg.max_batch = cfg.max_batch.max(1);
        cfg.capacity = cfg.capacity.max(1);
        cfg.contexts = cfg.contexts.max(1);
        Batcher {
            queue: VecDeque::with_capacity(cfg.capacity),
            running: vec![None; cfg.contexts],
            next_id: 0,
            cfg,
        }
    }

    pub fn config(&self) -> &BatcherConfig {
        &self.cfg
    }

    /// Queues an item; `Err(item)` when the queue is full, so the caller can
    /// fail that frame closed rather than drop it silently.
    pub fn push(&mut self, now: Instant, item: T) -> Result<(), T> {
        self.push_grouped(now, 0, item)
    }

    /// [`Batcher::push`] for an item of stream `group`.
    pub fn push_grouped(&mut self, now: Instant, group: u64, item: T) -> Result<(), T> {
        if self.queue.len() >= self.cfg.capacity {
            return Err(item);
        }
        self.queue.push_back(Queued {
            item,
            enqueued: now,
            group,
        });
        Ok(())
    }

    /// Queue positions of the next batch: FIFO, at most `max_batch`, at most
    /// `max_per_stream` of one group (skipped items keep their place).
    fn selection(&self) -> Vec<usize> {
        let cap = self.cfg.max_per_stream;
        if cap == 0 {
            return (0..self.queue.len().min(self.cfg.max_batch)).collect();
        }
        let mut taken: Vec<(u64, usize)> = Vec::new();
        let mut picked = Vec::new();
        for (i, q) in self.queue.iter().enumerate() {
            if picked.len() == self.cfg.max_batch {
                break;
            }
            match taken.iter_mut().find(|(g, _)| *g == q.group) {
                Some((_, n)) if *n >= cap => continue,
                Some((_, n)) => *n += 1,
                None => taken.push((q.group, 1)),
            }
            picked.push(i);
        }
        picked
    }

    /// Next batch to run, if a context is free and the dispatch rule allows.
    /// Call repeatedly until `None`.
    pub fn poll_batch(&mut self, now: Instant) -> Option<Batch<T>> {
        let context = self.running.iter().position(Option::is_none)?;
        if !self.ready(now) {
            return None;
        }
        let picked = self.selection();
        let mut items = Vec::with_capacity(picked.len());
        for (removed, i) in picked.into_iter().enumerate() {
            if let Some(q) = self.queue.remove(i - removed) {
                items.push(q);
            }
        }
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        if let Some(slot) = self.running.get_mut(context) {
            *slot = Some(id);
        }
        Some(Batch { id, context, items })
    }

    /// Rule (a) all contexts idle, (b) a full batch is queued, or (c) the
    /// oldest item waited `max_wait`. Assumes a free context exists.
    fn ready(&self, now: Instant) -> bool {
        let Some(oldest) = self.queue.front() else {
            return false;
        };
        self.busy() == 0
            || self.selection().len() >= self.cfg.max_batch
            || now.saturating_duration_since(oldest.enqueued) >= self.cfg.max_wait
    }

    /// Frees the context running `batch_id`; false for an unknown or already
    /// completed id. Any order is accepted.
    pub fn complete(&mut self, batch_id: u64) -> bool {
        match self.running.iter_mut().find(|s| **s == Some(batch_id)) {
            Some(slot) => {
                *slot = None;
                true
            }
            None => false,
        }
    }

    /// When `poll_batch` will next have work without new input: the instant
    /// rule (c) fires, or the oldest item's enqueue time (already past) when
    /// a dispatch is possible now. `None` when nothing can be dispatched
    /// until a push or a `complete`.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.idle_contexts() == 0 {
            return None;
        }
        let oldest = self.queue.front()?.enqueued;
        if self.busy() == 0 || self.selection().len() >= self.cfg.max_batch {
            return Some(oldest);
        }
        oldest.checked_add(self.cfg.max_wait)
    }

    /// Items waiting for a context.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Contexts running a batch.
    pub fn busy(&self) -> usize {
        self.running.iter().filter(|s| s.is_some()).count()
    }

    pub fn idle_contexts(&self) -> usize {
        self.running.len() - self.busy()
    }

    /// Ids of the batches in flight (for a runner that must fail them on shutdown).
    pub fn in_flight(&self) -> impl Iterator<Item = u64> + '_ {
        self.running.iter().flatten().copied()
    }
}

/// Identifies a frame across all streams sharing the batcher.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Key {
    pub stream: u32,
    pub frame: u64,
    /// 0: the whole frame; `k > 0`: the frame's `k`-th second look (a
    /// zoomed crop, see `pipeline::zoom`).
    #[serde(default)]
    pub part: u8,
}

/// Pairs a batch's keys with the detector's per-item results; a count
/// mismatch is an error (never a silent misroute that could unmask a frame).
pub fn route<R>(keys: &[Key], results: Vec<R>) -> Result<Vec<(Key, R)>, PipelineError> {
    if keys.len() != results.len() {
        return Err(PipelineError::Other(format!(
            "detector returned {} results for a batch of {} frames",
            results.len(),
            keys.len()
        )));
    }
    Ok(keys.iter().copied().zip(results).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    fn cfg(max_batch: usize, wait_ms: u64, capacity: usize, contexts: usize) -> BatcherConfig {
        BatcherConfig {
            max_batch,
            max_wait: Duration::from_millis(wait_ms),
            capacity,
            contexts,
            max_per_stream: 0,
        }
    }

    fn ids(b: &Batch<u32>) -> Vec<u32> {
        b.items.iter().map(|q| q.item).collect()
    }

    #[test]
    fn defaults_match_design() {
        let c = BatcherConfig::default();
        assert_eq!(
            (
                c.max_batch,
                c.max_wait,
                c.capacity,
                c.contexts,
                c.max_per_stream
            ),
            (8, Duration::ZERO, 64, 2, 1)
        );
    }

    #[test]
    fn config_from_toml_and_env() {
        let c: BatcherConfig = toml::from_str("max_batch = 4\nmax_wait_ms = 30").unwrap();
        assert_eq!(c.max_batch, 4);
        assert_eq!(c.max_wait, Duration::from_millis(30));
        assert_eq!(c.capacity, 64);
        let mut c = BatcherConfig::default();
        c.apply_env(|k| match k {
            ENV_BATCH_SIZE => Some("16".into()),
            ENV_BATCH_MAX_WAIT_MS => Some("5".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!((c.max_batch, c.max_wait), (16, Duration::from_millis(5)));
        let mut c = BatcherConfig::default();
        assert!(c.apply_env(|_| Some("x".into())).is_err());
        assert!(c
            .apply_env(|k| (k == ENV_BATCH_SIZE).then(|| "0".into()))
            .is_err());
    }

    #[test]
    fn idle_detector_dispatches_single_item_at_once() {
        let t0 = Instant::now();
        let mut b = Batcher::new(cfg(8, 30, 64, 1));
        b.push(t0, 1u32).unwrap();
        let batch = b.poll_batch(t0).expect("idle detector must not wait");
        assert_eq!(ids(&batch), vec![1]);
        assert_eq!((b.busy(), b.queued(), b.idle_contexts()), (1, 0, 0));
    }

    #[test]
    fn busy_contexts_accumulate_then_take_up_to_max_batch() {
        let t0 = Instant::now();
        let mut b = Batcher::new(cfg(4, 0, 64, 1));
        b.push(t0, 0u32).unwrap();
        let first = b.poll_batch(t0).unwrap();
        for i in 1..=6 {
            b.push(t0, i).unwrap();
        }
        assert!(b.poll_batch(t0).is_none(), "no free context");
        assert_eq!(b.poll_timeout(), None);
        assert!(b.complete(first.id));
        let second = b.poll_batch(t0).unwrap();
        assert_eq!(ids(&second), vec![1, 2, 3, 4]);
        assert!(b.complete(second.id));
        let third = b.poll_batch(t0).unwrap();
        assert_eq!(ids(&third), vec![5, 6]);
        assert_eq!(b.queued(), 0);
    }

    #[test]
    fn max_wait_holds_a_free_context_while_another_is_busy() {
        let t0 = Instant::now();
        let wait = Duration::from_millis(10);
        let mut b = Batcher::new(cfg(4, 10, 64, 2));
        b.push(t0, 0u32).unwrap();
        let a = b.poll_batch(t0).unwrap();
        let t1 = t0 + Duration::from_millis(2);
        b.push(t1, 1).unwrap();
        b.push(t1, 2).unwrap();
        assert!(b.poll_batch(t1).is_none(), "waits for a bigger batch");
        assert_eq!(b.poll_timeout(), Some(t1 + wait));
        assert!(b.poll_batch(t1 + wait - Duration::from_millis(1)).is_none());
        let batch = b.poll_batch(t1 + wait).unwrap();
        assert_eq!(ids(&batch), vec![1, 2]);
        assert_ne!(batch.context, a.context);
        assert_eq!(b.busy(), 2);
    }

    #[test]
    fn full_batch_goes_before_max_wait() {
        let t0 = Instant::now();
        let mut b = Batcher::new(cfg(2, 1000, 64, 2));
        b.push(t0, 0u32).unwrap();
        b.poll_batch(t0).unwrap();
        b.push(t0, 1).unwrap();
        assert!(b.poll_batch(t0).is_none());
        b.push(t0, 2).unwrap();
        assert_eq!(b.poll_timeout(), Some(t0));
        assert_eq!(ids(&b.poll_batch(t0).unwrap()), vec![1, 2]);
    }

    #[test]
    fn capacity_backpressure_returns_the_item() {
        let t0 = Instant::now();
        let mut b = Batcher::new(cfg(8, 0, 2, 1));
        b.push(t0, 1u32).unwrap();
        b.push(t0, 2).unwrap();
        assert_eq!(b.push(t0, 3), Err(3));
        assert_eq!(b.queued(), 2);
        b.poll_batch(t0).unwrap();
        assert_eq!(b.push(t0, 4), Ok(()));
    }

    #[test]
    fn complete_in_any_order_and_unknown_ids() {
        let t0 = Instant::now();
        let mut b = Batcher::new(cfg(1, 0, 64, 3));
        for i in 0..3u32 {
            b.push(t0, i).unwrap();
        }
        let x: Vec<_> = std::iter::from_fn(|| b.poll_batch(t0)).collect();
        assert_eq!(x.len(), 3);
        assert_eq!(b.in_flight().count(), 3);
        assert!(!b.complete(999));
        assert!(b.complete(x[2].id));
        assert!(b.complete(x[0].id));
        assert!(!b.complete(x[0].id), "second complete of the same id");
        assert_eq!(b.busy(), 1);
        assert!(b.complete(x[1].id));
        assert_eq!(b.idle_contexts(), 3);
    }

    #[test]
    fn fifo_order_across_batches() {
        let t0 = Instant::now();
        let mut b = Batcher::new(cfg(3, 0, 64, 2));
        for i in 0..10u32 {
            b.push(t0, i).unwrap();
        }
        let mut out = Vec::new();
        while b.queued() > 0 {
            while let Some(batch) = b.poll_batch(t0) {
                out.extend(ids(&batch));
                b.complete(batch.id);
            }
        }
        assert_eq!(out, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn route_pairs_and_rejects_mismatch() {
        let keys = [
            Key {
                stream: 1,
                frame: 7,
                part: 0,
            },
            Key {
                stream: 2,
                frame: 3,
                part: 0,
            },
        ];
        let r = route(&keys, vec!["a", "b"]).unwrap();
        assert_eq!(r, vec![(keys[0], "a"), (keys[1], "b")]);
        assert!(route(&keys, vec!["a"]).is_err());
        assert!(route(&keys, vec!["a", "b", "c"]).is_err());
    }

    #[test]
    fn one_frame_per_stream_per_batch() {
        let t = Instant::now();
        let mut b = Batcher::new(BatcherConfig {
            max_per_stream: 1,
            ..cfg(4, 0, 16, 1)
        });
        // Stream 1 has a backlog of three; streams 2 and 3 one frame each.
        for (group, item) in [(1, 10), (1, 11), (2, 20), (1, 12), (3, 30)] {
            b.push_grouped(t, group, item).unwrap();
        }
        let first = b.poll_batch(t).unwrap();
        assert_eq!(ids(&first), vec![10, 20, 30]);
        assert!(first.items.iter().all(|q| q.enqueued == t));
        assert!(b.poll_batch(t).is_none(), "one context, busy");
        assert!(b.complete(first.id));
        assert_eq!(ids(&b.poll_batch(t).unwrap()), vec![11]);
        // No limit: FIFO up to max_batch, as before.
        let mut b = Batcher::new(cfg(4, 0, 16, 1));
        for (group, item) in [(1, 10), (1, 11), (2, 20), (1, 12), (3, 30)] {
            b.push_grouped(t, group, item).unwrap();
        }
        assert_eq!(ids(&b.poll_batch(t).unwrap()), vec![10, 11, 20, 12]);
    }

    proptest! {
        /// With a per-stream limit: nothing lost or duplicated, every batch
        /// within both limits, each stream's frames in order.
        #[test]
        fn per_stream_limit_holds(
            max_batch in 1usize..6,
            cap in 1usize..3,
            contexts in 1usize..3,
            groups in proptest::collection::vec(0u64..4, 1..60),
            completes in proptest::collection::vec(any::<bool>(), 60),
        ) {
            let t = Instant::now();
            let mut b = Batcher::new(BatcherConfig {
                max_per_stream: cap,
                ..cfg(max_batch, 0, 64, contexts)
            });
            let mut out: Vec<(u64, u32)> = Vec::new();
            let mut running = Vec::new();
            let take = |b: &mut Batcher<u32>, running: &mut Vec<u64>, out: &mut Vec<(u64, u32)>| {
                while let Some(batch) = b.poll_batch(t) {
                    prop_assert!(!batch.is_empty() && batch.len() <= max_batch);
                    for g in 0..4 {
                        let n = batch.items.iter().filter(|q| q.group == g).count();
                        prop_assert!(n <= cap, "{} frames of stream {} in one batch", n, g);
                    }
                    out.extend(batch.items.iter().map(|q| (q.group, q.item)));
                    running.push(batch.id);
                }
                Ok(())
            };
            for (i, &g) in groups.iter().enumerate() {
                b.push_grouped(t, g, i as u32).unwrap();
                if completes[i] && !running.is_empty() {
                    let id = running.remove(0);
                    prop_assert!(b.complete(id));
                }
                take(&mut b, &mut running, &mut out)?;
            }
            while !running.is_empty() || b.queued() > 0 {
                for id in running.drain(..) {
                    prop_assert!(b.complete(id));
                }
                take(&mut b, &mut running, &mut out)?;
            }
            prop_assert_eq!(out.len(), groups.len());
            for g in 0..4 {
                let mine: Vec<u32> = out.iter().filter(|(h, _)| *h == g).map(|p| p.1).collect();
                let want: Vec<u32> = groups.iter().enumerate()
                    .filter(|(_, h)| **h == g).map(|(i, _)| i as u32).collect();
                prop_assert_eq!(mine, want);
            }
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        Push,
        Complete(usize),
        Advance(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => Just(Op::Push),
            2 => (0usize..8).prop_map(Op::Complete),
            1 => (0u64..20).prop_map(Op::Advance),
        ]
    }

    proptest! {
        #[test]
        fn no_loss_no_dup_limits_hold(
            max_batch in 1usize..6,
            wait_ms in 0u64..15,
            capacity in 1usize..20,
            contexts in 1usize..4,
            ops in proptest::collection::vec(op(), 1..200),
        ) {
            let t0 = Instant::now();
            let mut now = t0;
            let mut b = Batcher::new(cfg(max_batch, wait_ms, capacity, contexts));
            let mut next = 0u32;
            let mut accepted = Vec::new();
            let mut seen = HashSet::new();
            let mut dispatched = Vec::new();
            let mut running: Vec<u64> = Vec::new();
            let drain = |b: &mut Batcher<u32>, now, running: &mut Vec<u64>,
                             dispatched: &mut Vec<u32>, seen: &mut HashSet<u32>| {
                while let Some(batch) = b.poll_batch(now) {
                    prop_assert!(!batch.is_empty() && batch.len() <= max_batch);
                    for q in &batch.items {
                        prop_assert!(seen.insert(q.item), "duplicate {}", q.item);
                        dispatched.push(q.item);
                    }
                    running.push(batch.id);
                    prop_assert!(b.busy() <= contexts);
                }
                if b.busy() == 0 {
                    prop_assert_eq!(b.queued(), 0);
                }
                if let Some(t) = b.poll_timeout() {
                    prop_assert!(t > now, "poll_timeout due but poll_batch returned None");
                }
                Ok(())
            };
            for op in ops {
                match op {
                    Op::Push => {
                        match b.push(now, next) {
                            Ok(()) => accepted.push(next),
                            Err(v) => prop_assert_eq!(v, next),
                        }
                        next += 1;
                    }
                    Op::Complete(i) => {
                        if !running.is_empty() {
                            let id = running.remove(i % running.len());
                            prop_assert!(b.complete(id));
                        }
                    }
                    Op::Advance(ms) => now += Duration::from_millis(ms),
                }
                drain(&mut b, now, &mut running, &mut dispatched, &mut seen)?;
            }
            // Finish: complete everything and let time pass until empty.
            while !running.is_empty() || b.queued() > 0 {
                for id in running.drain(..) {
                    prop_assert!(b.complete(id));
                }
                now += Duration::from_millis(wait_ms);
                drain(&mut b, now, &mut running, &mut dispatched, &mut seen)?;
            }
            prop_assert_eq!(dispatched, accepted, "FIFO, nothing lost");
        }
    }
}
