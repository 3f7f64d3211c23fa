//! The detect lane's threads: one worker per execution context pulls batches
//! from the shared sans-IO [`Batcher`] and routes results back to each
//! stream's channel by (stream, frame). Every stream of the process shares it.

use super::batcher::{Batcher, BatcherConfig, Key};
use crate::detect::{Detector, Letterbox};
use crate::error::DetectError;
use crate::frame::Detection;
use crate::metrics::{Histogram, BATCH_BUCKETS};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Anything that turns a batch of prepared tensors into detections.
pub trait DetectBackend: Send {
    /// Side of the square input tensor.
    fn input_size(&self) -> usize;
    /// Runs one batch (`batch` images laid out NCHW one after another).
    fn detect(
        &mut self,
        tensors: &[f32],
        batch: usize,
        letterboxes: &[Letterbox],
    ) -> Result<Vec<Vec<Detection>>, DetectError>;
}

impl DetectBackend for Detector {
    fn input_size(&self) -> usize {
        Detector::input_size(self)
    }

    fn detect(
        &mut self,
        tensors: &[f32],
        batch: usize,
        letterboxes: &[Letterbox],
    ) -> Result<Vec<Vec<Detection>>, DetectError> {
        Detector::detect(self, tensors, batch, letterboxes)
    }
}

/// Runs every batch size from 1 to `max_batch` once on a blank input. A
/// failure here is not fatal: the same error comes back on the first job.
fn warm_up(backend: &mut dyn DetectBackend, max_batch: usize, input: &mut Vec<f32>) {
    let size = backend.input_size();
    let lb = Letterbox::new(size, size, size);
    for n in 1..=max_batch {
        input.clear();
        input.resize(n * 3 * size * size, 0.5);
        if let Err(e) = backend.detect(input, n, &vec![lb; n]) {
            tracing::warn!("detector warm-up at batch {n}: {e}");
            return;
        }
    }
}

/// One frame's detection, as it comes back to its stream.
#[derive(Debug)]
pub struct Completion {
    pub key: Key,
    pub result: Result<Vec<Detection>, String>,
    /// Time from submit to the batch starting.
    pub queue_wait: Duration,
    /// Inference time of the whole batch.
    pub infer: Duration,
    pub batch_size: usize,
}

struct Job {
    key: Key,
    /// After this the frame has been censored whole: inferring it would
    /// only delay frames that can still be verified.
    expires: Instant,
    tensor: Vec<f32>,
    letterbox: Letterbox,
    reply: Sender<Completion>,
}

struct State {
    batcher: Batcher<Job>,
    shutdown: bool,
}

struct Shared {
    state: Mutex<State>,
    cv: Condvar,
    batches: AtomicU64,
    images: AtomicU64,
    batch_sizes: Histogram,
    queue_wait: Histogram,
}

/// Counters for `/metrics` and the bench report.
#[derive(Clone, Copy, Debug, Default)]
pub struct ServiceStats {
    pub batches: u64,
    pub images: u64,
}

/// The shared detector service.
pub struct DetectService {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    input_size: usize,
}

impl DetectService {
    /// One worker thread per backend; each is one execution context.
    pub fn start(
        backends: Vec<Box<dyn DetectBackend>>,
        mut cfg: BatcherConfig,
    ) -> Result<DetectService, DetectError> {
        let input_size = backends
            .first()
            .map(|b| b.input_size())
            .ok_or_else(|| DetectError::Runtime("no detector backend".into()))?;
        cfg.contexts = backends.len();
        let max_batch = cfg.max_batch.max(1);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                batcher: Batcher::new(cfg),
                shutdown: false,
            }),
            cv: Condvar::new(),
            batches: AtomicU64::new(0),
            images: AtomicU64::new(0),
            batch_sizes: Histogram::new(&BATCH_BUCKETS),
            queue_wait: Histogram::latency_ms(),
        });
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let workers = backends
            .into_iter()
            .enumerate()
            .map(|(i, b)| {
                let s = shared.clone();
                let ready = ready_tx.clone();
                std::thread::Builder::new()
                    .name(format!("detect-{i}"))
                    .spawn(move || worker(s, b, max_batch, ready))
                    .map_err(|e| DetectError::Runtime(format!("spawn detector thread: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        drop(ready_tx);
        // Every context has run every batch size once before the first
        // frame arrives: a backend's first run of a shape plans its memory,
        // which would otherwise land on a live stream's first frames.
        for _ in 0..workers.len() {
            if ready_rx.recv().is_err() {
                break;
            }
        }
        Ok(DetectService {
            shared,
            workers,
            input_size,
        })
    }

    pub fn input_size(&self) -> usize {
        self.input_size
    }

    /// Queues one frame, to be inferred before `expires` or not at all.
    /// `Err` hands the tensor back: the queue is full (backpressure) and the
    /// caller must censor that frame whole.
    pub fn submit(
        &self,
        key: Key,
        expires: Instant,
        tensor: Vec<f32>,
        letterbox: Letterbox,
        reply: Sender<Completion>,
    ) -> Result<(), Vec<f32>> {
        let Ok(mut st) = self.shared.state.lock() else {
            return Err(tensor);
        };
        if st.shutdown {
            return Err(tensor);
        }
        let job = Job {
            key,
            expires,
            tensor,
            letterbox,
            reply,
        };
        match st.batcher.push(Instant::now(), job) {
            Ok(()) => {
                self.shared.cv.notify_one();
                Ok(())
            }
            Err(job) => Err(job.tensor),
        }
    }

    pub fn stats(&self) -> ServiceStats {
        ServiceStats {
            batches: self.shared.batches.load(Ordering::Relaxed),
            images: self.shared.images.load(Ordering::Relaxed),
        }
    }

    /// Prometheus text: batches, images, batch sizes and queue wait.
    pub fn metrics(&self) -> String {
        let st = self.stats();
        format!(
            "# TYPE livecensor_detector_batches_total counter\nlivecensor_detector_batches_total {}\n\
             # TYPE livecensor_detector_images_total counter\nlivecensor_detector_images_total {}\n\
             # TYPE livecensor_detector_batch_size histogram\n{}\
             # TYPE livecensor_detector_queue_wait_ms histogram\n{}",
            st.batches,
            st.images,
            self.shared
                .batch_sizes
                .render("livecensor_detector_batch_size", ""),
            self.shared
                .queue_wait
                .render("livecensor_detector_queue_wait_ms", ""),
        )
    }

    /// Frames queued but not yet in a batch.
    pub fn queued(&self) -> usize {
        self.shared
            .state
            .lock()
            .map(|s| s.batcher.queued())
            .unwrap_or(0)
    }
}

impl Drop for DetectService {
    fn drop(&mut self) {
        if let Ok(mut st) = self.shared.state.lock() {
            st.shutdown = true;
        }
        self.shared.cv.notify_all();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

fn worker(
    shared: Arc<Shared>,
    mut backend: Box<dyn DetectBackend>,
    max_batch: usize,
    ready: Sender<()>,
) {
    let size = backend.input_size();
    let slot = 3 * size * size;
    let mut input: Vec<f32> = Vec::new();
    warm_up(backend.as_mut(), max_batch, &mut input);
    let _ = ready.send(());
    drop(ready);
    loop {
        let batch = {
            let Ok(mut st) = shared.state.lock() else {
                return;
            };
            loop {
                if st.shutdown {
                    return;
                }
                let now = Instant::now();
                if let Some(b) = st.batcher.poll_batch(now) {
                    break b;
                }
                let wait = st
                    .batcher
                    .poll_timeout()
                    .map(|t| t.saturating_duration_since(now))
                    .unwrap_or(Duration::from_millis(100))
                    .max(Duration::from_micros(50));
                st = match shared.cv.wait_timeout(st, wait) {
                    Ok((g, _)) => g,
                    Err(_) => return,
                };
            }
        };
        let start = Instant::now();
        let (live, expired): (Vec<_>, Vec<_>) = batch
            .items
            .into_iter()
            .partition(|q| q.item.expires > start);
        for q in expired {
            let c = Completion {
                key: q.item.key,
                result: Err("deadline passed before inference".into()),
                queue_wait: start.saturating_duration_since(q.enqueued),
                infer: Duration::ZERO,
                batch_size: 0,
            };
            let _ = q.item.reply.send(c);
        }
        let n = live.len();
        if n == 0 {
            if let Ok(mut st) = shared.state.lock() {
                st.batcher.complete(batch.id);
            }
            shared.cv.notify_all();
            continue;
        }
        input.clear();
        input.reserve(n * slot);
        let mut lbs = Vec::with_capacity(n);
        for q in &live {
            input.extend_from_slice(&q.item.tensor);
            lbs.push(q.item.letterbox);
        }
        let result = if input.len() == n * slot {
            backend.detect(&input, n, &lbs)
        } else {
            Err(DetectError::Runtime(format!(
                "tensor size {} does not match {n} x 3 x {size} x {size}",
                input.len()
            )))
        };
        let infer = start.elapsed();
        shared.batches.fetch_add(1, Ordering::Relaxed);
        shared.images.fetch_add(n as u64, Ordering::Relaxed);
        shared.batch_sizes.observe(n as f64);
        for q in &live {
            shared
                .queue_wait
                .observe_ms(start.saturating_duration_since(q.enqueued));
        }
        if let Ok(mut st) = shared.state.lock() {
            st.batcher.complete(batch.id);
        }
        shared.cv.notify_all();
        let mut per_image: Vec<Result<Vec<Detection>, String>> = match result {
            Ok(v) if v.len() == n => v.into_iter().map(Ok).collect(),
            Ok(v) => vec![Err(format!("detector returned {} results for {n}", v.len())); n],
            Err(e) => vec![Err(e.to_string()); n],
        };
        for (q, r) in live.into_iter().zip(per_image.drain(..)) {
            let c = Completion {
                key: q.item.key,
                result: r,
                queue_wait: start.saturating_duration_since(q.enqueued),
                infer,
                batch_size: n,
            };
            // A stream that went away no longer needs its result.
            let _ = q.item.reply.send(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::BBox;
    use std::sync::mpsc::channel;

    /// Reports one detection whose score encodes the tensor's first value.
    struct Echo {
        fail: bool,
    }

    impl DetectBackend for Echo {
        fn input_size(&self) -> usize {
            2
        }
        fn detect(
            &mut self,
            t: &[f32],
            batch: usize,
            _: &[Letterbox],
        ) -> Result<Vec<Vec<Detection>>, DetectError> {
            if self.fail {
                return Err(DetectError::Runtime("boom".into()));
            }
            Ok((0..batch)
                .map(|i| {
                    vec![Detection {
                        bbox: BBox::new(0.0, 0.0, 1.0, 1.0),
                        class: 0,
                        score: t[i * 12],
                    }]
                })
                .collect())
        }
    }

    fn later() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    #[test]
    fn expired_frames_are_answered_without_inference() {
        let svc = DetectService::start(
            vec![Box::new(Echo { fail: false })],
            BatcherConfig::default(),
        )
        .unwrap();
        let (tx, rx) = channel();
        let past = Instant::now() - Duration::from_millis(1);
        svc.submit(
            Key {
                stream: 0,
                frame: 0,
            },
            past,
            vec![0.5; 12],
            lb(),
            tx.clone(),
        )
        .unwrap();
        svc.submit(
            Key {
                stream: 0,
                frame: 1,
            },
            later(),
            vec![0.25; 12],
            lb(),
            tx,
        )
        .unwrap();
        let mut got: Vec<Completion> = (0..2)
            .map(|_| rx.recv_timeout(Duration::from_secs(5)).unwrap())
            .collect();
        got.sort_by_key(|c| c.key.frame);
        assert!(got[0].result.as_ref().unwrap_err().contains("deadline"));
        assert!((got[1].result.as_ref().unwrap()[0].score - 0.25).abs() < 1e-6);
        assert_eq!(svc.stats().images, 1);
    }

    fn lb() -> Letterbox {
        Letterbox {
            size: 2,
            scale: 1.0,
            width: 2,
            height: 2,
        }
    }

    #[test]
    fn routes_results_to_their_streams() {
        let svc = DetectService::start(
            vec![
                Box::new(Echo { fail: false }),
                Box::new(Echo { fail: false }),
            ],
            BatcherConfig::default(),
        )
        .unwrap();
        let (tx_a, rx_a) = channel();
        let (tx_b, rx_b) = channel();
        for f in 0..20u64 {
            let (tx, s) = if f % 2 == 0 { (&tx_a, 1) } else { (&tx_b, 2) };
            let v = f as f32 / 100.0;
            svc.submit(
                Key {
                    stream: s,
                    frame: f,
                },
                later(),
                vec![v; 12],
                lb(),
                tx.clone(),
            )
            .unwrap();
        }
        for (rx, s) in [(rx_a, 1u32), (rx_b, 2u32)] {
            let mut got: Vec<Completion> = (0..10)
                .map(|_| rx.recv_timeout(Duration::from_secs(5)).unwrap())
                .collect();
            got.sort_by_key(|c| c.key.frame);
            for c in got {
                assert_eq!(c.key.stream, s);
                let d = c.result.unwrap();
                assert!((d[0].score - c.key.frame as f32 / 100.0).abs() < 1e-6);
            }
        }
        assert_eq!(svc.stats().images, 20);
    }

    #[test]
    fn backend_error_reaches_every_frame_of_the_batch() {
        let svc = DetectService::start(
            vec![Box::new(Echo { fail: true })],
            BatcherConfig::default(),
        )
        .unwrap();
        let (tx, rx) = channel();
        for f in 0..3 {
            svc.submit(
                Key {
                    stream: 0,
                    frame: f,
                },
                later(),
                vec![0.0; 12],
                lb(),
                tx.clone(),
            )
            .unwrap();
        }
        for _ in 0..3 {
            let c = rx.recv_timeout(Duration::from_secs(5)).unwrap();
            assert!(c.result.unwrap_err().contains("boom"));
        }
    }

    #[test]
    fn wrong_tensor_size_is_an_error_not_a_panic() {
        let svc = DetectService::start(
            vec![Box::new(Echo { fail: false })],
            BatcherConfig::default(),
        )
        .unwrap();
        let (tx, rx) = channel();
        svc.submit(
            Key {
                stream: 0,
                frame: 0,
            },
            later(),
            vec![0.0; 5],
            lb(),
            tx,
        )
        .unwrap();
        let c = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(c.result.is_err());
    }
}
