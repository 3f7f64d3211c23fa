//! The detect lane's service: one worker per execution context pulls
//! batches from the shared sans-IO [`Batcher`] and routes results back to
//! each stream's channel by (stream, frame). Every stream of the process
//! shares it. This file is its API (start, submit, shutdown); the worker
//! loop, the warm-up and the counters live in the submodules.

pub mod fault;
mod metrics;
mod warm;
mod worker;

pub use fault::{DetectorFaultArgs, DetectorFaults};
pub use metrics::ServiceStats;

use super::batcher::{Batcher, BatcherConfig, Key};
use crate::detect::{DetectBackend, DetectInput, Detector, DeviceInput, Letterbox, LetterboxMode};
use crate::error::DetectError;
use crate::frame::Detection;
use metrics::Counters;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The service runs the ONNX Runtime detector like any other backend.
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
    /// Test-only faults (off unless asked for).
    faults: fault::FaultState,
}

struct Shared {
    state: Mutex<State>,
    cv: Condvar,
    counters: Counters,
    faults: DetectorFaults,
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
        cfg: BatcherConfig,
    ) -> Result<DetectService, DetectError> {
        Self::start_with_faults(backends, cfg, DetectorFaults::default())
    }

    /// [`start`](Self::start) with test-only faults injected (see `fault`).
    pub fn start_with_faults(
        backends: Vec<Box<dyn DetectBackend>>,
        mut cfg: BatcherConfig,
        faults: DetectorFaults,
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
                faults: fault::FaultState::new(faults),
            }),
            cv: Condvar::new(),
            counters: Counters::new(),
            faults,
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
                    .spawn(move || worker::worker(s, b, max_batch, ready))
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

    /// The injected faults (test only; inactive by default).
    pub fn faults(&self) -> DetectorFaults {
        self.shared.faults
    }

    /// The fault window's clock starts again at the next batch (a bench
    /// run's first frame); returns when it started last, if it had.
    pub fn restart_faults(&self) -> Option<Instant> {
        let mut st = self.shared.state.lock().ok()?;
        let last = st.faults.origin();
        st.faults.restart();
        last
    }

    /// When the fault window's clock started (the first batch since the
    /// start or the last restart).
    pub fn fault_origin(&self) -> Option<Instant> {
        self.shared.state.lock().ok()?.faults.origin()
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
                (1, (64, 64)),
                // The main shape timed for the per-image estimate.
                (1, (64, 96)),
                (1, (64, 96)),
                (1, (64, 96))
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
}
