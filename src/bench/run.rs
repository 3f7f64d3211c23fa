//! A bench run: N streams on one clock through one shared detector
//! service, their samples scored and aggregated into the run's report;
//! the scenarios one after another; the unmeasured warm-up run.

use super::clips::{stream_scenario, Clips};
use super::machine::{cpu_seconds, peak_rss_mib};
use super::report::{aggregate, FaultReport, Resources, RunReport, RunSetup, StreamRun};
use super::score::score;
use super::stream::Stream;
use super::{other, BenchOptions};
use crate::backend::Backend;
use crate::config::Config;
use crate::detect::{Letterbox, LetterboxMode};
use crate::error::Error;
use crate::pipeline::run::stream_options;
use crate::pipeline::service::DetectService;
use crate::pipeline::stream::StreamPipeline;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
        live: o.live,
        latency_budget_ms: o.latency_budget_ms,
        detector_threads: cfg.detector.threads,
        contexts: cfg.batcher.contexts,
        detector_sizes_from_cores: (cfg.auto.threads || cfg.auto.contexts)
            .then(crate::config::cores),
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
    // Injected faults: the window counts from this run's first batch.
    svc.restart_faults();
    let faults0 = svc.stats();
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
                    passthrough: cfg.output.passthrough_options(crate::engine::Publish::Any),
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
    // The clip's live encoding is the broadcaster's work, not ours.
    let cpu = cpu - runs.iter().map(|r| r.source_cpu_s).sum::<f64>();
    score(cfg, o, &mut runs)?;
    let res = Resources {
        wall_s: wall,
        cpu_s: cpu,
        peak_rss_mib: peak_rss_mib(),
    };
    let mut setup = setup_of(cfg, o, svc.letterbox_mode());
    setup.encoder = runs.first().map(|r| r.encoder.clone()).unwrap_or_default();
    let mut report = aggregate(setup, &runs, res);
    report.faults = fault_report(svc, start, faults0, &runs);
    Ok((report, runs))
}

/// What the injected detector faults did in a run that started at `start`
/// (`before`: the service's counters then); `None` without faults.
fn fault_report(
    svc: &DetectService,
    start: Instant,
    before: crate::pipeline::service::ServiceStats,
    runs: &[StreamRun],
) -> Option<FaultReport> {
    let plan = svc.faults();
    if !plan.is_active() {
        return None;
    }
    let after = svc.stats();
    // The clock starts at the run's first batch (just after `start`).
    let origin = svc.fault_origin().unwrap_or(start);
    let offset = if origin >= start {
        origin.duration_since(start).as_secs_f64()
    } else {
        -start.duration_since(origin).as_secs_f64()
    };
    let begin = offset + plan.window.start.as_secs_f64();
    // A batch stalled at the window's end holds its context that much
    // longer: the fault's effect ends then.
    let mut f = FaultReport {
        plan: plan.to_string(),
        window_s: (
            begin,
            plan.window
                .length
                .map(|l| begin + (l + plan.stall).as_secs_f64()),
        ),
        stalled_batches: after.stalled_batches - before.stalled_batches,
        failed_batches: after.failed_batches - before.failed_batches,
        faulted_frames: after.faulted_frames - before.faulted_frames,
        ..FaultReport::default()
    };
    for r in runs {
        f.count(&r.samples);
    }
    Some(f)
}

/// One single-stream run per scenario of `o`, one after another, reported
/// as one run whose streams are the scenarios (real time is judged per
/// stream, each alone on the machine).
pub(super) fn run_in_turn(
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

pub(super) fn warm_up_on(
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
        live: false,
        audit: false,
        ..o.clone()
    };
    run_on(cfg, &w, clips, svc, backend).map(|_| ())
}
