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
    /// Test-only faults: batches stalled, batches failed, and the frames in
    /// those batches.
    pub stalled_batches: u64,
    pub failed_batches: u64,
    pub faulted_frames: u64,
    /// Time spent inferring, summed over the contexts, microseconds (the
    /// worker's detector busy share).
    pub busy_us: u64,
    /// Inference contexts running in parallel.
    pub contexts: usize,
    /// One image's inference time measured at start (the slowest
    /// context's), microseconds; 0 when not measured.
    pub image_us: u64,
}

/// The service's counters, shared by its workers.
pub(super) struct Counters {
    batches: AtomicU64,
    images: AtomicU64,
    batch_sizes: Histogram,
    queue_wait: Histogram,
    stalled: AtomicU64,
    failed: AtomicU64,
    faulted_frames: AtomicU64,
    busy_us: AtomicU64,
    image_us: AtomicU64,
}

impl Counters {
    pub(super) fn new() -> Counters {
        Counters {
            batches: AtomicU64::new(0),
            images: AtomicU64::new(0),
            batch_sizes: Histogram::new(&BATCH_BUCKETS),
            queue_wait: Histogram::latency_ms(),
            stalled: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            faulted_frames: AtomicU64::new(0),
            busy_us: AtomicU64::new(0),
            image_us: AtomicU64::new(0),
        }
    }

    /// A context's per-image time measured at warm-up; the slowest counts.
    pub(super) fn record_image_time(&self, t: Duration) {
        self.image_us
            .fetch_max(t.as_micros().max(1) as u64, Ordering::Relaxed);
    }

    /// A test-only fault hit a batch of `frames`.
    pub(super) fn record_fault(&self, fault: &super::fault::FaultAction, frames: usize) {
        if !fault.stall.is_zero() {
            self.stalled.fetch_add(1, Ordering::Relaxed);
        }
        if fault.fail {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        self.faulted_frames
            .fetch_add(frames as u64, Ordering::Relaxed);
    }

    /// One batch of `images` inferred in `busy`; `waits` is each image's
    /// time in the queue.
    pub(super) fn record_batch(
        &self,
        images: usize,
        busy: Duration,
        waits: impl Iterator<Item = Duration>,
    ) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.busy_us
            .fetch_add(busy.as_micros() as u64, Ordering::Relaxed);
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
            stalled_batches: c.stalled.load(Ordering::Relaxed),
            failed_batches: c.failed.load(Ordering::Relaxed),
            faulted_frames: c.faulted_frames.load(Ordering::Relaxed),
            busy_us: c.busy_us.load(Ordering::Relaxed),
            contexts: self.workers.len(),
            image_us: c.image_us.load(Ordering::Relaxed),
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
        if self.shared.faults.is_active() {
            for (kind, v) in [("stall", st.stalled_batches), ("fail", st.failed_batches)] {
                m.counter(
                    "livecensor_detector_faults_injected",
                    "Detector batches hit by an injected fault (tests), per kind",
                    &[("kind", kind)],
                    v,
                );
            }
            m.counter(
                "livecensor_detector_faulted_frames",
                "Frames in detector batches hit by an injected fault (tests)",
                &[],
                st.faulted_frames,
            );
        }
        m
    }
}
