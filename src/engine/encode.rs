//! Encoding off the stream's thread: a worker per stream encodes released
//! host pictures (openh264) while the stream's thread decodes, preprocesses
//! and censors the next ones, so a stream's frame costs the larger of the
//! two instead of their sum in latency, and two cores are used by one
//! stream.
//!
//! Frames still leave in release order: the engine keeps every released
//! frame in one queue and hands out only its front, once that one's encode
//! is back (the worker answers jobs in the order it got them). At most
//! [`DEPTH`] encodes wait or run; past that the stream's thread waits for
//! the oldest before it releases more. A failed encode, a worker that died
//! or one that stopped answering fails its frames as an inline encode does
//! (the frame is reported with its error and not published, never sent
//! unencoded), and the next frame is an IDR of a fresh encoder.

use super::encode_picture;
use crate::backend::{Backend, EncoderSlot, Lane, Picture};
use crate::error::Error;
use crate::frame::Frame;
use std::collections::VecDeque;
use std::sync::mpsc::{
    channel, sync_channel, Receiver, RecvTimeoutError, SyncSender, TryRecvError,
};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Encodes waiting or running on a stream's worker at most: enough to
/// overlap one encode with the next frame's work, few enough that frames
/// do not wait behind a long queue.
pub const DEPTH: usize = 2;

/// How long the stream's thread waits for an encode before it gives the
/// worker up (its frames fail, a new worker starts).
pub const STUCK: Duration = Duration::from_secs(2);

/// What a worker encodes with.
pub trait FrameEncoder {
    /// Encodes one picture, an IDR when `idr` (or when the encoder must
    /// restart): `Ok((access unit, was an IDR))`.
    fn encode(&mut self, frame: Frame, idr: bool) -> Result<(Vec<u8>, bool), Error>;

    /// What encodes, for logs and summaries.
    fn description(&self) -> String;
}

/// openh264 through the backend's encoder slot, on a CPU lane.
pub struct Openh264 {
    slot: EncoderSlot,
    lane: Lane,
    /// The last encode failed: the next frame is an IDR.
    force_idr: bool,
}

impl Openh264 {
    pub fn new(fps: f32) -> Self {
        Openh264 {
            slot: Backend::Cpu.encoder(fps),
            lane: Lane::Cpu,
            force_idr: false,
        }
    }
}

impl FrameEncoder for Openh264 {
    fn encode(&mut self, frame: Frame, idr: bool) -> Result<(Vec<u8>, bool), Error> {
        let size = (frame.width, frame.height);
        self.force_idr |= idr;
        encode_picture(
            &mut self.slot,
            &mut self.lane,
            Picture::Host(frame),
            size,
            &mut self.force_idr,
        )
    }

    fn description(&self) -> String {
        format!("{} (encoder thread)", self.slot.description())
    }
}

/// Opens a worker's encoder on the worker's own thread (so the encoder
/// need not move between threads).
pub type MakeEncoder = Arc<dyn Fn() -> Box<dyn FrameEncoder> + Send + Sync>;

struct Job {
    frame: Frame,
    idr: bool,
}

/// One encode's result, in job order.
#[derive(Debug)]
pub struct Done {
    /// `Ok((access unit, was an IDR))`.
    pub result: Result<(Vec<u8>, bool), String>,
    /// Seconds the encode took on the worker.
    pub seconds: f64,
}

/// A running worker thread.
struct Thread {
    jobs: SyncSender<Job>,
    done: Receiver<(Done, String)>,
    handle: Option<JoinHandle<()>>,
}

/// A stream's encoder worker.
pub struct EncodeWorker {
    make: MakeEncoder,
    thread: Option<Thread>,
    /// When each job whose result has not come back was sent, oldest first.
    sent: VecDeque<Instant>,
    /// Jobs lost with a worker that died or was given up: each comes back
    /// as an error, before any job sent after.
    lost: usize,
    /// The next job is an IDR (a fresh encoder after a lost worker).
    restart_idr: bool,
    description: String,
}

impl EncodeWorker {
    /// A worker whose encoder `make` opens; the thread starts with the
    /// first job.
    pub fn new(make: MakeEncoder) -> Self {
        EncodeWorker {
            make,
            thread: None,
            sent: VecDeque::new(),
            lost: 0,
            restart_idr: false,
            description: String::new(),
        }
    }

    /// Encodes by openh264.
    pub fn openh264(fps: f32) -> Self {
        Self::new(Arc::new(move || Box::new(Openh264::new(fps))))
    }

    /// Encodes sent whose result has not been taken.
    pub fn pending(&self) -> usize {
        self.sent.len() + self.lost
    }

    pub fn description(&self) -> &str {
        &self.description
    }

    fn spawn(&self) -> Result<Thread, String> {
        let (jobs, rx) = sync_channel::<Job>(DEPTH);
        let (tx, done) = channel();
        let make = self.make.clone();
        let handle = std::thread::Builder::new()
            .name("encoder".into())
            .spawn(move || {
                let mut enc = make();
                while let Ok(job) = rx.recv() {
                    let t0 = Instant::now();
                    let result = enc.encode(job.frame, job.idr).map_err(|e| e.to_string());
                    let done = Done {
                        result,
                        seconds: t0.elapsed().as_secs_f64(),
                    };
                    if tx.send((done, enc.description())).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| format!("encoder thread: {e}"))?;
        Ok(Thread {
            jobs,
            done,
            handle: Some(handle),
        })
    }

    /// The worker's jobs not answered yet are lost (each fails), and the
    /// next job starts a fresh worker with an IDR.
    fn give_up(&mut self) {
        self.lost += self.sent.len();
        self.sent.clear();
        self.restart_idr = true;
        if let Some(mut t) = self.thread.take() {
            // A worker that stopped answering is left to end on its own.
            t.handle.take();
        }
    }

    /// Sends one censored picture to be encoded (an IDR when `idr`); its
    /// result comes back from [`Self::take`] after those sent before it.
    /// Call only while fewer than [`DEPTH`] are pending. `Err` when no
    /// worker can start: the frame fails now, nothing is pending for it.
    pub fn submit(&mut self, frame: Frame, idr: bool) -> Result<(), String> {
        let mut job = Job {
            frame,
            idr: idr || std::mem::take(&mut self.restart_idr),
        };
        for _ in 0..2 {
            if self.thread.is_none() {
                match self.spawn() {
                    Ok(t) => self.thread = Some(t),
                    Err(e) => {
                        self.restart_idr = true;
                        return Err(e);
                    }
                }
            }
            let Some(t) = self.thread.as_ref() else {
                break;
            };
            match t.jobs.try_send(job) {
                Ok(()) => {
                    self.sent.push_back(Instant::now());
                    return Ok(());
                }
                Err(std::sync::mpsc::TrySendError::Full(j)) => {
                    // More than DEPTH pending: the caller broke the bound.
                    self.restart_idr |= j.idr;
                    return Err("encoder queue full".into());
                }
                Err(std::sync::mpsc::TrySendError::Disconnected(mut j)) => {
                    // The worker died: a fresh one, this frame an IDR.
                    self.give_up();
                    self.restart_idr = false;
                    j.idr = true;
                    job = j;
                }
            }
        }
        self.restart_idr = true;
        Err("the encoder thread cannot start".into())
    }

    /// The oldest pending result: at once if it is back, else after at
    /// most `wait` (`None`: without waiting). A worker that died fails its
    /// jobs; one whose oldest job is older than [`STUCK`] is given up.
    pub fn take(&mut self, wait: Option<Duration>) -> Option<Done> {
        if self.lost > 0 {
            self.lost -= 1;
            return Some(Done {
                result: Err("the encoder thread stopped before this frame".into()),
                seconds: 0.0,
            });
        }
        let sent = *self.sent.front()?;
        let t = self.thread.as_ref()?;
        let got = match wait {
            None => t.done.try_recv().map_err(|e| match e {
                TryRecvError::Empty => RecvTimeoutError::Timeout,
                TryRecvError::Disconnected => RecvTimeoutError::Disconnected,
            }),
            Some(w) => t.done.recv_timeout(w.min(STUCK)),
        };
        match got {
            Ok((done, description)) => {
                self.sent.pop_front();
                self.description = description;
                if done.result.is_err() {
                    // The encoder restarts with an IDR itself.
                    tracing::debug!("encode failed on the encoder thread");
                }
                Some(done)
            }
            Err(RecvTimeoutError::Timeout) => {
                if sent.elapsed() >= STUCK {
                    tracing::warn!("the encoder thread stopped answering; its frames are dropped");
                    self.give_up();
                    return self.take(None);
                }
                None
            }
            Err(RecvTimeoutError::Disconnected) => {
                tracing::warn!("the encoder thread died; its frames are dropped");
                self.give_up();
                self.take(None)
            }
        }
    }
}

impl Drop for EncodeWorker {
    fn drop(&mut self) {
        if let Some(mut t) = self.thread.take() {
            let handle = t.handle.take();
            drop(t);
            if let Some(h) = handle {
                let _ = h.join();
            }
        }
    }
}
