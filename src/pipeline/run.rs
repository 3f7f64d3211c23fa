//! The file job behind `livecensor censor`: a file source and a file sink
//! (muxer, sidecar, summary) around the one stream engine.

use super::service::DetectService;
use super::sidecar::FrameRecord;
use super::sidecar::{sidecar_path, SidecarHeader, SidecarWriter, Status};
use super::stream::{StageTimes, StreamOptions, StreamPipeline};
use crate::backend::Backend;
use crate::config::Config;
use crate::engine::{drive, Engine, EngineOptions, Output, Sink};
use crate::error::{Error, PipelineError};
use crate::moderation::{DebounceConfig, Event, FrameObservation, SessionModeration, Source};
use crate::sink::{OutputInfo, VideoWriter};
use crate::source::file::FileSource;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;
use std::time::{Duration, Instant};

/// Builds the shared detector service from the configuration: one ort
/// session per execution context.
pub fn start_service(cfg: &Config) -> Result<Arc<DetectService>, Error> {
    start_service_with_faults(cfg, Default::default())
}

/// [`start_service`] with test-only detector faults (`--fault-detector-*`).
pub fn start_service_with_faults(
    cfg: &Config,
    faults: crate::pipeline::service::DetectorFaults,
) -> Result<Arc<DetectService>, Error> {
    // TensorRT runs on the device the kernels do (`[gpu] device`).
    let backends = crate::detect::backend::backends_on(
        &cfg.pipeline_detector()?,
        cfg.batcher.contexts.max(1),
        cfg.batcher.max_batch,
        cfg.gpu.device,
    )?;
    Ok(Arc::new(DetectService::start_with_faults(
        backends,
        cfg.batcher_config(),
        faults,
    )?))
}

/// The stream options the configuration describes.
pub fn stream_options(cfg: &Config) -> Result<StreamOptions, Error> {
    Ok(StreamOptions {
        policy: cfg.policy()?,
        scheduler: cfg.scheduler_config()?,
        tracker: cfg.kalman.then_some(cfg.tracker),
        resize: cfg.detector.resize,
        zoom: cfg.detector.zoom,
    })
}

/// What `censor` did.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub frames: u64,
    pub verified: u64,
    pub predicted: u64,
    pub fail_closed: u64,
    pub wall: f64,
    /// Sum of each stage over all frames, seconds.
    pub stage_totals: StageTimes,
    /// Added latency per frame (in -> censored, before encoding), ms, sorted.
    pub latencies_ms: Vec<f64>,
    pub sidecar: PathBuf,
    /// The encoder used and, on the device path, why (NVENC or openh264).
    pub encoder: String,
    /// Frames that left as the input's own access units.
    pub passed_through: u64,
    /// `on`, or `off: <why>`.
    pub passthrough: String,
}

impl Summary {
    pub fn fps(&self) -> f64 {
        if self.wall > 0.0 {
            self.frames as f64 / self.wall
        } else {
            0.0
        }
    }

    pub fn latency_percentile(&self, p: f64) -> f64 {
        percentile(&self.latencies_ms, p)
    }
}

/// The crate's one percentile (nearest rank).
pub use crate::stats::percentile;

/// Progress callback: (frames done, frames expected if known).
pub type Progress<'a> = &'a mut dyn FnMut(u64, Option<u64>);

pub fn add_times(a: &mut StageTimes, b: &StageTimes) {
    a.decode += b.decode;
    a.preprocess += b.preprocess;
    a.queue_wait += b.queue_wait;
    a.infer += b.infer;
    a.track += b.track;
    a.censor += b.censor;
    a.encode += b.encode;
}

/// The file job's sink: the muxer (H.264 access units, or pictures for
/// Y4M), the sidecar and the summary.
struct FileSink<'a> {
    writer: VideoWriter,
    sidecar: SidecarWriter,
    events: EventsFile,
    summary: Summary,
    expected: Option<u64>,
    progress: Progress<'a>,
}

impl Sink for FileSink<'_> {
    fn write(&mut self, out: Output) -> Result<(), Error> {
        let t0 = Instant::now();
        match (out.encoded, &out.picture) {
            (Some(Ok(au)), _) => {
                self.writer
                    .write_encoded(&au, out.width, out.height, out.pts)?;
            }
            (Some(Err(e)), _) => {
                return Err(
                    PipelineError::Other(format!("frame {}: encoder: {e}", out.index)).into(),
                )
            }
            (None, Some(f)) => {
                self.writer.write(f, out.pts)?;
            }
            (None, None) => {
                return Err(PipelineError::Other(format!("frame {}: no picture", out.index)).into())
            }
        }
        let mut times = out.times;
        times.encode += t0.elapsed().as_secs_f64();
        self.sidecar.write(&out.record)?;
        self.events.frame(&out.record)?;
        let s = &mut self.summary;
        add_times(&mut s.stage_totals, &times);
        s.latencies_ms.push(out.record.latency_ms);
        s.frames += 1;
        s.passed_through += u64::from(out.record.passthrough);
        match out.record.status {
            Status::Verified => s.verified += 1,
            Status::Predicted => s.predicted += 1,
            Status::FailClosed => s.fail_closed += 1,
        }
        (self.progress)(s.frames, self.expected);
        Ok(())
    }
}

/// `on`, or `off: <why>`.
fn passthrough_state(off: Option<&str>) -> String {
    match off {
        None => "on".into(),
        Some(why) => format!("off: {why}"),
    }
}

/// Where `censor` writes the moderation events of `output`: beside its
/// sidecar, `OUTPUT.events.jsonl`.
pub fn events_path(output: &Path) -> PathBuf {
    let mut p = output.as_os_str().to_owned();
    p.push(".events.jsonl");
    PathBuf::from(p)
}

/// The file job's moderation events (exposures, fail-closed spans, rules
/// with `notify`), one JSON line each, as `serve` sends them.
struct EventsFile {
    path: PathBuf,
    file: std::io::BufWriter<std::fs::File>,
    session: SessionModeration,
    ticks_per_s: f64,
}

impl EventsFile {
    fn create(path: &Path, ticks_per_s: f64, cfg: &Config) -> Result<EventsFile, Error> {
        let file = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
        let session =
            SessionModeration::new(Source::default(), DebounceConfig::default(), cfg.rules()?);
        let mut f = EventsFile {
            path: path.to_path_buf(),
            file: std::io::BufWriter::new(file),
            session,
            ticks_per_s: ticks_per_s.max(1.0),
        };
        let started = f.session.started(SystemTime::now());
        f.write(&[started])?;
        Ok(f)
    }

    fn frame(&mut self, record: &FrameRecord) -> Result<(), Error> {
        let obs = FrameObservation::from_record(record, self.ticks_per_s);
        let step = self
            .session
            .on_frame(&obs, Instant::now(), SystemTime::now());
        self.write(&step.events)
    }

    fn write(&mut self, events: &[Event]) -> Result<(), Error> {
        use std::io::Write;
        for e in events {
            writeln!(self.file, "{}", e.to_json()).map_err(|e| Error::io(&self.path, e))?;
        }
        Ok(())
    }

    fn finish(mut self) -> Result<(), Error> {
        use std::io::Write;
        let last = self.session.finish(SystemTime::now());
        self.write(&last)?;
        self.file.flush().map_err(|e| Error::io(&self.path, e))?;
        self.file
            .get_ref()
            .sync_all()
            .map_err(|e| Error::io(&self.path, e))
    }
}

/// Censors `input` into `output` (+ `output.censor.jsonl`: a header line,
/// then one record per frame).
pub fn censor_file(
    input: &Path,
    output: &Path,
    fps_hint: Option<f64>,
    cfg: &Config,
    progress: Progress,
) -> Result<Summary, Error> {
    cfg.validate()?;
    // One stream with a window of frames in flight: its frames may share a
    // batch (throughput; a file job has no live deadline to keep).
    let mut cfg = cfg.clone();
    cfg.batcher.max_per_stream = 0;
    let cfg = &cfg;
    let backend = Backend::open(&cfg.gpu)?;
    let svc = start_service(cfg)?;
    let mut opts = stream_options(cfg)?;
    opts.scheduler.deadline = Duration::from_millis(cfg.scheduler.file_deadline_ms);
    // Decoding outruns the detector: predictive frames wait for the
    // detections before them (and their own) instead of leaving unmasked.
    opts.scheduler.await_detections = true;
    // Waiting for later frames costs a file nothing: a region first found
    // a few frames on is masked back to where it came from.
    opts.scheduler.lookahead = cfg.scheduler.file_lookahead;
    // Enough frames in flight to keep the detector busy while this thread
    // decodes and encodes; strict mode holds each until it is verified.
    let window = (cfg.batcher.max_batch * cfg.batcher.contexts).clamp(3, 16);
    let mut source = FileSource::open(input, fps_hint, &backend, window)?;
    let info = source.info().clone();
    let writer = VideoWriter::create(
        output,
        &OutputInfo {
            width: info.width,
            height: info.height,
            fps: info.fps,
            timescale: info.timescale,
            bitrate_bps: None,
        },
    )?;
    let encode = writer.takes_encoded();
    let pipeline = StreamPipeline::new(0, svc, opts);
    let mut engine = Engine::new(
        pipeline,
        &backend,
        EngineOptions {
            passthrough: cfg.output.passthrough_options(crate::engine::Publish::Any),
            fps: info.fps as f32,
            encode,
            max_in_flight: None,
            snapshot_every: None,
            late_margin: None,
        },
    )?;
    let side = sidecar_path(output);
    let mut sidecar = SidecarWriter::create(&side)?;
    // The policy goes with the output, so `audit` judges by what was applied.
    let mut header = SidecarHeader::from_config(cfg)?;
    header.passthrough = Some(passthrough_state(engine.passthrough_off()));
    sidecar.write_header(&header)?;
    let mut sink = FileSink {
        writer,
        sidecar,
        events: EventsFile::create(&events_path(output), info.timescale as f64, cfg)?,
        summary: Summary {
            sidecar: side,
            ..Summary::default()
        },
        expected: info.frame_count,
        progress,
    };
    let start = Instant::now();
    drive(&mut engine, &mut source, &mut sink)?;
    let FileSink {
        writer,
        sidecar,
        events,
        mut summary,
        ..
    } = sink;
    events.finish()?;
    summary.wall = start.elapsed().as_secs_f64();
    summary.encoder = engine.encoder_description();
    summary.passthrough = passthrough_state(engine.passthrough_off());
    writer.finish()?;
    sidecar.finish()?;
    if summary.frames == 0 {
        return Err(
            PipelineError::Other(format!("{}: no frames were censored", input.display())).into(),
        );
    }
    summary.latencies_ms.sort_by(|a, b| a.total_cmp(b));
    Ok(summary)
}
