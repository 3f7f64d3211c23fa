//! One bench stream through the shared stream engine: its clip as the
//! engine's source (paced at the frame rate or a window in flight) and a
//! sink that keeps one sample per released frame for the report.

use super::report::{FrameSample, FrameScore, StreamRun};
use super::{other, BenchOptions};
use crate::backend::Backend;
use crate::codec::{is_keyframe, Encoder, EncoderConfig};
use crate::engine::{
    drive, Engine, EngineOptions, Feed, Input, Output, PassthroughOptions, Sink, Source,
};
use crate::error::Error;
use crate::livekit::media::{admit, MAX_IN_FLIGHT};
use crate::pipeline::stream::StreamPipeline;
use crate::synth::{Scenario, Synth};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub(super) struct Stream<'a> {
    pub(super) id: u32,
    pub(super) opts: &'a BenchOptions,
    pub(super) aus: &'a [Vec<u8>],
    pub(super) window: usize,
    pub(super) start: Instant,
    /// Pacing phase of this stream (streams are spread over a frame interval).
    pub(super) offset: Duration,
    /// `--gpu`: NVDEC into device memory, kernels on this stream's own CUDA
    /// stream, NVENC where the GPU has one (the device path of `censor`).
    pub(super) backend: &'a Backend,
    pub(super) passthrough: PassthroughOptions,
}

impl Stream<'_> {
    fn due(&self, k: usize) -> Instant {
        self.start + self.offset + Duration::from_secs_f64(k as f64 / self.opts.fps)
    }

    pub(super) fn run(&self, pipe: StreamPipeline, scenario: Scenario) -> Result<StreamRun, Error> {
        let o = self.opts;
        let mut engine = Engine::new(
            pipe,
            self.backend,
            EngineOptions {
                passthrough: self.passthrough,
                fps: o.fps as f32,
                encode: true,
                max_in_flight: (o.paced && o.live).then_some(MAX_IN_FLIGHT),
                snapshot_every: None,
                late_margin: (o.paced && o.live).then_some(crate::engine::LATE_MARGIN),
            },
        )?;
        let first = self.due(0);
        if let Some(d) = first.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
        // Paced with passthrough: the clip is encoded as it plays, so that
        // a key frame asked for comes as a live broadcaster's would.
        let live = (o.paced && self.passthrough.enabled)
            .then(|| LiveClip::start(o, scenario, self.passthrough));
        let mut source = ClipSource {
            stream: self,
            next: 0,
            live,
            input_bytes: 0,
        };
        let mut sink = Collector {
            start: self.start,
            fps: o.fps,
            samples: Vec::with_capacity(self.aus.len()),
        };
        drive(&mut engine, &mut source, &mut sink)?;
        let (source_cpu_s, keyframes_asked) = match source.live.take() {
            Some(l) => l.finish()?,
            None => (0.0, 0),
        };
        Ok(StreamRun {
            id: self.id,
            scenario: scenario.name().to_string(),
            frames_in: self.aus.len() as u64,
            samples: sink.samples,
            encoder: engine.encoder_description(),
            second_looks: engine.pipeline().counters().second_looks,
            input_bytes: source.input_bytes,
            source_cpu_s,
            keyframes_asked,
        })
    }
}

/// The clip as a live broadcaster sends it: a key frame asked for (the
/// engine's PLI) comes on the frame after the request, at most one per
/// `keyframe_gap` (the live rate limit), besides the clip's own periodic
/// ones. From a forced key frame up to the clip's next own key frame the
/// frames are rendered and encoded again, one frame ahead, on a thread of
/// their own (after its next key frame the clip's own units decode the
/// same whatever came before); that encoding is the broadcaster's work,
/// not ours: the run reports its CPU apart.
struct LiveClip {
    /// Frames to encode, in order; a frame not following the last one
    /// starts a new encoder (whose first frame is a key frame).
    want: mpsc::Sender<usize>,
    frames: mpsc::Receiver<Result<Vec<u8>, Error>>,
    thread: Option<std::thread::JoinHandle<f64>>,
    /// The frame asked of the thread, not yet taken.
    ahead: Option<usize>,
    /// Frames before this come from the thread (a forced key frame's span).
    live_until: Option<usize>,
    /// A key frame was asked for and not yet passed on.
    asked: bool,
    /// The last frame a key frame was forced at.
    last_forced: Option<usize>,
    gap_frames: usize,
    keyframes_asked: u64,
}

impl LiveClip {
    fn start(o: &BenchOptions, scenario: Scenario, p: PassthroughOptions) -> Self {
        let (want, todo) = mpsc::channel::<usize>();
        let (send, frames) = mpsc::channel();
        let cfg = super::clips::synth_config(o);
        let thread = std::thread::spawn(move || {
            let run = || -> Result<(), Error> {
                let synth = Synth::new(scenario, cfg.clone())?;
                let config = EncoderConfig::new(cfg.width, cfg.height, cfg.fps as f32);
                let mut enc: Option<(Encoder, usize)> = None;
                for i in todo {
                    let mut e = match enc.take() {
                        Some((e, last)) if last + 1 == i => e,
                        _ => Encoder::new(config)?,
                    };
                    let au = e.encode(&synth.frame(i).frame, false)?;
                    enc = Some((e, i));
                    if send.send(Ok(au)).is_err() {
                        break;
                    }
                }
                Ok(())
            };
            if let Err(e) = run() {
                let _ = send.send(Err(e));
            }
            thread_cpu_seconds()
        });
        LiveClip {
            want,
            frames,
            thread: Some(thread),
            ahead: None,
            live_until: None,
            asked: false,
            last_forced: None,
            gap_frames: (p.keyframe_gap.as_secs_f64() * o.fps).ceil() as usize,
            keyframes_asked: 0,
        }
    }

    /// Frame `k` of the clip whose own units are `clip`.
    fn frame(&mut self, k: usize, clip: &[Vec<u8>]) -> Result<Vec<u8>, Error> {
        let au = if self.ahead == Some(k) {
            self.ahead = None;
            self.frames
                .recv()
                .map_err(|_| other("the clip's encoder thread stopped"))??
        } else {
            clip.get(k).cloned().unwrap_or_default()
        };
        let next = k + 1;
        let Some(own) = clip.get(next) else {
            return Ok(au);
        };
        if self.live_until.is_some_and(|n| next >= n) {
            self.live_until = None;
        }
        let own_key = is_keyframe(own);
        if self.asked && self.live_until.is_none() {
            let allowed = self.last_forced.is_none_or(|f| next >= f + self.gap_frames);
            if own_key {
                self.asked = false;
            } else if allowed {
                self.asked = false;
                self.last_forced = Some(next);
                let end = (next + 1..clip.len())
                    .find(|&i| clip.get(i).is_some_and(|a| is_keyframe(a)))
                    .unwrap_or(clip.len());
                self.live_until = Some(end);
            }
        }
        if self.live_until.is_some_and(|n| next < n) {
            self.want
                .send(next)
                .map_err(|_| other("the clip's encoder thread stopped"))?;
            self.ahead = Some(next);
        }
        Ok(au)
    }

    fn ask(&mut self) {
        self.asked = true;
        self.keyframes_asked += 1;
    }

    /// The thread's CPU seconds and the key frames asked for.
    fn finish(mut self) -> Result<(f64, u64), Error> {
        drop(self.want);
        let cpu = match self.thread.take().map(|t| t.join()) {
            Some(Ok(c)) => c,
            Some(Err(_)) => return Err(other("the clip's encoder thread panicked")),
            None => 0.0,
        };
        Ok((cpu, self.keyframes_asked))
    }
}

/// CPU seconds of the calling thread.
fn thread_cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/thread-self/stat") else {
        return 0.0;
    };
    super::machine::cpu_seconds_of(&stat)
}

/// A synthetic clip's access units as a source: paced at the frame rate
/// (each at its due time, which is its arrival; `live`: admitted as a live
/// track's, as if queued at that time), or unpaced (a window in flight).
struct ClipSource<'a, 'b> {
    stream: &'b Stream<'a>,
    next: usize,
    live: Option<LiveClip>,
    input_bytes: u64,
}

impl Source for ClipSource<'_, '_> {
    fn next(&mut self, in_flight: usize) -> Result<Feed, Error> {
        let (s, o) = (self.stream, self.stream.opts);
        let Some(au) = s.aus.get(self.next) else {
            return Ok(Feed::End);
        };
        let now = Instant::now();
        let arrival = if o.paced {
            let due = s.due(self.next);
            if due > now {
                return Ok(Feed::Wait((due - now).min(Duration::from_millis(20))));
            }
            due
        } else {
            if in_flight >= s.window {
                return Ok(Feed::Wait(Duration::from_millis(20)));
            }
            now
        };
        let pts = (self.next as f64 * 90_000.0 / o.fps).round() as i64;
        let data: std::sync::Arc<[u8]> = match self.live.as_mut() {
            Some(l) => l.frame(self.next, s.aus)?.into(),
            None => au.as_slice().into(),
        };
        self.input_bytes += data.len() as u64;
        self.next += 1;
        let (show, stale) = if o.paced && o.live {
            admit(au, now, arrival, arrival)
        } else {
            (true, false)
        };
        Ok(Feed::Input(Input::AccessUnit {
            data,
            pts,
            arrival,
            origin: arrival,
            contiguous: true,
            show,
            stale,
        }))
    }

    fn keyframe_wanted(&mut self) {
        if let Some(l) = self.live.as_mut() {
            l.ask();
        }
    }
}

/// The bench's sink: one sample per released frame.
struct Collector {
    start: Instant,
    fps: f64,
    samples: Vec<FrameSample>,
}

impl Sink for Collector {
    fn write(&mut self, out: Output) -> Result<(), Error> {
        let since = |t: Instant| t.saturating_duration_since(self.start).as_secs_f64();
        let au = match out.encoded {
            Some(Ok(au)) => au,
            Some(Err(e)) => return Err(other(format!("frame {}: encoder: {e}", out.index))),
            None => Vec::new(),
        };
        self.samples.push(FrameSample {
            // The clip's frame, from the timestamp the source gave it: the
            // engine's own index counts released frames only, which is
            // not the clip's once `--live` skips some (the ground truth
            // would be another frame's).
            index: (out.pts as f64 * self.fps / 90_000.0).round().max(0.0) as u64,
            arrival_s: since(out.arrived),
            output_s: since(out.done),
            times: out.times,
            status: out.record.status,
            reason: out.record.reason,
            masks: out.record.masks,
            detections: out.record.detections,
            au,
            passthrough: out.record.passthrough,
            score: FrameScore::default(),
            truth_misses: Vec::new(),
        });
        Ok(())
    }
}
