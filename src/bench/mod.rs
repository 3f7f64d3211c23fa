//! `livecensor bench`: N concurrent streams through the real pipeline (the
//! shared [`DetectService`], one [`StreamPipeline`] per stream, the openh264
//! decoder and encoder), fed synthetic clips with ground truth that were
//! encoded to H.264 once before timing starts. Reports added latency, the
//! per-stage split, fps held, fail-closed and late frames, CPU and memory,
//! and audits every output frame for leaks afterwards.
//!
//! [`DetectService`]: crate::pipeline::service::DetectService
//! [`StreamPipeline`]: crate::pipeline::stream::StreamPipeline

mod cli;
mod clips;
mod machine;
pub mod plot;
pub mod report;
mod run;
mod score;
mod stream;

use crate::error::{Error, PipelineError};
use crate::synth::Scenario;
use std::path::PathBuf;

pub use cli::{bench_config, gate, main, BenchArgs};
pub use clips::{prepare_clips, Clips};
pub use machine::{cpu_seconds, peak_rss_mib};
pub use report::{find_capacity, BenchReport};
pub use run::{run, run_on, warm_up};

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
    /// Paced input admitted as `serve` admits a live track
    /// ([`crate::livekit::media::admit`], at most
    /// [`crate::livekit::media::MAX_IN_FLIGHT`] frames in the pipeline):
    /// behind real time frames are skipped and latency stays bounded,
    /// where plain paced input queues without limit.
    pub live: bool,
    /// Frames in flight per stream when unpaced (0: as `censor` does).
    pub window: usize,
    pub latency_budget_ms: f64,
    /// Run the detector on every input frame afterwards and check each
    /// output frame (masks and pixels).
    pub audit: bool,
    /// The synthetic clips' photos (`models/photos`).
    pub photos: PathBuf,
}

fn other(e: impl std::fmt::Display) -> Error {
    PipelineError::Other(e.to_string()).into()
}
