//! The detect lane's threads: one worker per execution context pulls batches
//! from the shared sans-IO [`Batcher`] and routes results back to each
//! stream's channel by (stream, frame). Every stream of the process shares it.

use super::batcher::{Batcher, BatcherConfig, Key};
use crate::detect::{DetectBackend, DetectInput, Detector, DeviceInput, Letterbox, LetterboxMode};
use crate::error::DetectError;
use crate::frame::Detection;
use crate::metrics::{Histogram, BATCH_BUCKETS};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

impl DetectBackend for Detector {
    fn input_size(&self) -> usize {
        Detector::input_size(self)
    }

    fn letterbox_mode(&self) -> LetterboxMode {
        Detector::letterbox_mode(self)
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

/// The input shapes warmed up at start, each with the largest batch run:
/// the service's main shape (square, or for a rectangular letterbox the
/// landscape 16:9 one, what live video is) at every batch size; the other
/// 16:9 shapes and a second look's crop once. Other shapes plan their
/// memory on their first batch.
fn warm_shapes(mode: LetterboxMode, size: usize, max_batch: usize) -> Vec<(Letterbox, usize)> {
    let square = Letterbox::new(size, size, size);
    if mode == LetterboxMode::Square {
        return vec![(square, max_batch)];
    }
    let mut shapes = vec![(Letterbox::rect(1280, 720, size), max_batch)];
    // Half the side: a second look's crop (detect::ZoomConfig::input).
    let half = (size / 2).div_ceil(crate::detect::STRIDE) * crate::detect::STRIDE;
    let crop = Letterbox::rect(half, half, half);
    for lb in [square, Letterbox::rect(720, 1280, size), crop] {
        if !shapes.iter().any(|(s, _)| s.dims() == lb.dims()) {
            shapes.push((lb, 1));
        }
    }
    shapes
}

/// Runs every warm shape once per batch size up to its largest on a blank
/// input. A failure here is not fatal: the same error comes back on the
/// first job.
fn warm_up(
    backend: &mut dyn DetectBackend,
    max_batch: usize,
    input: &mut Vec<f32>,
    estimate: &mut InferEstimate,
) {
    let shapes = warm_shapes(backend.letterbox_mode(), backend.input_size(), max_batch);
    for (lb, most) in shapes {
        for n in 1..=most {
            input.clear();
            input.resize(n * lb.len(), 0.5);
            let t0 = Instant::now();
            if let Err(e) = backend.detect(input, n, &vec![lb; n]) {
                tracing::warn!("detector warm-up at batch {n}: {e}");
                return;
            }
            // The main shape's last runs seed the estimate (first runs of a
            // shape plan memory and are slow).
            if n == most && n > 1 {
                estimate.observe(n, t0.elapsed());
            }
        }
    }
}

/// Lays the jobs' tensors out as one batch of the largest rows and columns
/// among them. Padding is black at the bottom/right in every letterbox, so
/// a tensor padded further equals that frame preprocessed at the larger
/// shape: mixing shapes in a batch changes no pixel the model sees.
/// `None` when a tensor does not match its letterbox.
fn gather(jobs: &[(&[f32], Letterbox)], input: &mut Vec<f32>) -> Option<Vec<Letterbox>> {
    let rows = jobs.iter().map(|(_, lb)| lb.rows).max()?;
    let cols = jobs.iter().map(|(_, lb)| lb.cols).max()?;
    input.clear();
    input.reserve(jobs.len() * 3 * rows * cols);
    let mut lbs = Vec::with_capacity(jobs.len());
    for (t, lb) in jobs {
        if t.len() != lb.len() || lb.is_empty() {
            return None;
        }
        if lb.dims() == (rows, cols) {
            input.extend_from_slice(t);
        } else {
            for plane in t.chunks_exact(lb.rows * lb.cols) {
                for row in plane.chunks_exact(lb.cols) {
                    input.extend_from_slice(row);
                    input.resize(input.len() + cols - lb.cols, 0.0);
                }
                input.resize(input.len() + (rows - lb.rows) * cols, 0.0);
            }
        }
        lbs.push(Letterbox { rows, cols, ..*lb });
    }
    Some(lbs)
}

/// A context's running estimate of its inference time, per image of a
/// batch (an EWMA): on the CPU a batch costs its images one after another,
/// so `n` images are predicted to take `n` times it (conservative where
/// batching is cheaper, as on a GPU: a frame dropped too eagerly is
/// censored whole, never shown unverified).
#[derive(Clone, Copy, Debug, Default)]
struct InferEstimate {
    per_image_s: Option<f64>,
}

impl InferEstimate {
    const WEIGHT: f64 = 0.2;

    fn observe(&mut self, images: usize, took: Duration) {
        if images == 0 {
            return;
        }
        let v = took.as_secs_f64() / images as f64;
        self.per_image_s = Some(match self.per_image_s {
            Some(p) => p + Self::WEIGHT * (v - p),
            None => v,
        });
    }

    /// `None` until a batch was timed.
    fn predict(&self, images: usize) -> Option<Duration> {
        self.per_image_s
            .map(|p| Duration::from_secs_f64((p * images as f64).min(3600.0)))
    }
}

/// Why a picked frame is answered without inference: its deadline has
/// passed, or the batch would end after it (inferring it would only delay
/// the frames that can still be verified; it is censored whole at once).
fn hopeless(expires: Instant, start: Instant, batch: Option<Duration>) -> Option<&'static str> {
    if expires <= start {
        return Some("deadline passed before inference");
    }
    match batch {
        Some(d) if start + d > expires => Some("cannot be inferred before its deadline"),
        _ => None,
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
    /// The frame's device input, handed back for its stream to reuse.
    pub spent: Option<DetectInput>,
}

struct Job {
    key: Key,
    /// After this the frame has been censored whole: inferring it would
    /// only delay frames that can still be verified.
    expires: Instant,
    input: DetectInput,
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
    letterbox: LetterboxMode,
    device_input: Option<DeviceInput>,
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
        let letterbox = if backends
            .iter()
            .all(|b| b.letterbox_mode() == LetterboxMode::Rect)
        {
            LetterboxMode::Rect
        } else {
            LetterboxMode::Square
        };
        let device_input = backends.first().and_then(|b| b.device_input());
        let device_input = device_input.filter(|d| {
            backends
                .iter()
                .all(|b| b.device_input().as_ref() == Some(d))
        });
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
            letterbox,
            device_input,
        })
    }

    pub fn input_size(&self) -> usize {
        self.input_size
    }

    /// The letterbox every backend takes (square unless all take rect).
    pub fn letterbox_mode(&self) -> LetterboxMode {
        self.letterbox
    }

    /// The device tensors every backend reads in place, if they all do:
    /// a device frame's input may then be submitted as
    /// [`DetectInput::Device`] in this data type.
    pub fn device_input(&self) -> Option<DeviceInput> {
        self.device_input
    }

    /// Queues one frame, to be inferred before `expires` or not at all.
    /// `Err` hands the input back: the queue is full (backpressure), or a
    /// device input reached a service whose backends read host tensors
    /// only; the caller must censor that frame whole.
    pub fn submit(
        &self,
        key: Key,
        expires: Instant,
        input: DetectInput,
        letterbox: Letterbox,
        reply: Sender<Completion>,
    ) -> Result<(), DetectInput> {
        if input.host().is_none() && self.device_input.is_none() {
            return Err(input);
        }
        let Ok(mut st) = self.shared.state.lock() else {
            return Err(input);
        };
        if st.shutdown {
            return Err(input);
        }
        let job = Job {
            key,
            expires,
            input,
            letterbox,
            reply,
        };
        match st
            .batcher
            .push_grouped(Instant::now(), u64::from(key.stream), job)
        {
            Ok(()) => {
                self.shared.cv.notify_one();
                Ok(())
            }
            Err(job) => Err(job.input),
        }
    }

    pub fn stats(&self) -> ServiceStats {
        ServiceStats {
            batches: self.shared.batches.load(Ordering::Relaxed),
            images: self.shared.images.load(Ordering::Relaxed),
        }
    }

    /// Prometheus families: batches, images, batch sizes and queue wait.
    pub fn metrics(&self) -> crate::metrics::Exposition {
        let st = self.stats();
        let mut m = crate::metrics::Exposition::default();
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
            &self.shared.batch_sizes,
        );
        m.histogram(
            "livecensor_detector_queue_wait_ms",
            "Wait of a frame in the detector queue",
            &[],
            &self.shared.queue_wait,
        );
        m
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
    let mut input: Vec<f32> = Vec::new();
    let mut estimate = InferEstimate::default();
    warm_up(backend.as_mut(), max_batch, &mut input, &mut estimate);
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
        let predicted = estimate.predict(batch.items.len());
        let mut live = Vec::with_capacity(batch.items.len());
        for q in batch.items {
            let Some(why) = hopeless(q.item.expires, start, predicted) else {
                live.push(q);
                continue;
            };
            let c = Completion {
                key: q.item.key,
                result: Err(why.into()),
                queue_wait: start.saturating_duration_since(q.enqueued),
                infer: Duration::ZERO,
                batch_size: 0,
                spent: q.item.input.device_only(),
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
        let host: Option<Vec<(&[f32], Letterbox)>> = live
            .iter()
            .map(|q| q.item.input.host().map(|t| (t, q.item.letterbox)))
            .collect();
        let result = match host {
            Some(jobs) => match gather(&jobs, &mut input) {
                Some(lbs) => backend.detect(&input, n, &lbs),
                None => Err(DetectError::Runtime(format!(
                    "a tensor of this batch does not match its letterbox: {:?}",
                    jobs.iter()
                        .map(|(t, lb)| (t.len(), lb.dims()))
                        .collect::<Vec<_>>()
                ))),
            },
            None => {
                let inputs: Vec<&DetectInput> = live.iter().map(|q| &q.item.input).collect();
                let lbs: Vec<Letterbox> = live.iter().map(|q| q.item.letterbox).collect();
                backend.detect_inputs(&inputs, &lbs)
            }
        };
        let infer = start.elapsed();
        if result.is_ok() {
            estimate.observe(n, infer);
        }
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
                spent: q.item.input.device_only(),
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
                part: 0,
            },
            past,
            DetectInput::Host(vec![0.5; 12]),
            lb(),
            tx.clone(),
        )
        .unwrap();
        svc.submit(
            Key {
                stream: 0,
                frame: 1,
                part: 0,
            },
            later(),
            DetectInput::Host(vec![0.25; 12]),
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
        Letterbox::new(2, 2, 2)
    }

    /// A frame padded further by `gather` is that frame preprocessed at the
    /// larger shape, bit for bit.
    #[test]
    fn gather_pads_smaller_inputs_exactly() {
        use crate::detect::{preprocess_frame, preprocess_frame_as};
        use crate::frame::{Frame, PixelFormat};
        let (w, h, s) = (192, 108, 96);
        let rgb: Vec<u8> = (0..w * h * 3).map(|i| (i * 7 % 251) as u8).collect();
        let f = Frame::from_rgb(PixelFormat::I420, w, h, &rgb);
        let rect = Letterbox::rect(w, h, s);
        assert_eq!(rect.dims(), (64, 96));
        let mut a = vec![0.0; rect.len()];
        preprocess_frame_as(&f, LetterboxMode::Rect, s, &mut a);
        let mut sq = vec![0.0; 3 * s * s];
        let square = preprocess_frame(&f, s, &mut sq);
        let mut input = Vec::new();
        let lbs = gather(&[(&a, rect), (&sq, square)], &mut input).expect("gathered");
        assert_eq!(lbs, vec![square, square]);
        assert_eq!(input.len(), 2 * sq.len());
        assert_eq!(&input[..sq.len()], &sq[..]);
        assert_eq!(&input[sq.len()..], &sq[..]);
        // One shape: copied as is; a tensor that does not fit its letterbox: refused.
        let lbs = gather(&[(&a, rect), (&a, rect)], &mut input).expect("one shape");
        assert_eq!((lbs[0].dims(), input.len()), ((64, 96), 2 * a.len()));
        assert!(gather(&[(&a[1..], rect)], &mut input).is_none());
        assert!(gather(&[], &mut input).is_none());
    }

    /// (batch size, (rows, cols)) of every batch run.
    type Seen = Arc<Mutex<Vec<(usize, (usize, usize))>>>;

    /// Records the input shape of every batch it runs.
    struct Shapes {
        mode: LetterboxMode,
        seen: Seen,
    }

    impl DetectBackend for Shapes {
        fn input_size(&self) -> usize {
            96
        }
        fn letterbox_mode(&self) -> LetterboxMode {
            self.mode
        }
        fn detect(
            &mut self,
            t: &[f32],
            batch: usize,
            lbs: &[Letterbox],
        ) -> Result<Vec<Vec<Detection>>, DetectError> {
            assert_eq!(t.len(), batch * lbs[0].len());
            if let Ok(mut s) = self.seen.lock() {
                s.push((batch, lbs[0].dims()));
            }
            Ok(vec![Vec::new(); batch])
        }
    }

    #[test]
    fn rect_backends_warm_up_16_9_shapes_and_mixed_batches_are_padded() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let cfg = BatcherConfig {
            max_batch: 2,
            ..BatcherConfig::default()
        };
        let backend = Shapes {
            mode: LetterboxMode::Rect,
            seen: seen.clone(),
        };
        let svc = DetectService::start(vec![Box::new(backend)], cfg).unwrap();
        assert_eq!(svc.letterbox_mode(), LetterboxMode::Rect);
        let warm: Vec<_> = seen.lock().unwrap().drain(..).collect();
        assert_eq!(
            warm,
            vec![
                (1, (64, 96)),
                (2, (64, 96)),
                (1, (96, 96)),
                (1, (96, 64)),
                (1, (64, 64))
            ]
        );
        let (tx, rx) = channel();
        for (frame, lb) in [Letterbox::rect(192, 108, 96), Letterbox::rect(108, 192, 96)]
            .into_iter()
            .enumerate()
        {
            let key = Key {
                stream: frame as u32,
                frame: frame as u64,
                part: 0,
            };
            svc.submit(
                key,
                later(),
                DetectInput::Host(vec![0.0; lb.len()]),
                lb,
                tx.clone(),
            )
            .unwrap();
        }
        for _ in 0..2 {
            let c = rx.recv_timeout(Duration::from_secs(5)).unwrap();
            assert!(c.result.is_ok(), "{c:?}");
        }
        let ran: Vec<_> = seen.lock().unwrap().clone();
        assert!(
            ran == vec![(2, (96, 96))] || ran == vec![(1, (64, 96)), (1, (96, 64))],
            "{ran:?}"
        );
        // A square backend makes the service square.
        let square = Shapes {
            mode: LetterboxMode::Square,
            seen: Arc::new(Mutex::new(Vec::new())),
        };
        let svc = DetectService::start(vec![Box::new(square)], BatcherConfig::default()).unwrap();
        assert_eq!(svc.letterbox_mode(), LetterboxMode::Square);
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
                    part: 0,
                },
                later(),
                DetectInput::Host(vec![v; 12]),
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
                    part: 0,
                },
                later(),
                DetectInput::Host(vec![0.0; 12]),
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
                part: 0,
            },
            later(),
            DetectInput::Host(vec![0.0; 5]),
            lb(),
            tx,
        )
        .unwrap();
        let c = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(c.result.is_err());
    }

    /// Says it reads device tensors of one data type, or not at all.
    struct Reads(Option<DeviceInput>);

    impl DetectBackend for Reads {
        fn input_size(&self) -> usize {
            2
        }
        fn detect(
            &mut self,
            _: &[f32],
            batch: usize,
            _: &[Letterbox],
        ) -> Result<Vec<Vec<Detection>>, DetectError> {
            Ok(vec![Vec::new(); batch])
        }
        fn device_input(&self) -> Option<DeviceInput> {
            self.0
        }
    }

    #[test]
    fn device_inputs_only_when_every_backend_reads_the_same() {
        let (f32_in, f16_in) = (DeviceInput { f16: false }, DeviceInput { f16: true });
        for (reads, want) in [
            (vec![Some(f32_in), Some(f32_in)], Some(f32_in)),
            (vec![Some(f16_in)], Some(f16_in)),
            (vec![Some(f32_in), None], None),
            (vec![Some(f32_in), Some(f16_in)], None),
            (vec![None], None),
        ] {
            let backends = reads
                .iter()
                .map(|r| Box::new(Reads(*r)) as Box<dyn DetectBackend>)
                .collect();
            let svc = DetectService::start(backends, BatcherConfig::default()).unwrap();
            assert_eq!(svc.device_input(), want, "{reads:?}");
        }
        // The default for a backend that reads host tensors only.
        let mut echo = Echo { fail: false };
        let e = echo.detect_inputs(&[], &[]).unwrap_err().to_string();
        assert!(e.contains("host tensors only"), "{e}");
    }

    #[test]
    fn estimate_is_per_image_and_follows_the_backend() {
        let mut e = InferEstimate::default();
        assert_eq!(e.predict(4), None);
        e.observe(0, Duration::from_millis(50));
        assert_eq!(e.predict(1), None);
        e.observe(2, Duration::from_millis(20));
        assert_eq!(e.predict(3), Some(Duration::from_millis(30)));
        // A slower backend moves it a fifth of the way per batch.
        e.observe(1, Duration::from_millis(20));
        let p = e.predict(1).unwrap().as_secs_f64() * 1e3;
        assert!((p - 12.0).abs() < 1e-9, "{p}");
        for _ in 0..50 {
            e.observe(1, Duration::from_millis(20));
        }
        let p = e.predict(1).unwrap().as_secs_f64() * 1e3;
        assert!((p - 20.0).abs() < 0.01, "{p}");
    }

    #[test]
    fn hopeless_frames_are_those_the_batch_would_finish_after() {
        let t = Instant::now();
        let ms = Duration::from_millis;
        assert_eq!(
            hopeless(t, t, None),
            Some("deadline passed before inference")
        );
        assert_eq!(hopeless(t + ms(5), t, None), None);
        assert_eq!(hopeless(t + ms(5), t, Some(ms(5))), None);
        assert_eq!(
            hopeless(t + ms(5), t, Some(ms(6))),
            Some("cannot be inferred before its deadline")
        );
        assert_eq!(hopeless(t + ms(250), t, Some(ms(40))), None);
    }
}
