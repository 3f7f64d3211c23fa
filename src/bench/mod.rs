//! `livecensor bench`: N concurrent streams through the real pipeline (the
//! shared [`DetectService`], one [`StreamPipeline`] per stream, the openh264
//! decoder and encoder), fed synthetic clips with ground truth that were
//! encoded to H.264 once before timing starts. Reports added latency, the
//! per-stage split, fps held, fail-closed and late frames, CPU and memory,
//! and audits every output frame for leaks afterwards.

pub mod plot;
pub mod report;

use crate::audit::{judge_regions, judge_truth};
use crate::backend::Backend;
use crate::codec::{Decoder, Encoder, EncoderConfig};
use crate::config::Config;
use crate::detect::{Detector, Letterbox, LetterboxMode};
use crate::engine::{drive, Engine, EngineOptions, Feed, Input, Output, Sink, Source};
use crate::error::{Error, PipelineError};
use crate::frame::BBox;
use crate::pipeline::run::{start_service, stream_options};
use crate::pipeline::service::DetectService;
use crate::pipeline::stream::StreamPipeline;
use crate::policy::Policy;
use crate::synth::{Scenario, Synth, SynthConfig};
use report::{
    aggregate, over_censored, truth_coverage, FrameSample, FrameScore, Resources, RunReport,
    RunSetup, StreamRun,
};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use report::{find_capacity, BenchReport};

/// What one bench run does.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    pub streams: usize,
    /// Frames per stream.
    pub frames: usize,
    pub width: usize,
    pub height: usize,
    pub fps: f64,
    /// Streams cycle over these.
    pub scenarios: Vec<Scenario>,
    /// Feed each stream at its frame rate (else as fast as it goes, with a
    /// window of frames in flight, and predictive frames await the
    /// detections before them).
    pub paced: bool,
    /// Frames in flight per stream when unpaced (0: as `censor` does).
    pub window: usize,
    pub latency_budget_ms: f64,
    /// Run the detector on every input frame afterwards and check each
    /// output frame (masks and pixels).
    pub audit: bool,
    /// The synthetic clips' photos (`models/photos`).
    pub photos: PathBuf,
}

/// The clips, encoded once: per scenario, one access unit per frame.
pub struct Clips {
    aus: HashMap<Scenario, Arc<Vec<Vec<u8>>>>,
    frames: usize,
}

fn synth_config(o: &BenchOptions) -> SynthConfig {
    SynthConfig {
        width: o.width,
        height: o.height,
        fps: o.fps,
        frames: o.frames,
        ..SynthConfig::new(o.photos.clone())
    }
}

fn stream_scenario(o: &BenchOptions, stream: usize) -> Scenario {
    o.scenarios
        .get(stream % o.scenarios.len().max(1))
        .copied()
        .unwrap_or(Scenario::ConstantPan)
}

fn other(e: impl std::fmt::Display) -> Error {
    PipelineError::Other(e.to_string()).into()
}

/// One scenario's access units.
type Clip = (Scenario, Vec<Vec<u8>>);

/// Renders and encodes the clips of the scenarios the first `max_streams`
/// streams use (one thread per scenario).
pub fn prepare_clips(o: &BenchOptions, max_streams: usize) -> Result<Clips, Error> {
    let mut wanted: Vec<Scenario> = Vec::new();
    for k in 0..max_streams.max(1) {
        let s = stream_scenario(o, k);
        if !wanted.contains(&s) {
            wanted.push(s);
        }
    }
    let cfg = synth_config(o);
    let results: Vec<Result<Clip, Error>> = std::thread::scope(|sc| {
        let handles: Vec<_> = wanted
            .iter()
            .map(|&s| {
                let cfg = cfg.clone();
                sc.spawn(move || -> Result<Clip, Error> {
                    let synth = Synth::new(s, cfg.clone())?;
                    let mut enc =
                        Encoder::new(EncoderConfig::new(cfg.width, cfg.height, cfg.fps as f32))?;
                    let mut aus = Vec::with_capacity(cfg.frames);
                    for i in 0..cfg.frames {
                        aus.push(enc.encode(&synth.frame(i).frame, false)?);
                    }
                    Ok((s, aus))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(other("clip encoder thread panicked")))
            })
            .collect()
    });
    let mut aus = HashMap::new();
    for r in results {
        let (s, v) = r?;
        aus.insert(s, Arc::new(v));
    }
    Ok(Clips {
        aus,
        frames: o.frames,
    })
}

/// user+sys CPU seconds of this process (/proc/self/stat, 100 ticks/s).
pub fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) start at field 3.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / 100.0
}

/// Peak resident set (VmHWM), MiB.
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map(|kib| kib / 1024.0)
        .unwrap_or(0.0)
}

/// The policy the bench censors by: faces (the synthetic content is a face),
/// rect, expand 0.1, unless the configuration names its own classes.
pub fn bench_config(mut cfg: Config) -> Result<Config, Error> {
    if cfg.policy.classes.is_empty() {
        cfg.policy.classes = vec!["FACE_FEMALE".into(), "FACE_MALE".into()];
        cfg.policy.shape = crate::frame::MaskShape::Rect;
        cfg.policy.expand = 0.1;
    }
    cfg.validate()?;
    Ok(cfg)
}

struct Stream<'a> {
    id: u32,
    opts: &'a BenchOptions,
    aus: &'a [Vec<u8>],
    window: usize,
    start: Instant,
    /// Pacing phase of this stream (streams are spread over a frame interval).
    offset: Duration,
    /// `--gpu`: NVDEC into device memory, kernels on this stream's own CUDA
    /// stream, NVENC where the GPU has one (the device path of `censor`).
    backend: &'a Backend,
}

impl Stream<'_> {
    fn due(&self, k: usize) -> Instant {
        self.start + self.offset + Duration::from_secs_f64(k as f64 / self.opts.fps)
    }

    fn run(&self, pipe: StreamPipeline, scenario: Scenario) -> Result<StreamRun, Error> {
        let o = self.opts;
        let mut engine = Engine::new(
            pipe,
            self.backend,
            EngineOptions {
                fps: o.fps as f32,
                encode: true,
                max_in_flight: None,
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
        })
    }
}

/// A synthetic clip's access units as a source: paced at the frame rate
/// (each at its due time, which is its arrival), or unpaced (a window in
/// flight).
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
        Ok(Feed::Input(Input::AccessUnit {
            data: au.as_slice().into(),
            pts,
            arrival,
            origin: arrival,
            contiguous: true,
            show: true,
            stale: false,
        }))
    }
}

/// The bench's sink: one sample per released frame.
struct Collector {
    start: Instant,
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
            index: out.index,
            arrival_s: since(out.arrived),
            output_s: since(out.done),
            times: out.times,
            status: out.record.status,
            reason: out.record.reason,
            masks: out.record.masks,
            detections: out.record.detections,
            au,
            score: FrameScore::default(),
            truth_misses: Vec::new(),
        });
        Ok(())
    }
}

/// The run's setup as reported.
fn setup_of(cfg: &Config, o: &BenchOptions, mode: LetterboxMode) -> RunSetup {
    RunSetup {
        streams: o.streams,
        width: o.width,
        height: o.height,
        fps: o.fps,
        frames_per_stream: o.frames,
        mode: cfg.scheduler.mode.to_ascii_lowercase(),
        detect_every: cfg.scheduler.detect_every,
        paced: o.paced,
        latency_budget_ms: o.latency_budget_ms,
        detector_threads: cfg.detector.threads,
        contexts: cfg.batcher.contexts,
        max_batch: cfg.batcher.max_batch,
        detector_input: detector_input(cfg, mode, o.width, o.height),
        gpu: cfg.gpu.enabled,
        encoder: String::new(),
    }
}

/// What the detector sees of a `width x height` frame: the service's
/// letterbox (`mode`) and the tensor's size.
fn detector_input(cfg: &Config, mode: LetterboxMode, width: usize, height: usize) -> String {
    let lb = Letterbox::with_mode(mode, width, height, cfg.detector.input_size);
    format!("{mode} {}x{} {}", lb.cols, lb.rows, cfg.detector.resize)
}

/// Frames in flight per stream when unpaced.
fn window(cfg: &Config, o: &BenchOptions) -> usize {
    if o.window > 0 {
        o.window
    } else {
        (cfg.batcher.max_batch * cfg.batcher.contexts).clamp(3, 16)
    }
}

/// One run: `o.streams` streams through one shared detector service. Returns
/// the report and the streams' samples (for the plot).
pub fn run(
    cfg: &Config,
    o: &BenchOptions,
    clips: &Clips,
    svc: &Arc<DetectService>,
) -> Result<(RunReport, Vec<StreamRun>), Error> {
    run_on(cfg, o, clips, svc, &Backend::Cpu)
}

/// [`run`] on `backend` (the GPU with `bench --gpu`).
pub fn run_on(
    cfg: &Config,
    o: &BenchOptions,
    clips: &Clips,
    svc: &Arc<DetectService>,
    backend: &Backend,
) -> Result<(RunReport, Vec<StreamRun>), Error> {
    if o.streams == 0 || o.frames == 0 || o.frames > clips.frames {
        return Err(other("bench: need at least 1 stream and 1 frame"));
    }
    let mut opts = stream_options(cfg)?;
    // Unpaced frames arrive faster than the detector answers: as on files,
    // predictive frames wait for the detections before them.
    opts.scheduler.await_detections = !o.paced;
    let mut plan = Vec::new();
    for k in 0..o.streams {
        let s = stream_scenario(o, k);
        let aus = clips
            .aus
            .get(&s)
            .cloned()
            .ok_or_else(|| other(format!("no clip for scenario {}", s.name())))?;
        plan.push((k, s, aus));
    }
    let win = window(cfg, o);
    // Every thread starts on the same clock, a little ahead so all are ready.
    let start = Instant::now() + Duration::from_millis(50);
    let cpu0 = cpu_seconds();
    let results: Vec<Result<StreamRun, Error>> = std::thread::scope(|sc| {
        let handles: Vec<_> = plan
            .iter()
            .map(|(k, s, aus)| {
                let pipe = StreamPipeline::new(*k as u32, svc.clone(), opts.clone());
                let st = Stream {
                    id: *k as u32,
                    opts: o,
                    aus: &aus[..o.frames],
                    window: win,
                    start,
                    offset: Duration::from_secs_f64(*k as f64 / (o.streams as f64 * o.fps)),
                    backend,
                };
                let s = *s;
                sc.spawn(move || st.run(pipe, s))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(other("stream thread panicked")))
            })
            .collect()
    });
    let wall = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let mut runs = results.into_iter().collect::<Result<Vec<_>, _>>()?;
    score(cfg, o, &mut runs)?;
    let res = Resources {
        wall_s: wall,
        cpu_s: cpu,
        peak_rss_mib: peak_rss_mib(),
    };
    let mut setup = setup_of(cfg, o, svc.letterbox_mode());
    setup.encoder = runs.first().map(|r| r.encoder.clone()).unwrap_or_default();
    Ok((aggregate(setup, &runs, res), runs))
}

/// One single-stream run per scenario of `o`, one after another, reported
/// as one run whose streams are the scenarios (real time is judged per
/// stream, each alone on the machine).
fn run_in_turn(
    cfg: &Config,
    o: &BenchOptions,
    clips: &Clips,
    svc: &Arc<DetectService>,
    backend: &Backend,
) -> Result<(RunReport, Vec<StreamRun>), Error> {
    let mut all: Vec<StreamRun> = Vec::new();
    let mut res = Resources::default();
    let mut encoder = String::new();
    for &s in &o.scenarios {
        let one = BenchOptions {
            streams: 1,
            scenarios: vec![s],
            ..o.clone()
        };
        let (r, runs) = run_on(cfg, &one, clips, svc, backend)?;
        eprintln!(
            "bench: {s}: {} of {} face-frame(s) left visible, p99 {:.1} ms",
            r.truth_uncensored, r.truth_faces, r.latency_ms.p99
        );
        res.wall_s += r.resources.wall_s;
        res.cpu_s += r.resources.cpu_s;
        res.peak_rss_mib = res.peak_rss_mib.max(r.resources.peak_rss_mib);
        encoder = r.setup.encoder;
        for mut sr in runs {
            sr.id = all.len() as u32;
            all.push(sr);
        }
    }
    let mut setup = setup_of(cfg, o, svc.letterbox_mode());
    setup.streams = 1;
    setup.encoder = encoder;
    Ok((aggregate(setup, &all, res), all))
}

/// Fills every sample's score: ground-truth coverage, the ground-truth gate
/// (each face hidden in the decoded output), recall and over-censoring, and
/// with `o.audit` the leak check (detector on the input frame, masks and
/// pixels of the decoded output, like `livecensor audit`) and the reference
/// detector's recall.
fn score(cfg: &Config, o: &BenchOptions, runs: &mut [StreamRun]) -> Result<(), Error> {
    let policy: Policy = cfg.policy()?;
    let th = crate::audit::AuditThresholds::default();
    // One detector with the pipeline's low floors serves both passes: NMS
    // keeps the same boxes above any threshold whatever lower ones it sees.
    let mut det = if o.audit {
        Some(Detector::new(&cfg.pipeline_detector()?)?)
    } else {
        None
    };
    let (mode, resize) = (cfg.detector.letterbox, cfg.detector.resize);
    let pipeline_policy = policy.lowered(mode.score_margin());
    let mut scenarios: Vec<Scenario> = Vec::new();
    for k in 0..runs.len() {
        let s = stream_scenario(o, k);
        if !scenarios.contains(&s) {
            scenarios.push(s);
        }
    }
    let found_by = |dets: &[crate::frame::Detection], b: &BBox| {
        dets.iter().any(|d| d.bbox.iou(b) >= report::RECALL_IOU)
    };
    for s in scenarios {
        let synth = Synth::new(s, synth_config(o))?;
        let idx: Vec<usize> = (0..runs.len())
            .filter(|&k| stream_scenario(o, k) == s)
            .collect();
        let mut decs = idx
            .iter()
            .map(|_| Decoder::new())
            .collect::<Result<Vec<_>, _>>()?;
        for i in 0..o.frames {
            let f = synth.frame(i);
            let (input, truth) = (f.frame, f.truth);
            let boxes: Vec<BBox> = truth.iter().map(|t| t.bbox).collect();
            let visible: Vec<BBox> = truth.iter().flat_map(|t| t.visible_parts()).collect();
            let (found, pipeline_found): (Vec<_>, Vec<_>) = match &mut det {
                Some(d) => (
                    d.detect_frame(&input)?
                        .into_iter()
                        .filter(|d| policy.accepts(d))
                        .collect(),
                    d.detect_frame_with(&input, mode, resize)?
                        .into_iter()
                        .filter(|d| pipeline_policy.accepts(d))
                        .collect(),
                ),
                None => (Vec::new(), Vec::new()),
            };
            for (j, &k) in idx.iter().enumerate() {
                let Some(sample) = runs[k].samples.iter_mut().find(|x| x.index == i as u64) else {
                    continue;
                };
                // Every output frame is decoded: the decoder's state needs
                // them all, and the gate judges pixels.
                let output = decs[j].decode(&sample.au)?.into_iter().next();
                let (covered, area) = truth_coverage(&visible, &sample.masks);
                let mut sc = FrameScore {
                    truth_area: area,
                    truth_covered: covered,
                    over_censored: over_censored(&boxes, &sample.masks, o.width, o.height),
                    truth_faces: boxes.len() as u32,
                    ..FrameScore::default()
                };
                // The audit's own judges: one leak criterion for both.
                let left = judge_truth(
                    i as u64,
                    &input,
                    output.as_ref(),
                    &sample.masks,
                    &truth,
                    &th,
                );
                sc.truth_uncensored = left.len() as u32;
                sample.truth_misses = left
                    .into_iter()
                    .map(|l| {
                        let [x0, y0, x1, y1] = l.bbox;
                        report::TruthMiss {
                            frame: l.frame,
                            object: l.object,
                            bbox: l.bbox,
                            visible: l.visible,
                            mask_coverage: l.mask_coverage,
                            detail_ratio: l.detail_ratio,
                            detected: found_by(&sample.detections, &BBox::new(x0, y0, x1, y1)),
                        }
                    })
                    .collect();
                for b in &boxes {
                    sc.truth_found += u32::from(found_by(&pipeline_found, b));
                    sc.truth_found_reference += u32::from(found_by(&found, b));
                }
                if det.is_some() {
                    sc.audited = true;
                    sc.regions = found.len() as u32;
                    let leaks = judge_regions(
                        i as u64,
                        &input,
                        output.as_ref(),
                        &found,
                        &sample.masks,
                        &th,
                    );
                    sc.leaks = leaks.len() as u32;
                }
                sample.score = sc;
            }
        }
    }
    Ok(())
}

/// Command-line options of `livecensor bench`.
#[derive(clap::Args, Clone, Debug)]
pub struct BenchArgs {
    /// Concurrent streams.
    #[arg(long, default_value_t = 1)]
    pub streams: usize,
    /// Seconds of video per stream.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Frames per stream (instead of --duration).
    #[arg(long)]
    pub frames: Option<usize>,
    #[arg(long, default_value_t = 1280)]
    pub width: usize,
    #[arg(long, default_value_t = 720)]
    pub height: usize,
    #[arg(long, default_value_t = 30.0)]
    pub fps: f64,
    /// strict | predictive
    #[arg(long)]
    pub mode: Option<String>,
    /// Predictive mode: detect every Nth frame.
    #[arg(long)]
    pub detect_every: Option<u32>,
    /// Strict mode: frames a verified frame also waits for, so a region
    /// found a few frames later is masked on it too (config
    /// `[scheduler] lookahead`; each costs a frame interval of latency).
    #[arg(long)]
    pub lookahead: Option<u32>,
    /// A scenario name, a comma-separated list, or `all`. With one stream
    /// each scenario runs in turn, alone; with --streams N the streams
    /// cycle over them.
    #[arg(long, default_value = "constant-pan")]
    pub scenario: String,
    /// Feed frames as fast as the pipeline takes them (a window in flight);
    /// predictive frames then wait for the detections before them, as in
    /// `censor`.
    #[arg(long)]
    pub unpaced: bool,
    /// Frames in flight per stream when unpaced (default: as `censor`).
    #[arg(long)]
    pub window: Option<usize>,
    /// Write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write latency plots (CDF and over time) as SVG here.
    #[arg(long)]
    pub svg: Option<PathBuf>,
    #[arg(long, default_value_t = 50.0)]
    pub latency_budget_ms: f64,
    /// Detector intra-op threads.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Detector execution contexts (sessions, each with its own thread).
    #[arg(long)]
    pub contexts: Option<usize>,
    /// Largest detector batch.
    #[arg(long)]
    pub batch: Option<usize>,
    /// Detector: onnx (ONNX Runtime, CPU) or tensorrt (the --engine plan).
    /// The leak audit always uses ONNX Runtime, the reference.
    #[arg(long)]
    pub detector: Option<String>,
    /// TensorRT plan for --detector tensorrt (`livecensor engine build`).
    #[arg(long)]
    pub engine: Option<PathBuf>,
    /// Detector input: rect (16:9 runs 320x192) or square (NudeNet's
    /// 320x320). The leak audit always uses square, the reference.
    #[arg(long)]
    pub letterbox: Option<String>,
    /// How frames are resampled to the detector input: triangle
    /// (antialiased, the default) or linear (NudeNet's own). The reference
    /// recall (ref-rec) is always NudeNet's own.
    #[arg(long)]
    pub resize: Option<String>,
    /// The device path: NVDEC, preprocess and censor kernels, NVENC where
    /// the GPU has it (feature `cuda`; config `[gpu] enabled`).
    #[arg(long)]
    pub gpu: bool,
    /// Raise the stream count from 1 with short runs until real time is
    /// missed; report the most streams held.
    #[arg(long)]
    pub find_capacity: bool,
    /// Seconds per step of --find-capacity.
    #[arg(long, default_value_t = 8.0)]
    pub step_duration: f64,
    /// Most streams --find-capacity tries.
    #[arg(long, default_value_t = 16)]
    pub max_streams: usize,
    /// Skip the leak audit (coverage from ground truth is still computed).
    #[arg(long)]
    pub no_audit: bool,
}

impl BenchArgs {
    /// Applies the detector/scheduler flags to `cfg` (with the bench policy).
    pub fn config(&self, mut cfg: Config) -> Result<Config, Error> {
        if let Some(m) = &self.mode {
            cfg.scheduler.mode = m.clone();
        }
        if let Some(n) = self.detect_every {
            cfg.scheduler.detect_every = n;
        }
        if let Some(n) = self.lookahead {
            cfg.scheduler.lookahead = n;
        }
        if let Some(t) = self.threads {
            cfg.detector.threads = t;
        }
        if let Some(c) = self.contexts {
            cfg.batcher.contexts = c;
        }
        if let Some(b) = self.batch {
            cfg.batcher.max_batch = b;
            cfg.batcher.capacity = cfg.batcher.capacity.max(b);
        }
        if let Some(d) = &self.detector {
            cfg.detector.backend = d
                .parse()
                .map_err(|e| other(format!("bad value for --detector: {e}")))?;
        }
        if let Some(e) = &self.engine {
            cfg.detector.engine = e.clone();
        }
        if let Some(l) = &self.letterbox {
            cfg.detector.letterbox = l
                .parse()
                .map_err(|e| other(format!("bad value for --letterbox: {e}")))?;
        }
        if let Some(r) = &self.resize {
            cfg.detector.resize = r
                .parse()
                .map_err(|e| other(format!("bad value for --resize: {e}")))?;
        }
        cfg.gpu.enabled |= self.gpu;
        bench_config(cfg)
    }

    pub fn options(&self, photos: PathBuf) -> Result<BenchOptions, Error> {
        let scenarios = if self.scenario.eq_ignore_ascii_case("all") {
            Scenario::all().to_vec()
        } else {
            self.scenario
                .split(',')
                .map(|s| s.parse::<Scenario>())
                .collect::<Result<Vec<_>, _>>()?
        };
        if !(self.fps.is_finite() && self.fps > 0.0) {
            return Err(other(format!("bad --fps {}", self.fps)));
        }
        let frames = self
            .frames
            .unwrap_or_else(|| (self.duration * self.fps).round().max(1.0) as usize);
        Ok(BenchOptions {
            streams: self.streams.max(1),
            frames,
            width: self.width,
            height: self.height,
            fps: self.fps,
            scenarios,
            paced: !self.unpaced,
            window: self.window.unwrap_or(0),
            latency_budget_ms: self.latency_budget_ms,
            audit: !self.no_audit,
            photos,
        })
    }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    format!("{cores} cores, {cpu}")
}

/// `livecensor bench`: runs, prints the tables, writes JSON/SVG. Returns the
/// report; the caller decides the exit status.
pub fn main(cfg: Config, args: &BenchArgs, photos: PathBuf) -> Result<BenchReport, Error> {
    let cfg = args.config(cfg)?;
    let mut o = args.options(photos)?;
    let mut report = BenchReport {
        date: today(),
        machine: machine(),
        ..BenchReport::default()
    };
    // `--scenario all` with one stream: each scenario in turn, on its own.
    let in_turn = !args.find_capacity && o.streams == 1 && o.scenarios.len() > 1;
    let max = if args.find_capacity {
        o.frames = args
            .frames
            .unwrap_or_else(|| (args.step_duration * o.fps).round().max(1.0) as usize);
        args.max_streams.max(1)
    } else if in_turn {
        o.scenarios.len()
    } else {
        o.streams
    };
    eprintln!(
        "bench: encoding {} frame(s) of {} scenario(s) at {}x{}...",
        o.frames,
        o.scenarios.len().min(max),
        o.width,
        o.height
    );
    let clips = prepare_clips(&o, max)?;
    let svc = start_service(&cfg)?;
    let backend = Backend::open(&cfg.gpu)?;
    warm_up_on(&cfg, &o, &clips, &svc, &backend)?;
    let mut last_runs = Vec::new();
    if args.find_capacity {
        let (steps, cap) = find_capacity(max, |n| -> Result<RunReport, Error> {
            let step = BenchOptions {
                streams: n,
                ..o.clone()
            };
            let (r, runs) = run_on(&cfg, &step, &clips, &svc, &backend)?;
            println!("{}", r.table());
            last_runs = runs;
            Ok(r)
        })?;
        println!(
            "capacity: {} stream(s) of {}x{} @ {} fps held in real time (every frame verified and out at >= {:.0}% of the frame rate); {} of them within the latency budget (p99 <= {} ms)",
            cap.realtime,
            o.width,
            o.height,
            o.fps,
            100.0 * report::HELD_SHARE,
            cap.within_budget,
            o.latency_budget_ms
        );
        report.runs = steps;
        report.capacity = Some(cap.within_budget);
        report.capacity_realtime = Some(cap.realtime);
    } else if in_turn {
        let (r, runs) = run_in_turn(&cfg, &o, &clips, &svc, &backend)?;
        println!("{}", r.table());
        report.runs.push(r);
        last_runs = runs;
    } else {
        let (r, runs) = run_on(&cfg, &o, &clips, &svc, &backend)?;
        println!("{}", r.table());
        report.runs.push(r);
        last_runs = runs;
    }
    if let Some(p) = &args.json {
        let text = serde_json::to_string_pretty(&report).map_err(other)?;
        std::fs::write(p, text).map_err(|e| Error::io(p, e))?;
    }
    if let (Some(p), Some(r)) = (&args.svg, report.runs.last()) {
        plot::write_svg(p, r, &last_runs)?;
    }
    Ok(report)
}

/// Why a bench run fails the command: a dropped frame always; in strict
/// mode any ground-truth face left visible or any region the audit finds
/// unhidden. Predictive mode reports its leaks (onsets are inherent
/// there) without failing on them.
pub fn gate(rep: &BenchReport) -> Vec<String> {
    let mut out = Vec::new();
    for (k, r) in rep.runs.iter().enumerate() {
        let run = format!("run {} ({} stream(s))", k + 1, r.setup.streams);
        if r.dropped > 0 {
            out.push(format!("{run}: {} frame(s) dropped", r.dropped));
        }
        if r.setup.mode != "strict" {
            continue;
        }
        for sc in r.scenarios.iter().filter(|s| s.truth_uncensored > 0) {
            out.push(format!(
                "{run}: {}: {} of {} ground-truth face-frame(s) left visible in strict mode",
                sc.scenario, sc.truth_uncensored, sc.truth_faces
            ));
        }
        if r.leaked_regions > 0 {
            out.push(format!(
                "{run}: the audit found {} region(s) unhidden on {} frame(s)",
                r.leaked_regions, r.leaked_frames
            ));
        }
    }
    out
}

/// A short unpaced, unaudited run before timing, so the first inferences of
/// each detector session (allocations, kernel selection) are not measured.
pub fn warm_up(
    cfg: &Config,
    o: &BenchOptions,
    clips: &Clips,
    svc: &Arc<DetectService>,
) -> Result<(), Error> {
    warm_up_on(cfg, o, clips, svc, &Backend::Cpu)
}

fn warm_up_on(
    cfg: &Config,
    o: &BenchOptions,
    clips: &Clips,
    svc: &Arc<DetectService>,
    backend: &Backend,
) -> Result<(), Error> {
    let w = BenchOptions {
        streams: 1,
        frames: o
            .frames
            .min(2 * cfg.batcher.contexts.max(1) * cfg.batcher.max_batch.max(1)),
        paced: false,
        audit: false,
        ..o.clone()
    };
    run_on(cfg, &w, clips, svc, backend).map(|_| ())
}

/// Today's date (UTC), YYYY-MM-DD.
fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn proc_readers_give_sane_values() {
        assert!(super::cpu_seconds() >= 0.0);
        assert!(super::peak_rss_mib() > 0.0);
        let d = super::today();
        assert_eq!(d.len(), 10, "{d}");
    }
}
