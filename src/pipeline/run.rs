//! The file runner behind `livecensor censor`: decode, the stream pipeline,
//! encode and the sidecar, with decoding kept a few frames ahead so the
//! detector thread and this thread overlap.

use super::service::DetectService;
use super::sidecar::{sidecar_path, SidecarHeader, SidecarWriter, Status};
use super::stream::{Released, StageTimes, StreamOptions, StreamPipeline};
use crate::codec::EncoderConfig;
use crate::config::Config;
use crate::error::{Error, PipelineError};
use crate::gpu::nvenc::{GpuEncoder, Preset};
use crate::gpu::GpuContext;
use crate::sink::{OutputInfo, VideoWriter};
use crate::source::device::DeviceReader;
use crate::source::{VideoInfo, VideoReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Builds the shared detector service from the configuration: one ort
/// session per execution context.
pub fn start_service(cfg: &Config) -> Result<Arc<DetectService>, Error> {
    let backends = crate::detect::backends(
        &cfg.pipeline_detector()?,
        cfg.batcher.contexts.max(1),
        cfg.batcher.max_batch,
    )?;
    Ok(Arc::new(DetectService::start(
        backends,
        cfg.batcher_config(),
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

/// Where the file job's frames come from: host frames (openh264, Y4M) or
/// device frames (NVDEC, uploaded Y4M).
enum Source {
    Host(Box<VideoReader>),
    Device(Box<DeviceReader>),
}

impl Source {
    fn info(&self) -> &VideoInfo {
        match self {
            Source::Host(r) => r.info(),
            Source::Device(r) => r.info(),
        }
    }

    /// Decodes the next frame into `stream`; `None` at the end.
    fn push_next(&mut self, stream: &mut StreamPipeline) -> Option<Result<(), Error>> {
        let t0 = Instant::now();
        match self {
            Source::Host(r) => r.next_frame().map(|res| {
                res.map(|df| {
                    let decode = t0.elapsed().as_secs_f64();
                    stream.push(Instant::now(), df.pts, df.frame, df.corrupt, decode);
                })
            }),
            Source::Device(r) => {
                for f in stream.take_spent_device_frames() {
                    r.recycle(f);
                }
                r.next_frame().map(|res| {
                    res.map(|df| {
                        let decode = t0.elapsed().as_secs_f64();
                        stream.push_device(Instant::now(), df.pts, df.frame, df.corrupt, decode);
                    })
                })
            }
        }
    }
}

/// An access unit NVENC made, with its picture's size.
struct Encoded {
    au: Vec<u8>,
    width: usize,
    height: usize,
}

/// NVENC's access unit for a released frame when the stream has one (the
/// frame itself then carries no host picture); `None` for openh264.
fn encode_on_device(
    stream: &mut StreamPipeline,
    nvenc: Option<&mut GpuEncoder>,
    r: &mut Released,
) -> Result<Option<Encoded>, Error> {
    let Some(enc) = nvenc else {
        return Ok(None);
    };
    let (width, height) = match &r.device {
        Some(f) => (f.width(), f.height()),
        None => (r.frame.width, r.frame.height),
    };
    let au = stream.encode_device(enc, r, false)?;
    Ok(Some(Encoded { au, width, height }))
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
    let svc = start_service(cfg)?;
    let mut opts = stream_options(cfg)?;
    opts.scheduler.deadline = Duration::from_millis(cfg.scheduler.file_deadline_ms);
    // Decoding outruns the detector: predictive frames wait for the
    // detections before them (and their own) instead of leaving unmasked.
    opts.scheduler.await_detections = true;
    // Waiting for later frames costs a file nothing: a region first found
    // a few frames on is masked back to where it came from.
    opts.scheduler.lookahead = cfg.scheduler.file_lookahead;
    let mut stream = StreamPipeline::new(0, svc, opts);
    // With [gpu] enabled, frames are decoded into device memory (NVDEC) and
    // preprocessed and censored there; the context lives as long as they do.
    let _gpu;
    let mut source = if cfg.gpu.enabled {
        let ctx = GpuContext::new(cfg.gpu.device)?;
        let reader = DeviceReader::open(input, fps_hint, &ctx)?;
        stream = stream.with_gpu(ctx.stream()?);
        _gpu = Some(ctx);
        Source::Device(Box::new(reader))
    } else {
        _gpu = None;
        Source::Host(Box::new(VideoReader::open(input, fps_hint)?))
    };
    let info = source.info().clone();
    let mut writer = VideoWriter::create(
        output,
        &OutputInfo {
            width: info.width,
            height: info.height,
            fps: info.fps,
            timescale: info.timescale,
            bitrate_bps: None,
        },
    )?;
    // On a GPU with NVENC, censored device frames are encoded where they
    // are (no copy to the host); elsewhere openh264 after one copy.
    let mut nvenc = None;
    let h264 = writer.takes_encoded();
    let mut encoder = String::from(if h264 {
        "CPU openh264"
    } else {
        "none (Y4M pictures)"
    });
    if let (Some(ctx), true) = (_gpu.as_ref(), h264) {
        let config = EncoderConfig::new(info.width, info.height, info.fps as f32);
        let (enc, why) = GpuEncoder::new(Some(&ctx.stream()?), config, Preset::P1)?;
        tracing::info!("encoder: {why}");
        encoder = why;
        if enc.is_nvenc() {
            stream = stream.keep_on_device(true);
            nvenc = Some(enc);
        }
    }
    let side = sidecar_path(output);
    let mut sidecar = SidecarWriter::create(&side)?;
    // The policy goes with the output, so `audit` judges by what was applied.
    sidecar.write_header(&SidecarHeader::from_config(cfg)?)?;
    let mut summary = Summary {
        sidecar: side,
        encoder,
        ..Summary::default()
    };
    // Enough frames in flight to keep the detector busy while this thread
    // decodes and encodes; strict mode holds each until it is verified.
    let window = (cfg.batcher.max_batch * cfg.batcher.contexts).clamp(3, 16);
    let start = Instant::now();
    let mut eof = false;
    let mut write =
        |r: Released, au: Option<Encoded>, summary: &mut Summary| -> Result<(), Error> {
            let t0 = Instant::now();
            match au {
                Some(e) => writer.write_encoded(&e.au, e.width, e.height, r.pts)?,
                None => writer.write(&r.frame, r.pts)?,
            };
            let mut times = r.times;
            times.encode = t0.elapsed().as_secs_f64();
            sidecar.write(&r.record)?;
            add_times(&mut summary.stage_totals, &times);
            summary.latencies_ms.push(r.record.latency_ms);
            summary.frames += 1;
            match r.record.status {
                Status::Verified => summary.verified += 1,
                Status::Predicted => summary.predicted += 1,
                Status::FailClosed => summary.fail_closed += 1,
            }
            progress(summary.frames, info.frame_count);
            Ok(())
        };
    loop {
        while !eof && stream.in_flight() < window {
            match source.push_next(&mut stream) {
                Some(Ok(())) => {}
                Some(Err(e)) => return Err(e),
                None => {
                    eof = true;
                    stream.finish();
                }
            }
            while let Some(mut r) = stream.poll_output(Instant::now()) {
                let au = encode_on_device(&mut stream, nvenc.as_mut(), &mut r)?;
                write(r, au, &mut summary)?;
            }
        }
        while let Some(mut r) = stream.poll_output(Instant::now()) {
            let au = encode_on_device(&mut stream, nvenc.as_mut(), &mut r)?;
            write(r, au, &mut summary)?;
        }
        if eof && stream.in_flight() == 0 {
            break;
        }
        stream.wait(Duration::from_millis(20));
    }
    summary.wall = start.elapsed().as_secs_f64();
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
