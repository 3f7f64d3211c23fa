//! What the service counts (batches, images, batch sizes, queue wait) and
//! how it is exposed: the [`ServiceStats`] the bench report reads and the
//! Prometheus families of `/metrics`. Workers record; readers never lock
//! the batcher.

use super::DetectService;
use crate::metrics::{Exposition, Histogram, BATCH_BUCKETS};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Counters for `/metrics` and the bench report.
#[derive(Clone, Copy, Debug, Default)]
pub struct ServiceStats {
    pub batches: u64,
    pub images: u64,
}

/// The service's counters, shared by its workers.
pub(super) struct Counters {
    batches: AtomicU64,
    images: AtomicU64,
    batch_sizes: Histogram,
    queue_wait: Histogram,
}

impl Counters {
    pub(super) fn new() -> Counters {
        Counters {
            batches: AtomicU64::new(0),
            images: AtomicU64::new(0),
            batch_sizes: Histogram::new(&BATCH_BUCKETS),
            queue_wait: Histogram::latency_ms(),
        }
    }

    /// One batch of `images` inferred; `waits` is each image's time in the
    /// queue.
    pub(super) fn record_batch(&self, images: usize, waits: impl Iterator<Item = Duration>) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.images.fetch_add(images as u64, Ordering::Relaxed);
        self.batch_sizes.observe(images as f64);
        for w in waits {
            self.queue_wait.observe_ms(w);
        }
    }
}

impl DetectService {
    pub fn stats(&self) -> ServiceStats {
        let c = &self.shared.counters;
        ServiceStats {
            batches: c.batches.load(Ordering::Relaxed),
            images: c.images.load(Ordering::Relaxed),
        }
    }

    /// Prometheus families: batches, images, batch sizes and queue wait.
    pub fn metrics(&self) -> Exposition {
        let st = self.stats();
        let c = &self.shared.counters;
        let mut m = Exposition::default();
        m.counter(
            "livecensor_detector_batches",
            "Detector batches run",
            &[],
            st.batches,
        );
        m.counter(
            "livecensor_detector_images",
            "Images detected",
            &[],
            st.images,
        );
        m.histogram(
            "livecensor_detector_batch_size",
            "Images per detector batch",
            &[],
            &c.batch_sizes,
        );
        m.histogram(
            "livecensor_detector_queue_wait_ms",
            "Wait of a frame in the detector queue",
            &[],
            &c.queue_wait,
        );
        m
    }
}
