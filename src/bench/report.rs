//! The pure half of the bench: per-frame samples in, a report out
//! (percentiles, per-stage split, fps held, coverage, leaks), the terminal
//! table, and the capacity search over a run function.

use crate::audit::coverage;
use crate::frame::{BBox, Detection, Mask};
use crate::pipeline::sidecar::Status;
use crate::pipeline::stream::StageTimes;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Stage names in the order of [`stage_values`].
pub const STAGES: [&str; 7] = [
    "decode",
    "preprocess",
    "queue_wait",
    "infer",
    "track",
    "censor",
    "encode",
];

/// A frame's stage times in the order of [`STAGES`], seconds.
pub fn stage_values(t: &StageTimes) -> [f64; 7] {
    [
        t.decode,
        t.preprocess,
        t.queue_wait,
        t.infer,
        t.track,
        t.censor,
        t.encode,
    ]
}

/// One output frame of one stream, as the bench measured it.
#[derive(Clone, Debug)]
pub struct FrameSample {
    pub index: u64,
    /// When the frame arrived (its pacing slot, or when it was fed when
    /// unpaced), seconds since the run started.
    pub arrival_s: f64,
    /// When its censored frame was encoded, seconds since the run started.
    pub output_s: f64,
    pub times: StageTimes,
    pub status: Status,
    /// Why a frame failed closed.
    pub reason: Option<String>,
    pub masks: Vec<Mask>,
    /// The frame's own detections that the policy censors (for recall).
    pub detections: Vec<Detection>,
    /// The encoded access unit (for the pixel audit).
    pub au: Vec<u8>,
    /// It left as the input's own access unit.
    pub passthrough: bool,
    /// Filled after the run from ground truth and the audit.
    pub score: FrameScore,
    /// The ground-truth faces this frame left visible.
    pub truth_misses: Vec<TruthMiss>,
}

/// A ground-truth face a frame left visible, for the report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TruthMiss {
    pub frame: u64,
    pub object: u32,
    /// x0, y0, x1, y1 (the visible part of the face box).
    pub bbox: [f32; 4],
    /// Share of the face inside the frame and not covered.
    pub visible: f32,
    pub mask_coverage: f32,
    pub detail_ratio: f32,
    /// One of the frame's own detections found it.
    pub detected: bool,
}

impl FrameSample {
    /// Added latency: arrival -> censored frame encoded, ms.
    pub fn latency_ms(&self) -> f64 {
        (self.output_s - self.arrival_s) * 1e3
    }
}

/// What the audit and the ground truth say about one output frame.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FrameScore {
    /// Ground-truth face area on the frame (px²).
    pub truth_area: f64,
    /// The part of it under the frame's masks (px²).
    pub truth_covered: f64,
    /// Masked area outside ground truth, share of the frame.
    pub over_censored: f64,
    /// Ground-truth faces on the frame.
    pub truth_faces: u32,
    /// Of those, faces left visible in the output: masks cover less than
    /// `min_truth_coverage` of their visible part, or its detail survives
    /// in the decoded output (the ground-truth gate).
    pub truth_uncensored: u32,
    /// Of those, faces the detector finds with the pipeline's preprocessing
    /// and threshold, run again on the input frame (IoU >= [`RECALL_IOU`];
    /// with the audit).
    pub truth_found: u32,
    /// Of those, faces the reference detector found on the input
    /// (NudeNet's own preprocessing: square, bilinear; with the audit).
    pub truth_found_reference: u32,
    /// Regions the audit's detector found that the policy censors.
    pub regions: u32,
    /// Of those, regions not hidden (masks or pixels).
    pub leaks: u32,
    pub audited: bool,
}

/// One stream of a run.
#[derive(Clone, Debug)]
pub struct StreamRun {
    pub id: u32,
    pub scenario: String,
    /// Access units fed in.
    pub frames_in: u64,
    pub samples: Vec<FrameSample>,
    /// The encoder it used, and on the device path why.
    pub encoder: String,
    /// Crops sent back to the detector for a second look.
    pub second_looks: u64,
    /// Bytes of the access units fed in (the input's bitrate).
    pub input_bytes: u64,
    /// CPU seconds of the clip's own encoder (paced with passthrough: the
    /// broadcaster's work, not ours; left out of the run's CPU).
    pub source_cpu_s: f64,
    /// Key frames the engine asked of the source (live: PLIs).
    pub keyframes_asked: u64,
}

/// What the run was asked to do.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunSetup {
    pub streams: usize,
    pub width: usize,
    pub height: usize,
    pub fps: f64,
    pub frames_per_stream: usize,
    pub mode: String,
    pub detect_every: u32,
    pub paced: bool,
    /// Paced input admitted as `serve` admits a live track (`--live`).
    #[serde(default)]
    pub live: bool,
    pub latency_budget_ms: f64,
    pub detector_threads: usize,
    pub contexts: usize,
    /// Threads or contexts came from the core count (neither the file nor
    /// a flag set them), on this many cores.
    #[serde(default)]
    pub detector_sizes_from_cores: Option<usize>,
    pub max_batch: usize,
    /// The detector input: letterbox and tensor size, e.g. `rect 320x192`.
    #[serde(default)]
    pub detector_input: String,
    /// `--gpu`: NVDEC decode and CUDA kernels.
    #[serde(default)]
    pub gpu: bool,
    /// The encoder the streams used (NVENC or openh264, and why).
    #[serde(default)]
    pub encoder: String,
}

/// Process resources over the timed part.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    pub wall_s: f64,
    /// user + sys CPU seconds.
    pub cpu_s: f64,
    /// Peak resident set (VmHWM), MiB.
    pub peak_rss_mib: f64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub mean: f64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    pub fn of(values: &[f64]) -> Percentiles {
        if values.is_empty() {
            return Percentiles::default();
        }
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        Percentiles {
            mean: v.iter().sum::<f64>() / v.len() as f64,
            p50: percentile(&v, 50.0),
            p95: percentile(&v, 95.0),
            p99: percentile(&v, 99.0),
            max: v[v.len() - 1],
        }
    }
}

/// The crate's one percentile (nearest rank).
pub use crate::stats::percentile;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StageStat {
    pub stage: String,
    pub mean_ms: f64,
    pub p99_ms: f64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamStat {
    pub id: u32,
    pub scenario: String,
    pub frames_in: u64,
    pub frames_out: u64,
    pub fps_held: f64,
    pub latency_p99_ms: f64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ScenarioStat {
    pub scenario: String,
    pub streams: usize,
    pub frames: u64,
    pub verified: u64,
    pub predicted: u64,
    pub fail_closed: u64,
    /// Share of ground-truth face area under masks (1 when there is none).
    pub tracking_coverage: f64,
    /// Mean share of the frame masked outside ground truth.
    pub over_censored: f64,
    /// Ground-truth face-frames (one face on one frame).
    #[serde(default)]
    pub truth_faces: u64,
    /// Of those, left visible in the output (the gate: must be 0 in
    /// strict mode).
    #[serde(default)]
    pub truth_uncensored: u64,
    /// Share of ground-truth face-frames the detector finds on the input
    /// frame with the pipeline's preprocessing and threshold (run again on
    /// every frame after the run, so load does not change it; audited runs).
    #[serde(default)]
    pub recall: Option<f64>,
    /// The same with NudeNet's own preprocessing (square, bilinear) at the
    /// policy threshold, the reference (audited runs).
    #[serde(default)]
    pub recall_reference: Option<f64>,
    /// The first few faces left visible.
    #[serde(default)]
    pub truth_misses: Vec<TruthMiss>,
    pub audited_frames: u64,
    pub regions: u64,
    pub leaked_regions: u64,
    pub leaked_frames: u64,
}

/// The report of one run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    pub setup: RunSetup,
    pub frames_in: u64,
    pub frames_out: u64,
    /// frames in - frames out (must be 0).
    pub dropped: u64,
    pub verified: u64,
    pub predicted: u64,
    pub fail_closed: u64,
    /// Crops sent back to the detector for a second look (weak
    /// candidates), over all streams.
    #[serde(default)]
    pub second_looks: u64,
    /// Fail-closed frames by reason.
    pub fail_reasons: BTreeMap<String, u64>,
    /// Frames whose added latency is above the budget.
    pub late: u64,
    pub latency_ms: Percentiles,
    pub stages: Vec<StageStat>,
    pub fps_total: f64,
    pub fps_target_total: f64,
    pub streams: Vec<StreamStat>,
    pub resources: Resources,
    /// CPU seconds / wall seconds.
    pub cores_used: f64,
    pub audited: bool,
    pub leaked_regions: u64,
    pub leaked_frames: u64,
    /// Ground-truth face-frames, and those left visible (every scenario).
    #[serde(default)]
    pub truth_faces: u64,
    #[serde(default)]
    pub truth_uncensored: u64,
    pub scenarios: Vec<ScenarioStat>,
    /// Real time held: every frame out on time (fps >= 97% of target, none
    /// dropped, none failed closed) and the p99 within the latency budget.
    pub held: bool,
    /// The real-time deadline alone: as `held` without the latency budget.
    #[serde(default)]
    pub realtime: bool,
    /// Test-only detector faults injected during the run, and what they did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub faults: Option<FaultReport>,
    #[serde(default)]
    pub passthrough: PassthroughStat,
}

/// What the injected detector faults (`--fault-detector-*`) did to a run:
/// frames are counted by when they arrived against the fault window (in
/// run seconds), so "after" shows whether the streams recovered.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FaultReport {
    /// The plan, as the flags gave it.
    pub plan: String,
    /// The window in run seconds (arrival time of frames); its end is
    /// where the fault's effect ends (a stall at the window's end included).
    pub window_s: (f64, Option<f64>),
    pub stalled_batches: u64,
    pub failed_batches: u64,
    /// Frames in the batches the faults hit.
    pub faulted_frames: u64,
    /// Frames arriving before, inside and after the window, and of those
    /// the ones failed closed.
    pub frames: [u64; 3],
    pub fail_closed: [u64; 3],
    /// Frames arriving from 1 s after the window's end (time to drain the
    /// backlog), and of those the ones failed closed.
    pub settled_frames: u64,
    pub settled_fail_closed: u64,
    /// Frames failed closed per second of the run (by arrival), all
    /// streams: where the fault's effect begins and ends.
    #[serde(default)]
    pub fail_closed_per_s: Vec<u64>,
}

/// Recovered: from 1 s after the fault, frames fail closed no more often
/// than before it, give or take this share (a busy machine misses some
/// deadlines without any fault).
pub const RECOVERY_SLACK: f64 = 0.05;

impl FaultReport {
    /// Whether the streams came back to their share of fail-closed frames
    /// before the fault; `None` for a window without an end (or no frames).
    pub fn recovered(&self) -> Option<bool> {
        self.window_s.1?;
        if self.settled_frames == 0 {
            return None;
        }
        let share = |n: u64, d: u64| if d == 0 { 0.0 } else { n as f64 / d as f64 };
        Some(
            share(self.settled_fail_closed, self.settled_frames)
                <= share(self.fail_closed[0], self.frames[0]) + RECOVERY_SLACK,
        )
    }

    /// Counts `samples` against a window of `[start, end)` run seconds.
    pub fn count(&mut self, samples: &[FrameSample]) {
        let (start, end) = self.window_s;
        for s in samples {
            let t = s.arrival_s;
            let phase = if t < start {
                0
            } else if end.is_none_or(|e| t < e) {
                1
            } else {
                2
            };
            let closed = s.status == Status::FailClosed;
            let sec = t.max(0.0) as usize;
            if self.fail_closed_per_s.len() <= sec {
                self.fail_closed_per_s.resize(sec + 1, 0);
            }
            self.fail_closed_per_s[sec] += u64::from(closed);
            self.frames[phase] += 1;
            self.fail_closed[phase] += u64::from(closed);
            if end.is_some_and(|e| t >= e + 1.0) {
                self.settled_frames += 1;
                self.settled_fail_closed += u64::from(closed);
            }
        }
    }
}

/// Clean frames that left as the input's own access units, what that
/// saved, and what it did to the bitrate.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PassthroughStat {
    /// Frames forwarded, over all streams.
    pub frames: u64,
    /// Of all frames out.
    pub share: f64,
    /// Mean encode time of the frames our encoder encoded.
    pub encode_ms_per_encoded: f64,
    /// Encoder time not spent: forwarded frames x the mean above, per
    /// second of video per stream (ms/s).
    pub encode_ms_saved_per_s: f64,
    /// Mean bitrate per stream in and out, kbit/s.
    pub input_kbps: f64,
    pub output_kbps: f64,
    /// Key frames the streams asked of their sources (live: PLIs), and
    /// the source's own encoding time left out of the run's CPU.
    #[serde(default)]
    pub keyframes_asked: u64,
    #[serde(default)]
    pub source_cpu_s: f64,
}

impl PassthroughStat {
    fn of(runs: &[StreamRun], fps: f64) -> PassthroughStat {
        let all: Vec<&FrameSample> = runs.iter().flat_map(|r| r.samples.iter()).collect();
        let frames = all.iter().filter(|s| s.passthrough).count() as u64;
        let encoded: Vec<f64> = all
            .iter()
            .filter(|s| !s.passthrough)
            .map(|s| s.times.encode * 1e3)
            .collect();
        let per_encoded = if encoded.is_empty() {
            0.0
        } else {
            encoded.iter().sum::<f64>() / encoded.len() as f64
        };
        let seconds = |n: usize| if fps > 0.0 { n as f64 / fps } else { 0.0 };
        let video_s: f64 = runs.iter().map(|r| seconds(r.samples.len())).sum();
        let kbps = |bytes: u64| {
            if video_s > 0.0 {
                bytes as f64 * 8.0 / video_s / 1e3
            } else {
                0.0
            }
        };
        let out_bytes: u64 = all.iter().map(|s| s.au.len() as u64).sum();
        PassthroughStat {
            frames,
            share: if all.is_empty() {
                0.0
            } else {
                frames as f64 / all.len() as f64
            },
            encode_ms_per_encoded: per_encoded,
            encode_ms_saved_per_s: if video_s > 0.0 {
                frames as f64 * per_encoded / video_s
            } else {
                0.0
            },
            input_kbps: kbps(runs.iter().map(|r| r.input_bytes).sum()),
            output_kbps: kbps(out_bytes),
            keyframes_asked: runs.iter().map(|r| r.keyframes_asked).sum(),
            source_cpu_s: runs.iter().map(|r| r.source_cpu_s).sum(),
        }
    }
}

/// Faces left visible listed per scenario.
const MISSES_REPORTED: usize = 12;

/// A detection finds a ground-truth face when their IoU is at least this.
pub const RECALL_IOU: f32 = 0.3;

/// Share of the fps target a run must hold.
pub const HELD_SHARE: f64 = 0.97;

/// Frames per second a stream held: its frames over the span from its first
/// arrival to its last output, plus one frame interval (so a stream that
/// keeps up with zero latency holds exactly its rate).
pub fn fps_held(samples: &[FrameSample], fps: f64) -> f64 {
    let (Some(first), Some(last)) = (
        samples
            .iter()
            .map(|s| s.arrival_s)
            .min_by(|a, b| a.total_cmp(b)),
        samples
            .iter()
            .map(|s| s.output_s)
            .max_by(|a, b| a.total_cmp(b)),
    ) else {
        return 0.0;
    };
    let tick = if fps > 0.0 { 1.0 / fps } else { 0.0 };
    let span = (last - first).max(0.0) + tick;
    if span > 0.0 {
        samples.len() as f64 / span
    } else {
        0.0
    }
}

/// Ground-truth area covered by `masks` (px², weighted by [`coverage`]) and
/// the total ground-truth area.
pub fn truth_coverage(truth: &[BBox], masks: &[Mask]) -> (f64, f64) {
    truth.iter().fold((0.0, 0.0), |(c, t), b| {
        let a = b.area().max(0.0) as f64;
        (c + a * coverage(b, masks) as f64, t + a)
    })
}

/// Share of the `width` x `height` frame under `masks` but outside every
/// ground-truth box, on a sample grid.
pub fn over_censored(truth: &[BBox], masks: &[Mask], width: usize, height: usize) -> f64 {
    if masks.is_empty() || width == 0 || height == 0 {
        return 0.0;
    }
    const N: usize = 64;
    let (w, h) = (width as f32, height as f32);
    let mut hit = 0usize;
    for j in 0..N {
        let y = (j as f32 + 0.5) * h / N as f32;
        for i in 0..N {
            let x = (i as f32 + 0.5) * w / N as f32;
            let inside_truth = truth
                .iter()
                .any(|b| x >= b.x0 && x < b.x1 && y >= b.y0 && y < b.y1);
            if !inside_truth && masks.iter().any(|m| crate::audit::mask_contains(m, x, y)) {
                hit += 1;
            }
        }
    }
    hit as f64 / (N * N) as f64
}

/// Builds the report of one run from its streams.
pub fn aggregate(setup: RunSetup, runs: &[StreamRun], res: Resources) -> RunReport {
    let all: Vec<&FrameSample> = runs.iter().flat_map(|r| r.samples.iter()).collect();
    let lat: Vec<f64> = all.iter().map(|s| s.latency_ms()).collect();
    let count = |st: Status| all.iter().filter(|s| s.status == st).count() as u64;
    let frames_in: u64 = runs.iter().map(|r| r.frames_in).sum();
    let frames_out = all.len() as u64;
    let stages = STAGES
        .iter()
        .enumerate()
        .map(|(k, name)| {
            let v: Vec<f64> = all
                .iter()
                .map(|s| stage_values(&s.times)[k] * 1e3)
                .collect();
            let p = Percentiles::of(&v);
            StageStat {
                stage: name.to_string(),
                mean_ms: p.mean,
                p99_ms: p.p99,
            }
        })
        .collect();
    let streams: Vec<StreamStat> = runs
        .iter()
        .map(|r| {
            let l: Vec<f64> = r.samples.iter().map(|s| s.latency_ms()).collect();
            StreamStat {
                id: r.id,
                scenario: r.scenario.clone(),
                frames_in: r.frames_in,
                frames_out: r.samples.len() as u64,
                fps_held: fps_held(&r.samples, setup.fps),
                latency_p99_ms: Percentiles::of(&l).p99,
            }
        })
        .collect();
    let fps_total: f64 = streams.iter().map(|s| s.fps_held).sum();
    let fps_target_total = setup.fps * runs.len() as f64;
    let mut seen: Vec<&str> = Vec::new();
    for r in runs {
        if !seen.contains(&r.scenario.as_str()) {
            seen.push(&r.scenario);
        }
    }
    let scenarios: Vec<ScenarioStat> = seen
        .iter()
        .map(|name| {
            let rs: Vec<&StreamRun> = runs.iter().filter(|r| r.scenario == *name).collect();
            let ss: Vec<&FrameSample> = rs.iter().flat_map(|r| r.samples.iter()).collect();
            let n = |st: Status| ss.iter().filter(|s| s.status == st).count() as u64;
            let (cov, area) = ss.iter().fold((0.0, 0.0), |(c, a), s| {
                (c + s.score.truth_covered, a + s.score.truth_area)
            });
            let audited: Vec<&&FrameSample> = ss.iter().filter(|s| s.score.audited).collect();
            let sum = |f: fn(&FrameScore) -> u32, of: &[&&FrameSample]| -> u64 {
                of.iter().map(|s| f(&s.score) as u64).sum()
            };
            let all: Vec<&&FrameSample> = ss.iter().collect();
            let share = |a: u64, b: u64| if b > 0 { a as f64 / b as f64 } else { 1.0 };
            let faces = |of: &[&&FrameSample]| sum(|s| s.truth_faces, of);
            ScenarioStat {
                scenario: name.to_string(),
                streams: rs.len(),
                frames: ss.len() as u64,
                verified: n(Status::Verified),
                predicted: n(Status::Predicted),
                fail_closed: n(Status::FailClosed),
                tracking_coverage: if area > 0.0 { cov / area } else { 1.0 },
                over_censored: if ss.is_empty() {
                    0.0
                } else {
                    ss.iter().map(|s| s.score.over_censored).sum::<f64>() / ss.len() as f64
                },
                truth_faces: faces(&all),
                truth_uncensored: sum(|s| s.truth_uncensored, &all),
                recall: (!audited.is_empty())
                    .then(|| share(sum(|s| s.truth_found, &audited), faces(&audited))),
                truth_misses: ss
                    .iter()
                    .flat_map(|s| s.truth_misses.iter().cloned())
                    .take(MISSES_REPORTED)
                    .collect(),
                recall_reference: (!audited.is_empty())
                    .then(|| share(sum(|s| s.truth_found_reference, &audited), faces(&audited))),
                audited_frames: audited.len() as u64,
                regions: audited.iter().map(|s| s.score.regions as u64).sum(),
                leaked_regions: audited.iter().map(|s| s.score.leaks as u64).sum(),
                leaked_frames: audited.iter().filter(|s| s.score.leaks > 0).count() as u64,
            }
        })
        .collect();
    let latency_ms = Percentiles::of(&lat);
    let dropped = frames_in.saturating_sub(frames_out);
    let fail_closed = count(Status::FailClosed);
    // A frame censored whole missed its deadline (or the detector failed):
    // the machine did not keep up, however fast frames left.
    let realtime = dropped == 0
        && frames_out > 0
        && fail_closed == 0
        && fps_total >= HELD_SHARE * fps_target_total;
    let held = realtime && latency_ms.p99 <= setup.latency_budget_ms;
    RunReport {
        frames_in,
        frames_out,
        dropped,
        verified: count(Status::Verified),
        predicted: count(Status::Predicted),
        fail_closed,
        second_looks: runs.iter().map(|r| r.second_looks).sum(),
        fail_reasons: all.iter().filter_map(|s| s.reason.clone()).fold(
            BTreeMap::new(),
            |mut m, r| {
                *m.entry(r).or_insert(0) += 1;
                m
            },
        ),
        late: lat.iter().filter(|l| **l > setup.latency_budget_ms).count() as u64,
        latency_ms,
        stages,
        fps_total,
        fps_target_total,
        streams,
        cores_used: if res.wall_s > 0.0 {
            res.cpu_s / res.wall_s
        } else {
            0.0
        },
        resources: res,
        audited: all.iter().any(|s| s.score.audited),
        leaked_regions: scenarios.iter().map(|s| s.leaked_regions).sum(),
        leaked_frames: scenarios.iter().map(|s| s.leaked_frames).sum(),
        truth_faces: scenarios.iter().map(|s| s.truth_faces).sum(),
        truth_uncensored: scenarios.iter().map(|s| s.truth_uncensored).sum(),
        scenarios,
        held,
        realtime,
        passthrough: PassthroughStat::of(runs, setup.fps),
        setup,
        faults: None,
    }
}

/// The whole bench output: the main run, or the capacity steps.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BenchReport {
    pub date: String,
    pub machine: String,
    pub runs: Vec<RunReport>,
    /// With `--find-capacity`: the most streams held in real time within
    /// the latency budget.
    pub capacity: Option<usize>,
    /// With `--find-capacity`: the most streams that kept the real-time
    /// deadline (every frame verified and out at the frame rate), whatever
    /// their latency.
    #[serde(default)]
    pub capacity_realtime: Option<usize>,
}

/// The stream counts a capacity search found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Capacity {
    /// Most streams held within the latency budget (0 if none).
    pub within_budget: usize,
    /// Most streams that kept the real-time deadline (0 if none).
    pub realtime: usize,
}

/// Raises the stream count from 1 until a run misses the real-time deadline
/// (or `max`), and returns every step's report and the capacities: the
/// latency budget is the first to break, so counting goes on past it. A
/// step over the budget ends the within-budget count even if a later one
/// happens to meet it again.
pub fn find_capacity<E>(
    max: usize,
    mut run: impl FnMut(usize) -> Result<RunReport, E>,
) -> Result<(Vec<RunReport>, Capacity), E> {
    let mut steps = Vec::new();
    let mut cap = Capacity::default();
    let mut budget_broken = false;
    for n in 1..=max.max(1) {
        let r = run(n)?;
        let (held, realtime) = (r.held, r.realtime);
        steps.push(r);
        if !realtime {
            break;
        }
        cap.realtime = n;
        budget_broken |= !held;
        if !budget_broken {
            cap.within_budget = n;
        }
    }
    Ok((steps, cap))
}

fn pct(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}

impl RunReport {
    /// The terminal table.
    pub fn table(&self) -> String {
        let s = &self.setup;
        let mut o = String::new();
        let _ = writeln!(
            o,
            "{} stream(s) {}x{} @ {} fps, {} mode{}, {}, {} frames/stream, detector {} thread(s) x {} context(s){}, batch <= {}, input {}{}",
            s.streams,
            s.width,
            s.height,
            s.fps,
            s.mode,
            if s.mode == "predictive" {
                format!(" (detect every {})", s.detect_every)
            } else {
                String::new()
            },
            match (s.paced, s.live) {
                (true, true) => "paced, live admission",
                (true, false) => "paced",
                _ => "unpaced",
            },
            s.frames_per_stream,
            s.detector_threads,
            s.contexts,
            match s.detector_sizes_from_cores {
                Some(n) => format!(" (from {n} cores)"),
                None => String::new(),
            },
            s.max_batch,
            s.detector_input,
            if s.gpu {
                format!(", GPU (NVDEC + kernels; encoder {})", s.encoder)
            } else {
                String::new()
            }
        );
        let l = &self.latency_ms;
        let _ = writeln!(
            o,
            "  added latency (ms)   p50 {:7.1}  p95 {:7.1}  p99 {:7.1}  max {:7.1}  (budget {} ms, {} late)",
            l.p50, l.p95, l.p99, l.max, s.latency_budget_ms, self.late
        );
        let _ = writeln!(o, "  stage (ms)        mean     p99");
        for st in &self.stages {
            let _ = writeln!(
                o,
                "    {:<12} {:8.2} {:7.2}",
                st.stage, st.mean_ms, st.p99_ms
            );
        }
        let per: Vec<String> = self
            .streams
            .iter()
            .map(|x| format!("{:.1}", x.fps_held))
            .collect();
        let _ = writeln!(
            o,
            "  fps held   {:.1} of {:.0} ({})  per stream [{}]",
            self.fps_total,
            self.fps_target_total,
            pct(if self.fps_target_total > 0.0 {
                self.fps_total / self.fps_target_total
            } else {
                0.0
            }),
            per.join(" ")
        );
        let _ = writeln!(
            o,
            "  frames     in {}  out {}  dropped {}  verified {}  predicted {}  fail-closed {}  second looks {}",
            self.frames_in,
            self.frames_out,
            self.dropped,
            self.verified,
            self.predicted,
            self.fail_closed,
            self.second_looks
        );
        for (reason, n) in &self.fail_reasons {
            let _ = writeln!(o, "    fail-closed: {n} x {reason}");
        }
        let p = &self.passthrough;
        let _ = writeln!(
            o,
            "  passthrough {} frames ({})  encode {:.2} ms per encoded frame, {:.0} ms/s per stream saved  bitrate in {:.0} kbit/s  out {:.0} kbit/s  key frames asked {} (source encode {:.1} s CPU, not counted)",
            p.frames,
            pct(p.share),
            p.encode_ms_per_encoded,
            p.encode_ms_saved_per_s,
            p.input_kbps,
            p.output_kbps,
            p.keyframes_asked,
            p.source_cpu_s
        );
        let r = &self.resources;
        if let Some(f) = &self.faults {
            let end = f
                .window_s
                .1
                .map_or_else(|| "end".to_string(), |e| format!("{e:.1} s"));
            let _ = writeln!(
                o,
                "  detector faults ({}): effect from {:.1} s to {end} of the run; {} batch(es) stalled, {} failed, {} frame(s) in them",
                f.plan, f.window_s.0, f.stalled_batches, f.failed_batches, f.faulted_frames
            );
            let _ = writeln!(
                o,
                "    fail-closed / frames   before {} / {}   inside {} / {}   after {} / {}   from 1 s after: {} / {}{}",
                f.fail_closed[0],
                f.frames[0],
                f.fail_closed[1],
                f.frames[1],
                f.fail_closed[2],
                f.frames[2],
                f.settled_fail_closed,
                f.settled_frames,
                match f.recovered() {
                    Some(true) => " (recovered: no more than before the fault)",
                    Some(false) => " (NOT recovered: more than before the fault)",
                    None => "",
                }
            );
            let per_s: Vec<String> = f.fail_closed_per_s.iter().map(|n| n.to_string()).collect();
            let _ = writeln!(o, "    fail-closed per second  [{}]", per_s.join(" "));
        }
        let _ = writeln!(
            o,
            "  resources  wall {:.1} s  cpu {:.1} s  cores used {:.2}  peak RSS {:.0} MiB",
            r.wall_s, r.cpu_s, self.cores_used, r.peak_rss_mib
        );
        let _ = writeln!(
            o,
            "  {:<14} {:>6} {:>9} {:>9} {:>7} {:>8} {:>7} {:>7} {:>7} {:>6}",
            "scenario",
            "frames",
            "coverage",
            "over-cens",
            "fail-cl",
            "GT-faces",
            "GT-leak",
            "recall",
            "ref-rec",
            "leaks"
        );
        for sc in &self.scenarios {
            let leaks = if sc.audited_frames > 0 {
                format!("{}", sc.leaked_regions)
            } else {
                "-".into()
            };
            let _ = writeln!(
                o,
                "  {:<14} {:>6} {:>9} {:>9} {:>7} {:>8} {:>7} {:>7} {:>7} {:>6}",
                sc.scenario,
                sc.frames,
                pct(sc.tracking_coverage),
                pct(sc.over_censored),
                sc.fail_closed,
                sc.truth_faces,
                sc.truth_uncensored,
                sc.recall.map(pct).unwrap_or_else(|| "-".into()),
                sc.recall_reference.map(pct).unwrap_or_else(|| "-".into()),
                leaks
            );
        }
        let _ = writeln!(
            o,
            "  ground truth: {} of {} face-frame(s) left visible; recall = faces the detector finds on every input frame with the pipeline's preprocessing and threshold (IoU >= {RECALL_IOU}), ref-rec = with NudeNet's own (square, bilinear) at the policy threshold",
            self.truth_uncensored, self.truth_faces
        );
        for sc in self.scenarios.iter().filter(|s| !s.truth_misses.is_empty()) {
            let list: Vec<String> = sc
                .truth_misses
                .iter()
                .map(|m| {
                    format!(
                        "{}{} (visible {:.0}%, masked {:.0}%, detail {:.2})",
                        m.frame,
                        if m.detected { "" } else { "*" },
                        100.0 * m.visible,
                        100.0 * m.mask_coverage,
                        m.detail_ratio
                    )
                })
                .collect();
            let _ = writeln!(
                o,
                "    {} left visible on frame(s) [* = not detected on that frame; a face entering or emerging, little in view, is found a frame or two later: --lookahead 2 masks it]: {}",
                sc.scenario,
                list.join(", ")
            );
        }
        let _ = writeln!(
            o,
            "  real time {}{}",
            match (self.held, self.realtime) {
                (true, _) => "HELD".to_string(),
                (false, true) => format!(
                    "HELD, but p99 over the {} ms latency budget",
                    s.latency_budget_ms
                ),
                (false, false) => "MISSED".to_string(),
            },
            if self.audited {
                format!(
                    "; audit: {} leaked region(s) on {} frame(s)",
                    self.leaked_regions, self.leaked_frames
                )
            } else {
                "; not audited".into()
            }
        );
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{MaskOrigin, MaskShape};

    fn rect(x0: f32, y0: f32, x1: f32, y1: f32) -> Mask {
        Mask {
            bbox: BBox::new(x0, y0, x1, y1),
            shape: MaskShape::Rect,
            origin: MaskOrigin::Detected,
            class: 0,
        }
    }

    fn sample(index: u64, arrival: f64, output: f64, status: Status) -> FrameSample {
        FrameSample {
            index,
            arrival_s: arrival,
            output_s: output,
            times: StageTimes {
                decode: 0.002,
                infer: 0.010,
                ..StageTimes::default()
            },
            status,
            reason: None,
            masks: Vec::new(),
            detections: Vec::new(),
            truth_misses: Vec::new(),
            au: Vec::new(),
            passthrough: false,
            score: FrameScore::default(),
        }
    }

    fn setup(streams: usize) -> RunSetup {
        RunSetup {
            streams,
            width: 100,
            height: 100,
            fps: 10.0,
            frames_per_stream: 10,
            mode: "strict".into(),
            latency_budget_ms: 50.0,
            ..RunSetup::default()
        }
    }

    #[test]
    fn percentiles_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        let p = Percentiles::of(&v);
        assert_eq!(p.p50, 50.0);
        assert_eq!(p.p95, 95.0);
        assert_eq!(p.p99, 99.0);
        assert_eq!(p.max, 100.0);
        assert!((p.mean - 50.5).abs() < 1e-9);
        assert_eq!(Percentiles::of(&[]), Percentiles::default());
        let one = Percentiles::of(&[7.0]);
        assert_eq!((one.p50, one.p99, one.max), (7.0, 7.0, 7.0));
        // Unsorted input is sorted first.
        assert_eq!(Percentiles::of(&[3.0, 1.0, 2.0]).p50, 2.0);
    }

    #[test]
    fn coverage_and_over_censoring_on_known_boxes() {
        let truth = [BBox::new(0.0, 0.0, 50.0, 50.0)];
        // Mask covers the left half of the truth box.
        let (c, a) = truth_coverage(&truth, &[rect(0.0, 0.0, 25.0, 50.0)]);
        assert_eq!(a, 2500.0);
        assert!((c / a - 0.5).abs() < 1e-6);
        // Exact cover: nothing over-censored.
        let exact = [rect(0.0, 0.0, 50.0, 50.0)];
        assert_eq!(truth_coverage(&truth, &exact).0, 2500.0);
        assert_eq!(over_censored(&truth, &exact, 100, 100), 0.0);
        // Mask of the top half of a 100x100 frame: 5000 px, 2500 outside truth.
        let top = [rect(0.0, 0.0, 100.0, 50.0)];
        assert!((over_censored(&truth, &top, 100, 100) - 0.25).abs() < 1e-6);
        // No truth: a full-frame mask is all over-censoring.
        let full = [Mask {
            origin: MaskOrigin::FullFrame,
            ..rect(0.0, 0.0, 1.0, 1.0)
        }];
        assert_eq!(over_censored(&[], &full, 100, 100), 1.0);
        assert_eq!(truth_coverage(&truth, &full).0, 2500.0);
        assert_eq!(over_censored(&truth, &[], 100, 100), 0.0);
    }

    /// Frames are counted by arrival against the window; recovery compares
    /// the share failed closed from 1 s after the window with the share
    /// before it.
    #[test]
    fn fault_report_counts_by_phase_and_judges_recovery() {
        // 10 fps for 10 s; the window is 3 s to 5 s.
        let mut frames: Vec<FrameSample> = (0..100)
            .map(|i| {
                let a = i as f64 * 0.1;
                sample(i, a, a + 0.02, Status::Verified)
            })
            .collect();
        // One fail-closed before (of 30), all 20 inside, the backlog just
        // after (5.0-5.9 s), none from 6 s on.
        frames[7].status = Status::FailClosed;
        for f in &mut frames[30..59] {
            f.status = Status::FailClosed;
        }
        let mut f = FaultReport {
            window_s: (3.0, Some(5.0)),
            ..FaultReport::default()
        };
        f.count(&frames);
        assert_eq!(f.frames, [30, 20, 50]);
        assert_eq!(f.fail_closed, [1, 20, 9]);
        assert_eq!((f.settled_fail_closed, f.settled_frames), (0, 40));
        assert_eq!(f.fail_closed_per_s, [1, 0, 0, 10, 10, 9, 0, 0, 0, 0]);
        assert_eq!(f.recovered(), Some(true));
        // Still failing closed from 6 s on: not recovered.
        for f in &mut frames[80..] {
            f.status = Status::FailClosed;
        }
        let mut g = FaultReport {
            window_s: (3.0, Some(5.0)),
            ..FaultReport::default()
        };
        g.count(&frames);
        assert_eq!(g.settled_fail_closed, 20);
        assert_eq!(g.recovered(), Some(false));
        // A window without an end cannot be recovered from.
        let mut h = FaultReport {
            window_s: (3.0, None),
            ..FaultReport::default()
        };
        h.count(&frames);
        assert_eq!((h.frames[2], h.recovered()), (0, None));
    }

    #[test]
    fn aggregation_counts_latency_fps_and_scenarios() {
        // Stream 0: 10 frames at 10 fps, each out 20 ms after arrival; the
        // last one 100 ms (late).
        let mut s0: Vec<FrameSample> = (0..10)
            .map(|i| {
                let a = i as f64 * 0.1;
                sample(i, a, a + 0.02, Status::Verified)
            })
            .collect();
        s0[9].output_s = s0[9].arrival_s + 0.1;
        s0[0].score = FrameScore {
            truth_area: 100.0,
            truth_covered: 50.0,
            over_censored: 0.2,
            truth_faces: 2,
            truth_uncensored: 1,
            truth_found: 1,
            truth_found_reference: 2,
            regions: 2,
            leaks: 1,
            audited: true,
        };
        s0[1].score.truth_faces = 1;
        s0[1].score.truth_found = 1;
        s0[2].score.truth_faces = 1;
        s0[2].status = Status::Predicted;
        // Stream 1: 10 fed, 9 out (one dropped), one fail-closed.
        let mut s1: Vec<FrameSample> = (0..9)
            .map(|i| {
                let a = i as f64 * 0.1;
                sample(i, a, a + 0.01, Status::Verified)
            })
            .collect();
        s1[3].status = Status::FailClosed;
        let runs = vec![
            StreamRun {
                id: 0,
                scenario: "zoom".into(),
                frames_in: 10,
                samples: s0,
                encoder: String::new(),
                second_looks: 0,
                input_bytes: 0,
                source_cpu_s: 0.0,
                keyframes_asked: 0,
            },
            StreamRun {
                id: 1,
                scenario: "static".into(),
                frames_in: 10,
                samples: s1,
                encoder: String::new(),
                second_looks: 0,
                input_bytes: 0,
                source_cpu_s: 0.0,
                keyframes_asked: 0,
            },
        ];
        let r = aggregate(
            setup(2),
            &runs,
            Resources {
                wall_s: 2.0,
                cpu_s: 3.0,
                peak_rss_mib: 10.0,
            },
        );
        assert_eq!((r.frames_in, r.frames_out, r.dropped), (20, 19, 1));
        assert_eq!(
            (r.verified, r.predicted, r.fail_closed, r.late),
            (17, 1, 1, 1)
        );
        assert!((r.latency_ms.max - 100.0).abs() < 1e-6);
        assert!((r.cores_used - 1.5).abs() < 1e-9);
        assert!(!r.held, "a dropped frame is never held");
        assert!(!r.realtime);
        assert_eq!(r.stages.len(), STAGES.len());
        assert!((r.stages[3].mean_ms - 10.0).abs() < 1e-9);
        // Stream 0 spans 0.0 .. 1.0 (+0.1 tick): 10 frames / 1.1 s.
        assert!((r.streams[0].fps_held - 10.0 / 1.1).abs() < 1e-9);
        assert_eq!(r.scenarios.len(), 2);
        let z = &r.scenarios[0];
        assert_eq!(z.scenario, "zoom");
        assert!((z.tracking_coverage - 0.5).abs() < 1e-9);
        assert!((z.over_censored - 0.02).abs() < 1e-9);
        assert_eq!((z.regions, z.leaked_regions, z.leaked_frames), (2, 1, 1));
        assert_eq!(r.scenarios[1].tracking_coverage, 1.0);
        assert_eq!(r.scenarios[1].fail_closed, 1);
        assert_eq!(r.leaked_regions, 1);
        // 4 face-frames, one left visible; both recalls over the audited
        // frame only.
        assert_eq!((z.truth_faces, z.truth_uncensored), (4, 1));
        assert_eq!((r.truth_faces, r.truth_uncensored), (4, 1));
        assert_eq!(z.recall, Some(0.5));
        assert_eq!(z.recall_reference, Some(1.0));
        assert_eq!(r.scenarios[1].recall_reference, None);
        assert_eq!(r.scenarios[1].recall, None);
        assert!(r.table().contains("MISSED"));
    }

    #[test]
    fn a_stream_that_keeps_up_is_held() {
        let s: Vec<FrameSample> = (0..10)
            .map(|i| {
                let a = i as f64 * 0.1;
                sample(i, a, a + 0.005, Status::Verified)
            })
            .collect();
        let runs = vec![StreamRun {
            id: 0,
            scenario: "static".into(),
            frames_in: 10,
            samples: s,
            encoder: String::new(),
            second_looks: 0,
            input_bytes: 0,
            source_cpu_s: 0.0,
            keyframes_asked: 0,
        }];
        let r = aggregate(setup(1), &runs, Resources::default());
        assert!(r.held && r.realtime, "{}", r.table());
        assert!(r.fps_total > 9.9);
        // The same run against a 3 ms budget (it adds 5 ms): real time,
        // over the budget.
        let tight = RunSetup {
            latency_budget_ms: 3.0,
            ..setup(1)
        };
        let r = aggregate(tight, &runs, Resources::default());
        assert!(r.realtime && !r.held, "{}", r.table());
        assert!(
            r.table().contains("HELD, but p99 over the 3 ms"),
            "{}",
            r.table()
        );
        // One frame censored whole: the deadline was missed.
        let mut closed = runs;
        closed[0].samples[4].status = Status::FailClosed;
        let r = aggregate(setup(1), &closed, Resources::default());
        assert!(!r.realtime && !r.held, "{}", r.table());
        assert!(r.table().contains("real time MISSED"), "{}", r.table());
    }

    #[test]
    fn capacity_search_stops_at_the_first_miss() {
        // Within budget up to `b`, real time up to `rt`.
        let fake = |b: usize, rt: usize| {
            move |n: usize| -> Result<RunReport, String> {
                Ok(RunReport {
                    setup: setup(n),
                    held: n <= b.min(rt),
                    realtime: n <= rt,
                    ..RunReport::default()
                })
            }
        };
        let cap = |within_budget, realtime| Capacity {
            within_budget,
            realtime,
        };
        let (steps, c) = find_capacity(10, fake(3, 3)).unwrap();
        assert_eq!(c, cap(3, 3));
        assert_eq!(steps.len(), 4);
        assert_eq!(steps[3].setup.streams, 4);
        let (steps, c) = find_capacity(10, fake(2, 4)).unwrap();
        assert_eq!((steps.len(), c), (5, cap(2, 4)));
        let (steps, c) = find_capacity(10, fake(0, 0)).unwrap();
        assert_eq!((steps.len(), c), (1, cap(0, 0)));
        let (steps, c) = find_capacity(5, fake(99, 99)).unwrap();
        assert_eq!((steps.len(), c), (5, cap(5, 5)));
        // A step back under the budget after one over it does not count.
        let (_, c) = find_capacity(4, |n: usize| -> Result<RunReport, String> {
            Ok(RunReport {
                setup: setup(n),
                held: n != 2,
                realtime: true,
                ..RunReport::default()
            })
        })
        .unwrap();
        assert_eq!(c, cap(1, 4));
        let err = find_capacity(5, |n| {
            if n == 2 {
                Err("boom".to_string())
            } else {
                fake(9, 9)(n)
            }
        });
        assert_eq!(err.unwrap_err(), "boom");
    }

    #[test]
    fn json_round_trip() {
        let runs = vec![StreamRun {
            id: 0,
            scenario: "zoom".into(),
            frames_in: 2,
            samples: vec![
                sample(0, 0.0, 0.01, Status::Verified),
                sample(1, 0.1, 0.12, Status::Predicted),
            ],
            encoder: String::new(),
            second_looks: 0,
            input_bytes: 0,
            source_cpu_s: 0.0,
            keyframes_asked: 0,
        }];
        let run = aggregate(setup(1), &runs, Resources::default());
        let rep = BenchReport {
            date: "2026-11-25".into(),
            machine: "test".into(),
            runs: vec![run],
            capacity: Some(1),
            capacity_realtime: Some(2),
        };
        let text = serde_json::to_string(&rep).unwrap();
        let back: BenchReport = serde_json::from_str(&text).unwrap();
        // serde_json's default float parsing may move a value by an ulp:
        // compare floats with a tolerance, everything else exactly.
        let (a, b) = (&back.runs[0], &rep.runs[0]);
        assert!((a.latency_ms.mean - b.latency_ms.mean).abs() < 1e-9);
        assert!((a.fps_total - b.fps_total).abs() < 1e-9);
        let same = RunReport {
            latency_ms: b.latency_ms,
            fps_total: b.fps_total,
            streams: b.streams.clone(),
            ..a.clone()
        };
        assert_eq!(&same, b);
        assert_eq!(back.date, rep.date);
        assert_eq!(back.runs[0].frames_out, 2);
        assert_eq!(back.runs[0].scenarios[0].scenario, "zoom");
        assert_eq!(back.capacity, Some(1));
        assert_eq!(back.capacity_realtime, Some(2));
        // Reports written before `realtime` existed still load.
        let old = text.replace(",\"capacity_realtime\":2", "");
        let old: BenchReport = serde_json::from_str(&old).unwrap();
        assert_eq!(old.capacity_realtime, None);
    }
}
