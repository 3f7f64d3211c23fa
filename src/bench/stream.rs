//! One bench stream through the shared stream engine: its clip as the
//! engine's source (paced at the frame rate or a window in flight) and a
//! sink that keeps one sample per released frame for the report.

use super::report::{FrameSample, FrameScore, StreamRun};
use super::{other, BenchOptions};
use crate::backend::Backend;
use crate::engine::{
    drive, Engine, EngineOptions, Feed, Input, Output, PassthroughOptions, Sink, Source,
};
use crate::error::Error;
use crate::livekit::media::{admit, MAX_IN_FLIGHT};
use crate::pipeline::stream::StreamPipeline;
use crate::synth::Scenario;
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
            },
        )?;
        let first = self.due(0);
        if let Some(d) = first.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
        let mut source = ClipSource {
            stream: self,
            next: 0,
        };
        let mut sink = Collector {
            start: self.start,
            fps: o.fps,
            samples: Vec::with_capacity(self.aus.len()),
        };
        drive(&mut engine, &mut source, &mut sink)?;
        Ok(StreamRun {
            id: self.id,
            scenario: scenario.name().to_string(),
            frames_in: self.aus.len() as u64,
            samples: sink.samples,
            encoder: engine.encoder_description(),
            second_looks: engine.pipeline().counters().second_looks,
            input_bytes: self.aus.iter().map(|a| a.len() as u64).sum(),
        })
    }
}

/// A synthetic clip's access units as a source: paced at the frame rate
/// (each at its due time, which is its arrival; `live`: admitted as a live
/// track's, as if queued at that time), or unpaced (a window in flight).
struct ClipSource<'a, 'b> {
    stream: &'b Stream<'a>,
    next: usize,
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
        self.next += 1;
        let (show, stale) = if o.paced && o.live {
            admit(au, now, arrival, arrival)
        } else {
            (true, false)
        };
        Ok(Feed::Input(Input::AccessUnit {
            data: au.as_slice().into(),
            pts,
            arrival,
            origin: arrival,
            contiguous: true,
            show,
            stale,
        }))
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
